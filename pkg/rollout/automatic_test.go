package rollout_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/rollout"
)

// eurekaPolicy is the policy the fixture's webhook decides with, as the API
// server holds it, with the given rollout.
func eurekaPolicy(t *testing.T, mode v1alpha1.Rollout) *v1alpha1.MeshRolePolicy {
	t.Helper()
	docs, err := policy.ReadDocuments(strings.NewReader(policies))
	if err != nil || len(docs) != 1 {
		t.Fatalf("reading the fixture's policy: %d documents, %v", len(docs), err)
	}
	p := &v1alpha1.MeshRolePolicy{}
	if err := json.Unmarshal(docs[0].Raw, p); err != nil {
		t.Fatal(err)
	}
	p.Spec.Rollout = mode
	p.Generation = 1
	return p
}

// automatic is the Automatic mode on the fixture's cluster, reading
// policies from the same fake API server.
func (c *cluster) automatic() (*rollout.Automatic, *events.FakeRecorder) {
	rec := events.NewFakeRecorder(20)
	return &rollout.Automatic{
		Policies: c.client, Client: c.client, Recorder: rec,
		Runner:  rollout.Runner{Timeout: 2 * time.Second, PollInterval: time.Millisecond, RetryInterval: time.Millisecond},
		Backoff: time.Minute,
	}, rec
}

func eurekaRequest() reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "eureka"}}
}

// recorded drains the events recorded so far.
func recorded(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestAutomaticConvergesTheDriftedPodsOfItsPolicy(t *testing.T) {
	c := newCluster(t, append(scene(), eurekaPolicy(t, v1alpha1.RolloutAutomatic))...)
	c.refusals["eureka-server-1"] = 2
	a, rec := c.automatic()
	ctx := context.Background()

	result, err := a.Reconcile(ctx, eurekaRequest())
	if err != nil || result != (reconcile.Result{}) {
		t.Fatalf("reconcile: %+v, %v", result, err)
	}
	if got, want := strings.Join(c.evicted, " "), "orders-5d8f-a orders-5d8f-b eureka-server-2 eureka-server-1 eureka-server-0"; got != want {
		t.Fatalf("evicted %q, want %q: the CLI's order, never the bare pod or the Job's", got, want)
	}
	if len(c.violations) > 0 {
		t.Fatalf("more than one pod of an owner down at once:\n%s", strings.Join(c.violations, "\n"))
	}
	got := recorded(rec)
	if len(got) != 2 ||
		got[0] != "Normal RolloutStarted restarting 5 drifted pods (shop/Deployment orders: 2, shop/StatefulSet eureka-server: 3), one pod per owner at a time, through the Eviction API" ||
		!strings.HasPrefix(got[1], "Normal RolloutFinished 5 pods restarted, 0 no longer needed it, in ") {
		t.Fatalf("events:\n%s", strings.Join(got, "\n"))
	}

	// Converged: the next look evicts nothing and says nothing.
	if _, err := a.Reconcile(ctx, eurekaRequest()); err != nil {
		t.Fatal(err)
	}
	if len(c.evicted) != 5 || len(recorded(rec)) != 0 {
		t.Fatalf("a converged policy's reconcile evicted %v", c.evicted)
	}
}

func TestAutomaticLeavesManualPoliciesAndOtherVerdictsAlone(t *testing.T) {
	for _, mode := range []v1alpha1.Rollout{v1alpha1.RolloutManual, ""} {
		c := newCluster(t, append(scene(), eurekaPolicy(t, mode))...)
		a, rec := c.automatic()
		if result, err := a.Reconcile(context.Background(), eurekaRequest()); err != nil || result != (reconcile.Result{}) {
			t.Fatalf("rollout %q: %+v, %v", mode, result, err)
		}
		if len(c.evicted) != 0 || len(recorded(rec)) != 0 {
			t.Fatalf("rollout %q: evicted %v", mode, c.evicted)
		}
	}

	// An Automatic policy restarts only what it decides now: a pod that
	// records it but is decided by the Manual eureka policy is not its own.
	legacy := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "legacy", Generation: 1},
		Spec: v1alpha1.PolicySpec{Rollout: v1alpha1.RolloutAutomatic, Workloads: []v1alpha1.Workload{
			{Name: "old", Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "retired"}}, Role: v1alpha1.RoleClientStateless},
		}},
	}
	recordsLegacy := pod("orders-5d8f-c", "orders", controllerRef("ReplicaSet", "orders-5d8f"))
	recordsLegacy.Annotations = map[string]string{policy.PolicyAnnotation: "shop/legacy", policy.WorkloadAnnotation: "old"}
	c := newCluster(t, append(scene(), eurekaPolicy(t, v1alpha1.RolloutManual), legacy, recordsLegacy)...)
	a, rec := c.automatic()
	if _, err := a.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "legacy"}}); err != nil {
		t.Fatal(err)
	}
	if len(c.evicted) != 0 || len(recorded(rec)) != 0 {
		t.Fatalf("the Automatic policy shop/legacy evicted %v, pods the Manual shop/eureka decides", c.evicted)
	}
	// The CLI's --policy scope does take it: the pod records that policy.
	ref := &policy.Ref{Namespace: "shop", Name: "legacy"}
	named, err := rollout.Find(context.Background(), c.client, c.store, rollout.Scope{Namespace: "shop", Policy: ref})
	if err != nil || len(named) != 1 || named[0].Name != "orders-5d8f-c" {
		t.Fatalf("the CLI's scope of shop/legacy: %+v (%v), want orders-5d8f-c", named, err)
	}
}

func TestAutomaticStopsSaysWhyAndBacksOff(t *testing.T) {
	c := newCluster(t, append(scene(), eurekaPolicy(t, v1alpha1.RolloutAutomatic))...)
	c.neverReady = true
	a, rec := c.automatic()
	a.Runner.Timeout, a.Backoff, a.MaxBackoff = 100*time.Millisecond, 300*time.Millisecond, 500*time.Millisecond
	ctx := context.Background()

	result, err := a.Reconcile(ctx, eurekaRequest())
	if err != nil || result.RequeueAfter != 300*time.Millisecond {
		t.Fatalf("first stop: %+v, %v; want a requeue after the backoff", result, err)
	}
	if got := strings.Join(c.evicted, " "); got != "orders-5d8f-a" {
		t.Fatalf("evicted %q, want only the first pod", got)
	}
	got := recorded(rec)
	if len(got) != 2 || !strings.HasPrefix(got[0], "Normal RolloutStarted") || got[1] != "Warning RolloutStopped stopped after 0 pods restarted: "+
		"pod shop/orders-5d8f-a (Deployment orders): gave up after 100ms waiting for replacement orders-5d8f-r1 to be Ready (phase Running, Ready False: ContainersNotReady); "+
		"stopping so that no more of its pods go down; no pod of this policy is evicted for 300ms or until the policy changes (kubectl meshrole rollout --policy shop/eureka retries at once)" {
		t.Fatalf("events:\n%s", strings.Join(got, "\n"))
	}

	// Backing off: pod events keep coming, nothing is evicted.
	for range 3 {
		result, err := a.Reconcile(ctx, eurekaRequest())
		if err != nil || result.RequeueAfter <= 0 || result.RequeueAfter > 300*time.Millisecond {
			t.Fatalf("while backing off: %+v, %v", result, err)
		}
	}
	if len(c.evicted) != 1 || len(recorded(rec)) != 0 {
		t.Fatalf("while backing off: evicted %v", c.evicted)
	}

	// After the backoff it tries again, but the Deployment's replacement is
	// still not Ready: no second pod of it goes down. The wait doubles.
	time.Sleep(300 * time.Millisecond)
	result, err = a.Reconcile(ctx, eurekaRequest())
	if err != nil || result.RequeueAfter != 500*time.Millisecond {
		t.Fatalf("second stop: %+v, %v; want the doubled backoff, capped at 500ms", result, err)
	}
	if len(c.evicted) != 1 {
		t.Fatalf("after the backoff: evicted %v; want nothing more while orders-5d8f-r1 is not Ready", c.evicted)
	}
	got = recorded(rec)
	if len(got) != 2 || !strings.Contains(got[1], "gave up after 100ms waiting for Deployment orders's pod orders-5d8f-r1 to be Ready before evicting another") {
		t.Fatalf("events:\n%s", strings.Join(got, "\n"))
	}

	// A new generation ends the backoff at once: what stopped may be fixed.
	c.neverReady = false
	var fixed corev1.Pod
	if err := c.base.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "orders-5d8f-r1"}, &fixed); err != nil {
		t.Fatal(err)
	}
	fixed.Status.Conditions = readyStatus.Conditions
	if err := c.base.Status().Update(ctx, &fixed); err != nil {
		t.Fatal(err)
	}
	var p v1alpha1.MeshRolePolicy
	if err := c.base.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "eureka"}, &p); err != nil {
		t.Fatal(err)
	}
	p.Generation++
	if err := c.base.Update(ctx, &p); err != nil {
		t.Fatal(err)
	}
	result, err = a.Reconcile(ctx, eurekaRequest())
	if err != nil || result != (reconcile.Result{}) {
		t.Fatalf("after the policy changed: %+v, %v", result, err)
	}
	if got := strings.Join(c.evicted, " "); got != "orders-5d8f-a orders-5d8f-b eureka-server-2 eureka-server-1 eureka-server-0" {
		t.Fatalf("evicted %q after the policy changed", got)
	}
}

func TestAutomaticStopsAtADriftedReplacement(t *testing.T) {
	c := newCluster(t, append(scene(), eurekaPolicy(t, v1alpha1.RolloutAutomatic))...)
	c.webhookDown = true
	a, rec := c.automatic()
	result, err := a.Reconcile(context.Background(), eurekaRequest())
	if err != nil || result.RequeueAfter != time.Minute {
		t.Fatalf("%+v, %v", result, err)
	}
	got := recorded(rec)
	if len(got) != 2 || !strings.Contains(got[1], "replacement orders-5d8f-r1 came back drifted: NoVerdict") ||
		!strings.Contains(got[1], "no pod of this policy is evicted for 1m0s") {
		t.Fatalf("events:\n%s", strings.Join(got, "\n"))
	}
	if len(c.evicted) != 1 {
		t.Fatalf("evicted %v", c.evicted)
	}
}

func TestAutomaticStopsWhenItsContextEnds(t *testing.T) {
	c := newCluster(t, append(scene(), eurekaPolicy(t, v1alpha1.RolloutAutomatic))...)
	c.neverReady = true
	a, rec := c.automatic()
	a.Runner.Timeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	result, err := a.Reconcile(ctx, eurekaRequest())
	if err != nil || result != (reconcile.Result{}) || time.Since(start) > 10*time.Second {
		t.Fatalf("cancelled: %+v, %v after %v", result, err, time.Since(start))
	}
	// Shutting down is no stop: no warning, no backoff.
	if got := recorded(rec); len(got) != 1 || !strings.HasPrefix(got[0], "Normal RolloutStarted") {
		t.Fatalf("events:\n%s", strings.Join(got, "\n"))
	}
}
