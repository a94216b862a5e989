package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// finding mirrors kubectl-meshrole audit's JSON output.
type finding struct {
	Check   string `json:"check"`
	Object  string `json:"object"`
	Message string `json:"message"`
}

// runAudit runs the kubectl plugin's `audit -o json` against the suite's
// API server.
func runAudit(t *testing.T, args ...string) ([]finding, int) {
	t.Helper()
	r := kubectlMeshrole(t, append([]string{"audit", "--kubeconfig", h.Kubeconfig, "-o", "json"}, args...)...)
	var findings []finding
	if err := json.Unmarshal([]byte(r.stdout), &findings); err != nil {
		t.Fatalf("audit output is not JSON (exit %d): %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	return findings, r.code
}

// testAudit builds, in a live cluster, each trap audit looks for: a
// StatefulSet behind a headless Service whose pod runs istio-proxy, pods
// admitted before the policy that now matches them, a BypassPorts peer whose
// client does not exclude its ports, and an Istio injector ordered first.
func testAudit(t *testing.T) {
	ctx := scenario(t, 90*time.Second)
	const ns = "e2e-audit"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, `
apiVersion: v1
kind: Service
metadata: {name: zk}
spec:
  clusterIP: None
  selector: {app: zk}
  ports: [{port: 2181}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: zk}
spec:
  serviceName: zk
  replicas: 0
  selector: {matchLabels: {app: zk}}
  template:
    metadata: {labels: {app: zk}}
    spec:
      containers: [{name: zk, image: zookeeper:3.9}]
`)
	// Pods as Istio would have left them before meshrole had a policy here.
	// They name the Service as their controller, so that the StatefulSet
	// controller does not adopt zk-0 and scale it away.
	var svc corev1.Service
	if err := h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "zk"}, &svc); err != nil {
		t.Fatal(err)
	}
	withProxy := func(name string, labels map[string]string) {
		p := newPod(ns, name, labels, nil)
		controller := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: &controller}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "istio/proxyv2"})
		if err := h.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	withProxy("zk-0", map[string]string{"app": "zk"})
	withProxy("web-0", map[string]string{"app": "web"})

	findings, code := runAudit(t)
	want := []string{"peer-with-sidecar StatefulSet/e2e-audit/zk"}
	assertFindings(t, findings, code, want)

	applyYAML(t, ctx, ns, `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata: {name: zk}
spec:
  workloads:
  - name: quorum
    selector: {matchLabels: {app: zk}}
    role: peer-stateful
    peer: {proxy: BypassPorts, ports: [2888, 3888]}
  - name: web
    selector: {matchLabels: {app: web}}
    role: client-stateless
`)
	// An Istio injector's configuration, with no webhooks so that it calls
	// nothing: the check looks at its name only.
	injector := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: istioInjectorConfig}}
	if err := h.Client.Create(ctx, injector); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Client.Delete(context.Background(), injector); err != nil {
			t.Errorf("deleting %s: %v", istioInjectorConfig, err)
		}
	})

	want = append(want,
		"needs-restart Pod/e2e-audit/zk-0",
		"needs-restart Pod/e2e-audit/web-0",
		"bypass-not-excluded-by-clients Pod/e2e-audit/web-0")
	// meshrole's default name sorts before istio-*: no ordering finding.
	findings, code = runAudit(t)
	assertFindings(t, findings, code, want)
	// Named after istio-*, Istio's injector decides first.
	findings, code = runAudit(t, "--webhook-configuration-name", "zz-meshrole-after-istio")
	assertFindings(t, findings, code, append(want, "istio-injector-first MutatingWebhookConfiguration/"+istioInjectorConfig))
	for _, f := range findings {
		if f.Check == "istio-injector-first" && !strings.Contains(f.Message, "sorts before zz-meshrole-after-istio") {
			t.Errorf("ordering finding does not name meshrole's configuration: %s", f.Message)
		}
	}
	for _, f := range findings {
		if f.Check == "bypass-not-excluded-by-clients" && !strings.Contains(f.Message, "2888,3888") {
			t.Errorf("bypass finding does not name the ports: %s", f.Message)
		}
	}
}

// istioInjectorConfig is the Istio injector configuration testAudit creates.
const istioInjectorConfig = "istio-sidecar-injector-e2e-audit"

// assertFindings checks the findings in namespace e2e-audit and about the
// test's Istio injector configuration, by check and object.
func assertFindings(t *testing.T, findings []finding, code int, want []string) {
	t.Helper()
	var got []string
	for _, f := range findings {
		if strings.Contains(f.Object, "/e2e-audit/") || f.Object == "MutatingWebhookConfiguration/"+istioInjectorConfig {
			got = append(got, f.Check+" "+f.Object)
		}
		t.Logf("finding: %s %s: %s", f.Check, f.Object, f.Message)
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("findings in e2e-audit\n got %q\nwant %q", got, want)
	}
	if code != 1 {
		t.Errorf("exit code %d, want 1 with findings", code)
	}
}

// testInvalidSelectorStatus: a selector the schema cannot check is accepted,
// matches nothing, and the policy says so in its Ready condition.
func testInvalidSelectorStatus(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-invalid-selector"
	createNamespace(t, ctx, ns, true, nil)
	// Created directly: applyYAML waits until a policy is in force, and this
	// one never matches anything.
	typo := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "typo"},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "peers", Role: v1alpha1.RolePeerStateful,
			Selector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: "Equals", Values: []string{"eureka-server"}},
			}},
		}}},
	}
	if err := h.Client.Create(ctx, typo); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var p v1alpha1.MeshRolePolicy
		if err := h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "typo"}, &p); err != nil {
			t.Fatal(err)
		}
		ready := meta.FindStatusCondition(p.Status.Conditions, "Ready")
		if ready != nil && ready.Status == "False" && ready.Reason == "InvalidSelector" && strings.Contains(ready.Message, "Equals") {
			t.Logf("Ready=False: %s", ready.Message)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status conditions %+v: want Ready=False reason InvalidSelector naming the operator", p.Status.Conditions)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pod := newPod(ns, "eureka-server-0", map[string]string{"app": "eureka-server"}, nil)
	if err := h.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := meshKeys(pod.Annotations); len(got) != 0 {
		t.Errorf("a policy with an invalid selector changed the pod: %v", got)
	}
}
