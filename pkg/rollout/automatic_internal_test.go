package rollout

import (
	"context"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// TestAutomaticTriggers: what a pod, namespace or policy event enqueues.
func TestAutomaticTriggers(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	spec := func(mode v1alpha1.Rollout) v1alpha1.PolicySpec {
		return v1alpha1.PolicySpec{Rollout: mode, Workloads: []v1alpha1.Workload{
			{Name: "w", Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}, Role: v1alpha1.RolePeerStateful},
		}}
	}
	namespaced := func(ns, name string, mode v1alpha1.Rollout) *v1alpha1.MeshRolePolicy {
		return &v1alpha1.MeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec(mode)}
	}
	cluster := func(name string, mode v1alpha1.Rollout, team string) *v1alpha1.ClusterMeshRolePolicy {
		return &v1alpha1.ClusterMeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterMeshRolePolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": team}}, PolicySpec: spec(mode)}}
	}
	enabled := func(name, team string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{policy.EnabledNamespaceLabel: "true", "team": team}}}
	}
	policies := []client.Object{
		namespaced("shop", "eureka", v1alpha1.RolloutAutomatic),
		namespaced("shop", "manual", v1alpha1.RolloutManual),
		namespaced("shop", "unset", ""),
		namespaced("billing", "ledger", v1alpha1.RolloutAutomatic),
		cluster("team-a", v1alpha1.RolloutAutomatic, "a"),
		cluster("team-b", v1alpha1.RolloutAutomatic, "b"),
		cluster("team-a-manual", v1alpha1.RolloutManual, "a"),
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(enabled("shop", "a"), enabled("billing", "b")).Build()
	a := &Automatic{Policies: c}
	ctx := context.Background()
	names := func(reqs []reconcile.Request) []string {
		var out []string
		for _, r := range reqs {
			out = append(out, policy.Ref{Namespace: r.Namespace, Name: r.Name}.String())
		}
		slices.Sort(out)
		return out
	}

	pod := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "eureka-0"}}
	if got := a.podPolicies(ctx, pod, false); len(got) != 0 {
		t.Errorf("before any policy event, a pod created in shop enqueues %v, want none", names(got))
	}
	// The informers' initial list: a create event for each policy.
	for _, p := range policies {
		a.everyAutomaticPolicy(ctx, p, false)
	}
	if got, want := names(a.podPolicies(ctx, pod, false)), []string{"cluster/team-a", "shop/eureka"}; !slices.Equal(got, want) {
		t.Errorf("a pod created in shop enqueues %v, want %v", got, want)
	}
	ns := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "billing"}}
	if got, want := names(a.namespacePolicies(ctx, ns, false)), []string{"billing/ledger", "cluster/team-b"}; !slices.Equal(got, want) {
		t.Errorf("namespace billing's labels changing enqueues %v, want %v", got, want)
	}
	// A policy change enqueues the policy itself (to forget its stops) and
	// every Automatic policy: any change can change what they decide.
	changed := namespaced("shop", "manual", v1alpha1.RolloutManual)
	if got, want := names(a.everyAutomaticPolicy(ctx, changed, false)),
		[]string{"billing/ledger", "cluster/team-a", "cluster/team-b", "shop/eureka", "shop/manual"}; !slices.Equal(got, want) {
		t.Errorf("a policy change enqueues %v, want %v", got, want)
	}
	if got := a.everyAutomaticPolicy(ctx, namespaced("shop", "eureka", v1alpha1.RolloutAutomatic), false); len(got) != 4 {
		t.Errorf("an Automatic policy's change enqueues %v: itself once, and the 3 others", names(got))
	}
	// Switched to Manual, then deleted: forgotten, itself enqueued once more.
	if got, want := names(a.everyAutomaticPolicy(ctx, cluster("team-a", v1alpha1.RolloutManual, "a"), false)),
		[]string{"billing/ledger", "cluster/team-a", "cluster/team-b", "shop/eureka"}; !slices.Equal(got, want) {
		t.Errorf("team-a switched to Manual enqueues %v, want %v", got, want)
	}
	if got, want := names(a.podPolicies(ctx, pod, false)), []string{"shop/eureka"}; !slices.Equal(got, want) {
		t.Errorf("after team-a went Manual, a pod created in shop enqueues %v, want %v", got, want)
	}
	if got, want := names(a.everyAutomaticPolicy(ctx, namespaced("shop", "eureka", v1alpha1.RolloutAutomatic), true)),
		[]string{"billing/ledger", "cluster/team-b", "shop/eureka"}; !slices.Equal(got, want) {
		t.Errorf("shop/eureka deleted enqueues %v, want %v", got, want)
	}
	if got := a.podPolicies(ctx, pod, false); len(got) != 0 {
		t.Errorf("with no Automatic policy reaching shop, a pod created there enqueues %v", names(got))
	}
}

func TestEventNoteFitsTheAPIServersLimit(t *testing.T) {
	long := strings.Repeat("é", 600) // 1200 bytes
	got := eventNote(long)
	if len(got) > 1024 || !strings.HasSuffix(got, "...") || !utf8.ValidString(got) {
		t.Fatalf("note of %d bytes, valid UTF-8 %v, ends %q", len(got), utf8.ValidString(got), got[len(got)-5:])
	}
	if short := "stopped after 0 pods restarted"; eventNote(short) != short {
		t.Fatalf("a short note changed: %q", eventNote(short))
	}
}
