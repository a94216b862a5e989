package status

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// admittedPod is a pod with labels as the webhook leaves it when it admits
// it under the policies given.
func admittedPod(t *testing.T, ns, name string, podLabels map[string]string, policies ...*v1alpha1.MeshRolePolicy) *corev1.Pod {
	t.Helper()
	store := policy.NewStore()
	for _, p := range policies {
		store.SetMeshRolePolicy(p)
	}
	d := store.Decide(policy.Input{Namespace: ns, NamespaceLabels: labels.Set(enabled), PodLabels: labels.Set(podLabels)})
	if d.Winner == nil {
		t.Fatalf("no policy decides %s/%s", ns, name)
	}
	e := d.Effect()
	l, a, warnings := e.Apply(podLabels, nil)
	if len(warnings) > 0 {
		t.Fatal(warnings)
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l, Annotations: a}}
}

// labelledPod is a pod created before meshrole or its policy: labels only,
// and the annotations given.
func labelledPod(ns, name string, podLabels, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: podLabels, Annotations: annotations}}
}

func driftedPods(s *v1alpha1.PolicyStatus) map[string]int32 {
	out := map[string]int32{}
	for _, w := range s.Workloads {
		out[w.Name] = w.DriftedPods
	}
	return out
}

// expectGauge compares meshrole_drifted_pods with series, one
// `meshrole_drifted_pods{namespace="...",policy="..."} value` each.
func expectGauge(t *testing.T, g *driftGauge, series ...string) {
	t.Helper()
	if len(series) == 0 {
		if n := testutil.CollectAndCount(g.gauge); n != 0 {
			t.Errorf("%s has %d series, want none", DriftedPodsMetric, n)
		}
		return
	}
	want := fmt.Sprintf("# HELP %s %s\n# TYPE %s gauge\n%s\n", DriftedPodsMetric, driftedPodsHelp, DriftedPodsMetric, strings.Join(series, "\n"))
	if err := testutil.CollectAndCompare(g.gauge, strings.NewReader(want), DriftedPodsMetric); err != nil {
		t.Error(err)
	}
}

var (
	peerLabels   = map[string]string{"app": "eureka-server"}
	clientLabels = map[string]string{"app": "orders"}
	istioStatus  = map[string]string{policy.IstioSidecarStatus: `{"containers":["istio-proxy"]}`}
)

// TestDriftCountsPerEntry: each entry counts the drifted pods the policy
// decides now, found by namespace whatever their annotations; pods being
// deleted, pods the policy does not decide and pods outside its reach do not
// count. The condition names the count, the reasons and the fix.
func TestDriftCountsPerEntry(t *testing.T) {
	eureka := eurekaPolicy()
	terminating := labelledPod("shop", "eureka-server-9", peerLabels, nil)
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	terminating.Finalizers = []string{"example.com/keep"}
	f := newFixture(t,
		namespace("shop", enabled), namespace("elsewhere", enabled), namespace("unmanaged", map[string]string{"team": "shop"}),
		eureka,
		// Drifted: created before the policy (no verdict, no keys), and a
		// peer that Istio injected although it carries its verdict.
		labelledPod("shop", "eureka-server-0", peerLabels, nil),
		labelledPod("shop", "orders-0", clientLabels, nil),
		withAnnotations(admittedPod(t, "shop", "eureka-server-1", peerLabels, eureka), istioStatus),
		// As the webhook admitted them.
		admittedPod(t, "shop", "eureka-server-2", peerLabels, eureka),
		admittedPod(t, "shop", "orders-1", clientLabels, eureka),
		// Not counted.
		terminating,
		labelledPod("shop", "batch-0", map[string]string{"app": "batch"}, nil),
		labelledPod("elsewhere", "eureka-server-0", peerLabels, nil),
		labelledPod("unmanaged", "eureka-server-0", peerLabels, nil),
	)
	key := client.ObjectKey{Namespace: "shop", Name: "eureka"}
	p := reconcileOnce(t, namespacedReconciler(f), key)

	if got := driftedPods(&p.Status); got["peers"] != 2 || got["clients"] != 1 || len(got) != 2 {
		t.Errorf("driftedPods %v, want peers=2 clients=1", got)
	}
	if got := matchedPods(&p.Status); got["peers"] != 2 || got["clients"] != 1 {
		t.Errorf("matchedPods %v, want peers=2 clients=1: the pods that carry the verdict", got)
	}
	c := meta.FindStatusCondition(p.Status.Conditions, ConditionDrifted)
	want := "3 pods this policy decides carry something else than its verdict (MissingKeys 2, NoVerdict 2, SidecarOnPeer 1): " +
		"admitted before the policy or its last change, or injected by Istio; " +
		"restart them with `kubectl meshrole rollout -n shop --policy shop/eureka`, or set spec.rollout: Automatic to let meshrole do it"
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonPodsDrifted || c.Message != want || c.ObservedGeneration != 3 {
		t.Errorf("Drifted condition %+v,\nwant True, %s, %q", c, ReasonPodsDrifted, want)
	}
	expectGauge(t, f.drifted, `meshrole_drifted_pods{namespace="shop",policy="shop/eureka"} 3`)
	if n := len(f.events.Events); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	if e := <-f.events.Events; e != "Warning PodsDrifted "+want {
		t.Errorf("event %q", e)
	}

	// Automatic: the message says meshrole restarts them.
	p.Spec.Rollout = v1alpha1.RolloutAutomatic
	if err := f.client.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	p = reconcileOnce(t, namespacedReconciler(f), key)
	c = meta.FindStatusCondition(p.Status.Conditions, ConditionDrifted)
	if want := "spec.rollout is Automatic: meshrole restarts them, one pod per owner at a time (`kubectl meshrole rollout -n shop --policy shop/eureka --dry-run` shows the plan)"; c == nil || !strings.HasSuffix(c.Message, want) {
		t.Errorf("Drifted condition %+v, want a message ending %q", c, want)
	}
}

func withAnnotations(p *corev1.Pod, more map[string]string) *corev1.Pod {
	for k, v := range more {
		p.Annotations[k] = v
	}
	return p
}

// TestDriftEventOncePerEpisode: one Warning event when the count leaves
// zero, none while it stays above, a new one after it came back to zero.
func TestDriftEventOncePerEpisode(t *testing.T) {
	eureka := eurekaPolicy()
	f := newFixture(t, namespace("shop", enabled), eureka, labelledPod("shop", "eureka-server-0", peerLabels, nil))
	key := client.ObjectKey{Namespace: "shop", Name: "eureka"}
	ctx := context.Background()

	reconcileOnce(t, namespacedReconciler(f), key)
	expectGauge(t, f.drifted, `meshrole_drifted_pods{namespace="shop",policy="shop/eureka"} 1`)
	// Still drifted, one more pod: no new episode.
	if err := f.client.Create(ctx, labelledPod("shop", "orders-0", clientLabels, nil)); err != nil {
		t.Fatal(err)
	}
	p := reconcileOnce(t, namespacedReconciler(f), key)
	if got := driftedPods(&p.Status); got["peers"] != 1 || got["clients"] != 1 {
		t.Errorf("driftedPods %v, want peers=1 clients=1", got)
	}
	expectGauge(t, f.drifted, `meshrole_drifted_pods{namespace="shop",policy="shop/eureka"} 2`)
	if n := len(f.events.Events); n != 1 {
		t.Fatalf("%d events after two reconciles while drifted, want 1", n)
	}

	// Restarted: the replacements carry their verdict.
	for _, name := range []string{"eureka-server-0", "orders-0"} {
		if err := f.client.Delete(ctx, labelledPod("shop", name, nil, nil)); err != nil {
			t.Fatal(err)
		}
	}
	for _, pod := range []*corev1.Pod{admittedPod(t, "shop", "eureka-server-0", peerLabels, eureka), admittedPod(t, "shop", "orders-0", clientLabels, eureka)} {
		if err := f.client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	p = reconcileOnce(t, namespacedReconciler(f), key)
	c := meta.FindStatusCondition(p.Status.Conditions, ConditionDrifted)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonNoDrift || c.Message != "every running pod this policy decides carries its verdict" {
		t.Errorf("Drifted condition %+v, want False, %s", c, ReasonNoDrift)
	}
	if got := driftedPods(&p.Status); got["peers"] != 0 || got["clients"] != 0 {
		t.Errorf("driftedPods %v, want 0", got)
	}
	expectGauge(t, f.drifted) // drift only: no zero series
	if n := len(f.events.Events); n != 1 {
		t.Fatalf("%d events after the drift ended, want 1", n)
	}

	// A new episode.
	if err := f.client.Create(ctx, labelledPod("shop", "orders-9", clientLabels, nil)); err != nil {
		t.Fatal(err)
	}
	reconcileOnce(t, namespacedReconciler(f), key)
	reconcileOnce(t, namespacedReconciler(f), key)
	if n := len(f.events.Events); n != 2 {
		t.Fatalf("%d events after drift came back, want 2", n)
	}
}

// TestDriftOfPodsNoPolicyDecides: a pod whose verdict names a policy that
// no longer decides it counts under the policy that decides it now, and
// under policy="none" when none does; a deleted policy's series go.
func TestDriftOfPodsNoPolicyDecides(t *testing.T) {
	eureka := eurekaPolicy()
	oldVerdict := verdict("shop/old", "peers")
	f := newFixture(t, namespace("shop", enabled), eureka,
		labelledPod("shop", "eureka-server-0", peerLabels, oldVerdict),                // eureka decides it now
		labelledPod("shop", "batch-0", map[string]string{"app": "batch"}, oldVerdict), // nothing does
		admittedPod(t, "shop", "eureka-server-1", peerLabels, eureka),
	)
	ctx := context.Background()
	key := client.ObjectKey{Namespace: "shop", Name: "eureka"}
	p := reconcileOnce(t, namespacedReconciler(f), key)
	if got := driftedPods(&p.Status); got["peers"] != 1 {
		t.Errorf("driftedPods %v, want peers=1", got)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, ConditionDrifted); c == nil || !strings.Contains(c.Message, "(MissingKeys 1, StaleVerdict 1)") {
		t.Errorf("Drifted condition %+v, want MissingKeys 1, StaleVerdict 1", c)
	}
	expectGauge(t, f.drifted,
		`meshrole_drifted_pods{namespace="shop",policy="none"} 1`,
		`meshrole_drifted_pods{namespace="shop",policy="shop/eureka"} 1`)
	// A MeshRolePolicy's namespace is its own: nothing is kept per policy.
	if len(f.drifted.reached) != 0 {
		t.Errorf("the gauge keeps %v, want nothing for a MeshRolePolicy", f.drifted.reached)
	}

	// The policy deleted: its series goes, all three pods are orphans.
	if err := f.client.Delete(ctx, eureka); err != nil {
		t.Fatal(err)
	}
	if _, err := namespacedReconciler(f).Reconcile(ctx, reconcileRequest(key)); err != nil {
		t.Fatal(err)
	}
	expectGauge(t, f.drifted, `meshrole_drifted_pods{namespace="shop",policy="none"} 3`)

	// The namespace disabled: nothing of it is counted.
	ns := namespace("shop", map[string]string{"team": "shop"})
	if err := f.client.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := namespacedReconciler(f).Reconcile(ctx, reconcileRequest(client.ObjectKey{Namespace: "shop", Name: "old"})); err != nil {
		t.Fatal(err)
	}
	expectGauge(t, f.drifted)
}

// TestClusterPolicyDriftPerNamespace: a cluster policy's series are per
// namespace it reaches; one it stops reaching loses its series.
func TestClusterPolicyDriftPerNamespace(t *testing.T) {
	cp := &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "shops", Generation: 1},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}},
			PolicySpec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{
				{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{MatchLabels: peerLabels}},
			}},
		},
	}
	f := newFixture(t, cp,
		namespace("shop", enabled), namespace("shop-2", enabled),
		namespace("billing", map[string]string{policy.EnabledNamespaceLabel: "true", "team": "billing"}),
		labelledPod("shop", "a", peerLabels, nil),
		labelledPod("shop-2", "b", peerLabels, nil),
		labelledPod("shop-2", "c", peerLabels, nil),
		labelledPod("billing", "d", peerLabels, nil),
	)
	key := client.ObjectKey{Name: "shops"}
	p := reconcileOnce(t, clusterReconciler(f), key)
	if got := driftedPods(&p.Status); got["peers"] != 3 {
		t.Errorf("driftedPods %v, want peers=3 (shop and shop-2)", got)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, ConditionDrifted); c == nil || !strings.Contains(c.Message, "`kubectl meshrole rollout -A --policy cluster/shops`") {
		t.Errorf("Drifted condition %+v, want the rollout command for a cluster policy", c)
	}
	expectGauge(t, f.drifted,
		`meshrole_drifted_pods{namespace="shop",policy="cluster/shops"} 1`,
		`meshrole_drifted_pods{namespace="shop-2",policy="cluster/shops"} 2`)
	if got := f.drifted.namespacesOf(policy.Ref{Name: "shops"}); !slices.Equal(got, []string{"shop", "shop-2"}) {
		t.Errorf("the gauge keeps %v for the cluster policy, want [shop shop-2]", got)
	}

	if err := f.client.Update(context.Background(), namespace("shop-2", map[string]string{policy.EnabledNamespaceLabel: "true"})); err != nil {
		t.Fatal(err)
	}
	reconcileOnce(t, clusterReconciler(f), key)
	expectGauge(t, f.drifted, `meshrole_drifted_pods{namespace="shop",policy="cluster/shops"} 1`)
}

func reconcileRequest(key client.ObjectKey) reconcile.Request {
	return reconcile.Request{NamespacedName: key}
}

// TestPodEventsReachThePoliciesThatDecide: a pod without annotations (created
// before any policy) still enqueues the policies that may decide it: those of
// its namespace, and the cluster policies that select it, only where meshrole
// is enabled.
func TestPodEventsReachThePoliciesThatDecide(t *testing.T) {
	selecting := func(name, team string) *v1alpha1.ClusterMeshRolePolicy {
		p := &v1alpha1.ClusterMeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
		p.Spec.NamespaceSelector = metav1.LabelSelector{MatchLabels: map[string]string{"team": team}}
		p.Spec.Workloads = []v1alpha1.Workload{{Name: "w", Role: v1alpha1.RolePeerStateful}}
		return p
	}
	other := eurekaPolicy()
	other.Name = "other"
	f := newFixture(t, namespace("shop", enabled), namespace("unmanaged", map[string]string{"team": "shop"}),
		eurekaPolicy(), other, selecting("shops", "shop"), selecting("billing", "billing"))
	ctx := context.Background()
	names := func(reqs []reconcile.Request) []string {
		var out []string
		for _, r := range reqs {
			out = append(out, r.String())
		}
		return out
	}
	pod := labelledPod("shop", "eureka-server-0", peerLabels, nil)
	if got := names(policiesReachingPod(f.client, false)(ctx, pod)); strings.Join(got, " ") != "shop/eureka shop/other" {
		t.Errorf("namespaced policies %v, want shop/eureka shop/other", got)
	}
	if got := names(policiesReachingPod(f.client, true)(ctx, pod)); strings.Join(got, " ") != "/shops" {
		t.Errorf("cluster policies %v, want /shops", got)
	}
	elsewhere := labelledPod("unmanaged", "eureka-server-0", peerLabels, nil)
	for _, cluster := range []bool{false, true} {
		if got := policiesReachingPod(f.client, cluster)(ctx, elsewhere); len(got) != 0 {
			t.Errorf("a pod where meshrole is not enabled enqueued %v", got)
		}
	}

	// A pod update that changes nothing the cache keeps enqueues nothing.
	changed := pod.DeepCopy()
	changed.ResourceVersion = "2"
	if !sameMetadata(pod, changed) {
		t.Error("a new resourceVersion alone is a change")
	}
	changed.Annotations = istioStatus
	if sameMetadata(pod, changed) {
		t.Error("Istio's status annotation added is no change")
	}
}
