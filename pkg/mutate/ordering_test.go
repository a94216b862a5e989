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
