package mutate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrole/meshrole/pkg/mutate"
)

func TestOrderingCheckReportsIstioFirst(t *testing.T) {
	configs := []admissionregistrationv1.MutatingWebhookConfiguration{
		{ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "zz-meshrole"}},
	}
	reader := fake.NewClientBuilder().WithObjects(&configs[0], &configs[1]).Build()
	recorder := events.NewFakeRecorder(10)
	registry := prometheus.NewRegistry()
	check := mutate.NewOrderingCheck(reader, recorder, "zz-meshrole", registry)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- check.Start(ctx) }()
	select {
	case event := <-recorder.Events:
		if !strings.Contains(event, "IstioInjectorFirst") || !strings.Contains(event, "istio-sidecar-injector sorts before zz-meshrole") {
			t.Errorf("event %q", event)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := `
# HELP meshrole_istio_injectors_before_meshrole Istio sidecar injector webhook configurations whose names sort before meshrole's, so the API server calls them first. Should be 0.
# TYPE meshrole_istio_injectors_before_meshrole gauge
meshrole_istio_injectors_before_meshrole 1
`
	if err := testutil.GatherAndCompare(registry, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestIstioInjectorsBefore(t *testing.T) {
	config := func(name string, webhooks ...string) admissionregistrationv1.MutatingWebhookConfiguration {
		c := admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, w := range webhooks {
			c.Webhooks = append(c.Webhooks, admissionregistrationv1.MutatingWebhook{Name: w})
		}
		return c
	}
	configs := []admissionregistrationv1.MutatingWebhookConfiguration{
		config("istio-sidecar-injector", "rev.namespace.sidecar-injector.istio.io"),
		config("istio-revision-tag-default", "rev.object.sidecar-injector.istio.io"),
		config("istio-sidecar-injector-canary"),
		config("aaa-custom-injector", "namespace.sidecar-injector.istio.io"),
		config("cert-manager-webhook", "webhook.cert-manager.io"),
		config("00-meshrole", "pods.meshrole.io"),
	}
	if got := mutate.IstioInjectorsBefore("00-meshrole", configs); len(got) != 0 {
		t.Errorf("00-meshrole: %v, want none", got)
	}
	got := mutate.IstioInjectorsBefore("zz-meshrole", configs)
	want := []string{"aaa-custom-injector", "istio-revision-tag-default", "istio-sidecar-injector", "istio-sidecar-injector-canary"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("zz-meshrole: %v, want %v", got, want)
	}
	if got := mutate.IstioInjectorsBefore("istio-sidecar-injector-b", configs); strings.Join(got, ",") != "aaa-custom-injector,istio-revision-tag-default,istio-sidecar-injector" {
		t.Errorf("istio-sidecar-injector-b: %v", got)
	}
}

// TestHandleDecodesTheObject covers controller-runtime's handler contract,
// which kubectl-meshrole explain uses: the pod comes as raw JSON.
