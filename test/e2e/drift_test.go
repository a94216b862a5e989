package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// TestDriftStatus: pods created in an enabled namespace before their policy
// are reported drifted once it is applied, per workload entry, in a Drifted
// condition, one Warning event and meshrole_drifted_pods; recreated, they
// carry their verdict and the drift is gone. Pods need not run: drift is
// read from metadata.
func TestDriftStatus(t *testing.T) {
	ctx := scenario(t, 2*time.Minute)
	const ns = "e2e-drift"
	createNamespace(t, ctx, ns, true, nil)
	pods := []struct {
		name string
		app  string
	}{{"eureka-server-0", "eureka-server"}, {"eureka-server-1", "eureka-server"}, {"orders-0", "orders"}}
	createPods := func() {
		t.Helper()
		for _, p := range pods {
			if err := h.Client.Create(ctx, newPod(ns, p.name, map[string]string{"app": p.app}, nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	createPods()
	var before corev1.Pod
	if err := h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "eureka-server-0"}, &before); err != nil {
		t.Fatal(err)
	}
	if got := meshKeys(before.Annotations); len(got) != 0 {
		t.Fatalf("a pod created before any policy carries %v", got)
	}

	mrp := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "eureka"},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{
			{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka-server"}}},
			{Name: "clients", Role: v1alpha1.RoleClientStateless, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "orders"}}},
		}},
	}
	if err := h.Client.Create(ctx, mrp); err != nil {
		t.Fatal(err)
	}
	series := fmt.Sprintf(`meshrole_drifted_pods{namespace=%q,policy=%q}`, ns, ns+"/eureka")

	waitForStatus(t, ctx, mrp, func() *v1alpha1.PolicyStatus { return &mrp.Status }, func(s *v1alpha1.PolicyStatus) bool {
		return drifted(s, "peers") == 2 && drifted(s, "clients") == 1 && meta.IsStatusConditionTrue(s.Conditions, "Drifted")
	}, "driftedPods peers=2 clients=1, Drifted=True")
	c := meta.FindStatusCondition(mrp.Status.Conditions, "Drifted")
	for _, want := range []string{"3 pods", "NoVerdict 3", "kubectl meshrole rollout -n " + ns + " --policy " + ns + "/eureka"} {
		if c.Reason != "PodsDrifted" || !strings.Contains(c.Message, want) {
			t.Errorf("Drifted condition %s %q: want reason PodsDrifted and %q in the message", c.Reason, c.Message, want)
		}
	}
	if got := scrapeCounter(t, ctx, series); got != 3 {
		t.Errorf("%s = %v, want 3", series, got)
	}
	event := waitForDriftEvents(t, ctx, ns, mrp.Name, 1)
	if !strings.Contains(event.Message, "3 pods") {
		t.Errorf("event message %q, want it to name 3 pods", event.Message)
	}
	// Status is rewritten as the pods' events settle; the episode goes on,
	// so no second event.
	time.Sleep(3 * time.Second)
	waitForDriftEvents(t, ctx, ns, mrp.Name, 1)
	if t.Failed() {
		return
	}

	// Restarted: deleted and created again, the webhook gives each its verdict.
	if _, err := h.WaitForVerdict(ctx, ns, map[string]string{"app": "orders"}, 15*time.Second, func(p *corev1.Pod) bool {
		return p.Annotations[workloadKey] == "clients"
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name}}
		if err := h.Client.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		waitGone(t, ctx, pod)
	}
	createPods()
	waitForStatus(t, ctx, mrp, func() *v1alpha1.PolicyStatus { return &mrp.Status }, func(s *v1alpha1.PolicyStatus) bool {
		return drifted(s, "peers") == 0 && drifted(s, "clients") == 0 && matched(s, "peers") == 2 && matched(s, "clients") == 1 &&
			meta.IsStatusConditionFalse(s.Conditions, "Drifted")
	}, "driftedPods 0, matchedPods peers=2 clients=1, Drifted=False")
	if c := meta.FindStatusCondition(mrp.Status.Conditions, "Drifted"); c.Reason != "NoDrift" {
		t.Errorf("Drifted condition reason %s, want NoDrift", c.Reason)
	}
	if got := scrapeCounter(t, ctx, series); got != 0 {
		t.Errorf("%s = %v, want 0", series, got)
	}
	waitForDriftEvents(t, ctx, ns, mrp.Name, 1)
}

func drifted(s *v1alpha1.PolicyStatus, workload string) int32 {
	for _, w := range s.Workloads {
		if w.Name == workload {
			return w.DriftedPods
		}
	}
	return -1
}

// waitForDriftEvents waits up to 10s for exactly n PodsDrifted Warning
// events on the policy, and returns the last.
func waitForDriftEvents(t *testing.T, ctx context.Context, ns, policyName string, n int) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var events corev1.EventList
		if err := h.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var found []corev1.Event
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == "PodsDrifted" && e.InvolvedObject.Name == policyName {
				found = append(found, e)
			}
		}
		if len(found) > n {
			t.Fatalf("%d PodsDrifted events on %s/%s, want %d: %+v", len(found), ns, policyName, n, found)
		}
		if len(found) == n {
			return found[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d PodsDrifted events on %s/%s within 10s, want %d", len(found), ns, policyName, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitGone waits up to 30s until the API server no longer has obj.
func waitGone(t *testing.T, ctx context.Context, obj client.Object) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := h.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after 30s (%v)", client.ObjectKeyFromObject(obj), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
