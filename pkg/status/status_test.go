package status

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// fixture is a fake API server with the pod indexes the status controllers
// register, counting status writes.
type fixture struct {
	client       client.Client
	events       *events.FakeRecorder
	drifted      *driftGauge
	statusWrites int
	// statusError, when set, is what every status write returns.
	statusError error
}

func newFixture(t *testing.T, objs ...client.Object) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	drifted, err := newDriftGauge(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{events: events.NewFakeRecorder(10), drifted: drifted}
	f.client = fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.MeshRolePolicy{}, &v1alpha1.ClusterMeshRolePolicy{}).
		WithIndex(podMetadata(), entryIndex, indexEntry).
		WithIndex(podMetadata(), conflictIndex, indexConflictParties).
		WithIndex(podMetadata(), verdictIndex, indexVerdict).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				f.statusWrites++
				if f.statusError != nil {
					return f.statusError
				}
				return c.SubResource(sub).Update(ctx, obj, opts...)
			},
		}).Build()
	return f
}

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

var enabled = map[string]string{policy.EnabledNamespaceLabel: "true", "team": "shop"}

func pod(ns, name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations}}
}

func verdict(ref, workload string, more ...string) map[string]string {
	a := map[string]string{policy.PolicyAnnotation: ref, policy.WorkloadAnnotation: workload, policy.RoleAnnotation: "peer-stateful"}
	for i := 0; i+1 < len(more); i += 2 {
		a[more[i]] = more[i+1]
	}
	return a
}

func eurekaPolicy() *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "eureka", Generation: 3},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{
			{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka-server"}}},
			{Name: "clients", Role: v1alpha1.RoleClientStateless, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "orders"}}},
		}},
	}
}

func namespacedReconciler(f *fixture) *Reconciler[*v1alpha1.MeshRolePolicy] {
	return &Reconciler[*v1alpha1.MeshRolePolicy]{
		Client: f.client, Recorder: f.events,
		newPolicy:         func() *v1alpha1.MeshRolePolicy { return &v1alpha1.MeshRolePolicy{} },
		namespaceSelector: func(*v1alpha1.MeshRolePolicy) *metav1.LabelSelector { return nil },
		drifted:           f.drifted,
	}
}

func clusterReconciler(f *fixture) *Reconciler[*v1alpha1.ClusterMeshRolePolicy] {
	return &Reconciler[*v1alpha1.ClusterMeshRolePolicy]{
		Client: f.client, Recorder: f.events,
		newPolicy: func() *v1alpha1.ClusterMeshRolePolicy { return &v1alpha1.ClusterMeshRolePolicy{} },
		namespaceSelector: func(p *v1alpha1.ClusterMeshRolePolicy) *metav1.LabelSelector {
			return &p.Spec.NamespaceSelector
		},
		drifted: f.drifted,
	}
}

func reconcileOnce[T policyObject](t *testing.T, r *Reconciler[T], key client.ObjectKey) T {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	p := r.newPolicy()
	if err := r.Client.Get(context.Background(), key, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func matchedPods(s *v1alpha1.PolicyStatus) map[string]int32 {
	out := map[string]int32{}
	for _, w := range s.Workloads {
		out[w.Name] = w.MatchedPods
	}
	return out
}

// TestStatusCountsOnlyPodsThePolicyCanReach: pods elsewhere that carry a
// policy's annotations (copied manifests, a namespace meshrole never sees)
// do not count for it, raise no conflict and no event.
func TestStatusCountsOnlyPodsThePolicyCanReach(t *testing.T) {
	forgedConflict := verdict("shop/eureka", "peers", policy.ConflictAnnotation, "shop/other/x=client-stateless")
	f := newFixture(t,
		namespace("shop", enabled), namespace("elsewhere", enabled), namespace("unmanaged", map[string]string{"team": "shop"}),
		eurekaPolicy(),
		pod("shop", "eureka-server-0", verdict("shop/eureka", "peers")),
		pod("shop", "eureka-server-1", verdict("shop/eureka", "peers")),
		pod("shop", "orders-1", verdict("shop/eureka", "clients")),
		pod("elsewhere", "copied-0", verdict("shop/eureka", "peers")),
		pod("unmanaged", "copied-1", forgedConflict),
		pod("unmanaged", "copied-2", verdict("shop/other", "x", policy.ConflictAnnotation, "shop/eureka/peers=peer-stateful")),
	)
	p := reconcileOnce(t, namespacedReconciler(f), client.ObjectKey{Namespace: "shop", Name: "eureka"})

	if got := matchedPods(&p.Status); got["peers"] != 2 || got["clients"] != 1 || len(got) != 2 {
		t.Errorf("matchedPods %v, want peers=2 clients=1", got)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, ConditionConflict); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Conflict condition %+v, want False: the conflicting pods are where the policy cannot reach", c)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, ConditionReady); c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 3 {
		t.Errorf("Ready condition %+v", c)
	}
	if len(f.events.Events) != 0 {
		t.Errorf("event raised: %s", <-f.events.Events)
	}
	if f.statusWrites != 1 {
		t.Errorf("%d status writes, want 1", f.statusWrites)
	}

	// Nothing changed: nothing is written.
	reconcileOnce(t, namespacedReconciler(f), client.ObjectKey{Namespace: "shop", Name: "eureka"})
	if f.statusWrites != 1 {
		t.Errorf("%d status writes after a reconcile that changed nothing, want 1", f.statusWrites)
	}
}

// TestConflictInReachIsReportedOnce: a real conflict turns the condition True
// and raises one Warning event, not one per reconcile.
func TestConflictInReachIsReportedOnce(t *testing.T) {
	f := newFixture(t,
		namespace("shop", enabled), eurekaPolicy(),
		pod("shop", "eureka-server-0", verdict("shop/eureka", "peers", policy.ConflictAnnotation, "cluster/clients/all=client-stateless")),
	)
	key := client.ObjectKey{Namespace: "shop", Name: "eureka"}
	p := reconcileOnce(t, namespacedReconciler(f), key)
	c := meta.FindStatusCondition(p.Status.Conditions, ConditionConflict)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonConflicting {
		t.Fatalf("Conflict condition %+v, want True", c)
	}
	if want := "pods are also matched by cluster/clients, which would write other keys"; len(c.Message) < len(want) || c.Message[:len(want)] != want {
		t.Errorf("Conflict message %q", c.Message)
	}
	reconcileOnce(t, namespacedReconciler(f), key)
	if n := len(f.events.Events); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	if e := <-f.events.Events; e != "Warning ConflictingRoles "+c.Message {
		t.Errorf("event %q", e)
	}
}

// TestClusterPolicyCountsSelectedEnabledNamespaces: a cluster policy counts
// pods only in the enabled namespaces its selector picks.
func TestClusterPolicyCountsSelectedEnabledNamespaces(t *testing.T) {
	cp := &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "shops", Generation: 1},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}},
			PolicySpec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{
				{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{}},
			}},
		},
	}
	f := newFixture(t, cp,
		namespace("shop", enabled), namespace("shop-2", enabled),
		namespace("billing", map[string]string{policy.EnabledNamespaceLabel: "true", "team": "billing"}),
		namespace("unmanaged", map[string]string{"team": "shop"}),
		pod("shop", "a", verdict("cluster/shops", "peers")),
		pod("shop-2", "b", verdict("cluster/shops", "peers")),
		pod("billing", "c", verdict("cluster/shops", "peers")),
		pod("unmanaged", "d", verdict("cluster/shops", "peers")),
		pod("deleted-namespace", "e", verdict("cluster/shops", "peers")),
	)
	p := reconcileOnce(t, clusterReconciler(f), client.ObjectKey{Name: "shops"})
	if got := matchedPods(&p.Status); got["peers"] != 2 {
		t.Errorf("matchedPods %v, want peers=2 (shop and shop-2)", got)
	}
}

// TestPolicyEventsEnqueueOnlyWhatTheyReach: an edit of a cluster policy
// recomputes the MeshRolePolicies of the namespaces it reaches, not every
// one in the cluster, and a MeshRolePolicy's edit the cluster policies that
// reach its namespace.
func TestPolicyEventsEnqueueOnlyWhatTheyReach(t *testing.T) {
	edited := map[string]string{policy.EnabledNamespaceLabel: "true", "group": "edited"}
	disabledButSelected := map[string]string{"group": "edited"}
	steady := map[string]string{policy.EnabledNamespaceLabel: "true", "group": "steady"}
	inNamespace := func(ns string) *v1alpha1.MeshRolePolicy {
		p := eurekaPolicy()
		p.Namespace = ns
		return p
	}
	selecting := func(name, group string) *v1alpha1.ClusterMeshRolePolicy {
		return &v1alpha1.ClusterMeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterMeshRolePolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"group": group}}}}
	}
	edit := selecting("peers", "edited")
	everywhere := &v1alpha1.ClusterMeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Name: "everywhere"}}
	f := newFixture(t,
		namespace("a", edited), namespace("b", edited), namespace("off", disabledButSelected), namespace("c", steady),
		inNamespace("a"), inNamespace("b"), inNamespace("off"), inNamespace("c"),
		edit, selecting("steady-peers", "steady"), everywhere)
	ctx := context.Background()

	var got []string
	for _, r := range namespacedPoliciesReachedBy(f.client)(ctx, edit) {
		got = append(got, r.String())
	}
	slices.Sort(got)
	if want := []string{"a/eureka", "b/eureka"}; !slices.Equal(got, want) {
		t.Errorf("an edit of cluster policy peers enqueued %v, want %v", got, want)
	}

	got = nil
	for _, r := range clusterPoliciesReaching(f.client)(ctx, inNamespace("c")) {
		got = append(got, r.String())
	}
	slices.Sort(got)
	if want := []string{"/everywhere", "/steady-peers"}; !slices.Equal(got, want) {
		t.Errorf("an edit of c/eureka enqueued %v, want %v", got, want)
	}
	if got := clusterPoliciesReaching(f.client)(ctx, inNamespace("off")); len(got) != 0 {
		t.Errorf("an edit in a namespace meshrole is not enabled in enqueued %v", got)
	}
}

// TestStaleStatusWriteIsRetriedQuietly: a status write that lost to this
// controller's own previous one (the cache had not caught up) is retried
// after statusDelay, without an error for controller-runtime to log; any
// other failure is an error.
func TestStaleStatusWriteIsRetriedQuietly(t *testing.T) {
	f := newFixture(t, namespace("shop", enabled), eurekaPolicy())
	r := namespacedReconciler(f)
	key := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(eurekaPolicy())}
	f.statusError = apierrors.NewConflict(v1alpha1.GroupVersion.WithResource("meshrolepolicies").GroupResource(), "eureka", errors.New("the object has been modified"))
	res, err := r.Reconcile(context.Background(), key)
	if err != nil || res.RequeueAfter != statusDelay || f.statusWrites != 1 {
		t.Errorf("on a conflict: %+v, %v after %d writes; want a retry after %v and no error", res, err, f.statusWrites, statusDelay)
	}
	f.statusError = apierrors.NewServiceUnavailable("etcd is down")
	if _, err := r.Reconcile(context.Background(), key); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("on another failure: %v, want it returned", err)
	}
}
