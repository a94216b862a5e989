package native

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

func nsObject(ns string, phase Phase, since time.Time) admissionregistrationv1.MutatingAdmissionPolicy {
	phases, _ := json.Marshal(map[string]PhaseState{ns: {Phase: phase, Since: since.UTC().Format(time.RFC3339Nano)}})
	return admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{
		Name:        BucketOf(ns),
		Labels:      map[string]string{ManagedByLabel: ManagedByValue},
		Annotations: map[string]string{PhasesAnnotation: string(phases)},
	}}
}

// TestCoverageHandsOverInSteps walks a namespace through getting its first
// MeshRolePolicy and losing its last, one settle period per step.
func TestCoverageHandsOverInSteps(t *testing.T) {
	r := &Reconciler{Settle: 3 * time.Second}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	withShop := policy.NewStore()
	withShop.SetMeshRolePolicy(&v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"},
		Spec:       v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{Name: "w", Role: v1alpha1.RolePeerStateful}}},
	})
	planWith, planWithout := withShop.Plan(), policy.NewStore().Plan()

	keys := func(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
	ago := func(phase Phase, d time.Duration) []admissionregistrationv1.MutatingAdmissionPolicy {
		return []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", phase, now.Add(-d))}
	}
	shop := []string{"shop"}
	for _, tc := range []struct {
		name                                   string
		plan                                   *policy.Plan
		existing                               []admissionregistrationv1.MutatingAdmissionPolicy
		arriving, retiring, released, withheld []string
		requeueIn                              time.Duration
	}{
		{"first policy: arriving, look again after a settle period", &planWith, nil, shop, nil, nil, nil, 3 * time.Second},
		{"arriving for 1s: still arriving", &planWith, ago(PhaseArriving, time.Second), shop, nil, nil, nil, 2 * time.Second},
		{"arriving for 3s: its bucket alone decides", &planWith, ago(PhaseArriving, 3*time.Second), nil, nil, nil, nil, 0},
		{"owner: steady", &planWith, ago(PhaseOwner, time.Hour), nil, nil, nil, nil, 0},
		{"last policy gone: retiring", &planWithout, ago(PhaseOwner, time.Hour), nil, shop, nil, nil, 3 * time.Second},
		{"retiring for 1s: still retiring", &planWithout, ago(PhaseRetiring, time.Second), nil, shop, nil, nil, 2 * time.Second},
		{"retiring for 3s: released to the cluster object", &planWithout, ago(PhaseRetiring, 3*time.Second), nil, nil, shop, nil, 3 * time.Second},
		{"released for 1s: still released", &planWithout, ago(PhaseReleased, time.Second), nil, nil, shop, nil, 2 * time.Second},
		{"released for 3s: gone", &planWithout, ago(PhaseReleased, 3*time.Second), nil, nil, nil, nil, 0},
		{"a policy again while retiring: its bucket alone decides it, so owner", &planWith, ago(PhaseRetiring, time.Second), nil, nil, nil, nil, 0},
		{"a policy again while released: it leaves the bucket first", &planWith, ago(PhaseReleased, time.Second), nil, nil, shop, nil, 2 * time.Second},
		{"a policy again, released for 3s: withheld, then arriving", &planWith, ago(PhaseReleased, 3*time.Second), nil, nil, nil, shop, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cov, wait := r.coverage(tc.plan, tc.existing, now)
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"arriving", keys(cov.Arriving), tc.arriving}, {"retiring", keys(cov.Retiring), tc.retiring},
				{"released", keys(cov.Released), tc.released}, {"withheld", keys(cov.Withheld), tc.withheld}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s %v, want %v", c.what, c.got, c.want)
				}
			}
			if wait != tc.requeueIn {
				t.Errorf("requeue after %v, want %v", wait, tc.requeueIn)
			}
		})
	}
}

// fakeCluster runs the Reconciler against controller-runtime's fake client
// on a clock the test moves, recording every write it makes.
type fakeCluster struct {
	t      *testing.T
	client client.Client
	r      *Reconciler
	now    time.Time
	writes []string // "<verb> <kind> <name>", in order
}

func newFakeCluster(t *testing.T, objs ...client.Object) *fakeCluster {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	fc := &fakeCluster{t: t, now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	record := func(verb string, obj client.Object) {
		fc.writes = append(fc.writes, fmt.Sprintf("%s %T %s", verb, obj, obj.GetName()))
	}
	fc.client = fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			record("create", obj)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			record("update", obj)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			record("patch", obj)
			return c.Patch(ctx, obj, patch, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			fc.writes = append(fc.writes, fmt.Sprintf("apply %T", obj))
			return c.Apply(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			record("delete", obj)
			return c.Delete(ctx, obj, opts...)
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			record("deleteAllOf", obj)
			return c.DeleteAllOf(ctx, obj, opts...)
		},
	}).Build()
	fc.r = &Reconciler{Client: fc.client, Settle: 3 * time.Second, now: func() time.Time { return fc.now }}
	return fc
}

// reconcile moves the clock by d, reconciles once, and returns when it
// wants to look again and the writes it made.
func (fc *fakeCluster) reconcile(d time.Duration) (time.Duration, []string) {
	fc.t.Helper()
	fc.now = fc.now.Add(d)
	fc.writes = nil
	res, err := fc.r.Reconcile(context.Background(), reconcileKey)
	if err != nil {
		fc.t.Fatalf("reconcile at %s: %v", fc.now.Format(time.TimeOnly), err)
	}
	return res.RequeueAfter, fc.writes
}

// step reconciles after d and checks the writes, in order, and the requeue.
func (fc *fakeCluster) step(what string, d time.Duration, wantWrites []string, wantRequeue time.Duration) {
	fc.t.Helper()
	requeue, writes := fc.reconcile(d)
	if !slices.Equal(writes, wantWrites) {
		fc.t.Errorf("%s: writes\n  %s\nwant\n  %s", what, strings.Join(writes, "\n  "), strings.Join(wantWrites, "\n  "))
	}
	if requeue != wantRequeue {
		fc.t.Errorf("%s: requeue after %v, want %v", what, requeue, wantRequeue)
	}
}

// steady reconciles twice more at the same time and wants no write.
func (fc *fakeCluster) steady(what string, requeue time.Duration) {
	fc.t.Helper()
	for range 2 {
		fc.step(what+", again", 0, nil, requeue)
	}
}

func (fc *fakeCluster) create(obj client.Object) {
	fc.t.Helper()
	if err := fc.client.Create(context.Background(), obj); err != nil {
		fc.t.Fatal(err)
	}
}

func (fc *fakeCluster) delete(obj client.Object) {
	fc.t.Helper()
	if err := fc.client.Delete(context.Background(), obj); err != nil {
		fc.t.Fatal(err)
	}
}

// objects names the generated policies and bindings, sorted.
func (fc *fakeCluster) objects() (policies, bindings []string) {
	fc.t.Helper()
	var ps admissionregistrationv1.MutatingAdmissionPolicyList
	var bs admissionregistrationv1.MutatingAdmissionPolicyBindingList
	if err := fc.client.List(context.Background(), &ps); err != nil {
		fc.t.Fatal(err)
	}
	if err := fc.client.List(context.Background(), &bs); err != nil {
		fc.t.Fatal(err)
	}
	for _, p := range ps.Items {
		policies = append(policies, p.Name)
	}
	for _, b := range bs.Items {
		bindings = append(bindings, b.Name)
	}
	slices.Sort(policies)
	slices.Sort(bindings)
	return policies, bindings
}

func (fc *fakeCluster) wantObjects(what string, names ...string) {
	fc.t.Helper()
	slices.Sort(names)
	policies, bindings := fc.objects()
	if !slices.Equal(policies, names) || !slices.Equal(bindings, names) {
		fc.t.Errorf("%s: policies %v and bindings %v, want %v each", what, policies, bindings, names)
	}
}

func (fc *fakeCluster) policy(name string) *admissionregistrationv1.MutatingAdmissionPolicy {
	fc.t.Helper()
	var p admissionregistrationv1.MutatingAdmissionPolicy
	if err := fc.client.Get(context.Background(), client.ObjectKey{Name: name}, &p); err != nil {
		fc.t.Fatal(err)
	}
	return &p
}

func (fc *fakeCluster) binding(name string) *admissionregistrationv1.MutatingAdmissionPolicyBinding {
	fc.t.Helper()
	var b admissionregistrationv1.MutatingAdmissionPolicyBinding
	if err := fc.client.Get(context.Background(), client.ObjectKey{Name: name}, &b); err != nil {
		fc.t.Fatal(err)
	}
	return &b
}

// wantPhases checks the phases recorded on a bucket object, and since when.
func (fc *fakeCluster) wantPhases(what, bucket string, want map[string]PhaseState) {
	fc.t.Helper()
	if got := phasesOf(fc.policy(bucket)); !maps.Equal(got, want) {
		fc.t.Errorf("%s: %s records phases %v, want %v", what, bucket, got, want)
	}
}

func since(phase Phase, t time.Time) PhaseState {
	return PhaseState{Phase: phase, Since: t.UTC().Format(time.RFC3339Nano)}
}

var policyRefValue = regexp.MustCompile(`optional\.of\("([^"]+/[^"]+)"\)`)

// policyRefs are the policies a generated object may name in the
// meshrole.io/policy annotation it writes, sorted.
func policyRefs(p *admissionregistrationv1.MutatingAdmissionPolicy) []string {
	var refs []string
	for _, v := range p.Spec.Variables {
		for _, m := range policyRefValue.FindAllStringSubmatch(v.Expression, -1) {
			refs = append(refs, m[1])
		}
	}
	slices.Sort(refs)
	return slices.Compact(refs)
}

// decidedElsewhere is what the cluster object leaves to the buckets.
func decidedElsewhere(p *admissionregistrationv1.MutatingAdmissionPolicy) []string {
	var out []string
	for _, c := range p.Spec.MatchConditions {
		if strings.HasPrefix(c.Name, "decided-elsewhere-") {
			out = append(out, c.Expression)
		}
	}
	return out
}

func meshRolePolicy(namespace, name string) *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "w", Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}, Role: v1alpha1.RolePeerStateful,
		}}},
	}
}

func clusterPolicy(name string) *v1alpha1.ClusterMeshRolePolicy {
	return &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{PolicySpec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "everything", Selector: metav1.LabelSelector{}, Role: v1alpha1.RoleClientStateless,
		}}}},
	}
}

const (
	mapKind     = "*v1.MutatingAdmissionPolicy"
	bindingKind = "*v1.MutatingAdmissionPolicyBinding"
)

// TestReconcilerHandsOverANamespace walks a namespace through getting its
// first MeshRolePolicy and losing its last against a fake API server: the
// objects written, in order, the phases recorded on its bucket, and no
// write at all while nothing changes.
func TestReconcilerHandsOverANamespace(t *testing.T) {
	fc := newFakeCluster(t, clusterPolicy("everyone"))
	bucket := BucketOf("shop")
	cluster := ClusterObjectName

	fc.step("cluster policy only", 0, []string{
		"create " + mapKind + " " + cluster,
		"create " + bindingKind + " " + cluster,
	}, 0)
	fc.steady("cluster policy only", 0)
	fc.wantObjects("cluster policy only", cluster)
	if got := fc.binding(cluster).Spec.MatchResources.NamespaceSelector.MatchLabels; got[policy.EnabledNamespaceLabel] != "true" {
		t.Errorf("the cluster binding selects %v, not the enabled namespaces", got)
	}

	// Arriving: the cluster object takes shop's decision first, then its
	// bucket entry appears.
	fc.create(meshRolePolicy("shop", "p"))
	arrived := fc.now
	fc.step("first policy in shop", 0, []string{
		"update " + mapKind + " " + cluster,
		"create " + mapKind + " " + bucket,
		"create " + bindingKind + " " + bucket,
	}, 3*time.Second)
	fc.wantObjects("shop arriving", cluster, bucket)
	fc.wantPhases("shop arriving", bucket, map[string]PhaseState{"shop": since(PhaseArriving, arrived)})
	if winner := variable(&Object{Policy: *fc.policy(cluster)}, "winner"); !strings.HasPrefix(winner, `request.namespace == "shop" ? (`) {
		t.Errorf("while shop arrives, the cluster object does not decide it: winner = %s", winner)
	}
	if got := decidedElsewhere(fc.policy(cluster)); len(got) != 0 {
		t.Errorf("while shop arrives, the cluster object leaves %v alone", got)
	}
	if got := fc.binding(bucket).Spec.MatchResources.NamespaceSelector.MatchExpressions; len(got) != 1 || !slices.Equal(got[0].Values, []string{"shop"}) {
		t.Errorf("the bucket binding selects %v, want the namespace shop", got)
	}
	fc.steady("shop arriving", 3*time.Second)
	fc.step("shop arriving for 1s", time.Second, nil, 2*time.Second)

	// Owner: the cluster object leaves shop to its bucket.
	fc.step("shop arrived 3s ago", 2*time.Second, []string{
		"update " + mapKind + " " + cluster,
		"update " + mapKind + " " + bucket,
	}, 0)
	owner := fc.now
	fc.wantPhases("shop owned", bucket, map[string]PhaseState{"shop": since(PhaseOwner, owner)})
	if writes := policyRefs(fc.policy(bucket)); !slices.Equal(writes, []string{"cluster/everyone", "shop/p"}) {
		t.Errorf("shop's bucket writes the policies %v, want shop's and the cluster's", writes)
	}
	if got, want := decidedElsewhere(fc.policy(cluster)), []string{`!(request.namespace in ["shop"])`}; !slices.Equal(got, want) {
		t.Errorf("once shop's bucket owns it, the cluster object's exclusions are %v, want %v", got, want)
	}
	fc.steady("shop owned", 0)
	fc.step("shop owned an hour later", time.Hour, nil, 0)

	// A second policy in shop changes shop's decision, in its bucket, and
	// keeps the phase. The cluster object is rewritten too, with the same
	// decisions: policies are numbered across the whole plan, and shop's
	// come before the cluster policies.
	fc.create(meshRolePolicy("shop", "q"))
	fc.step("second policy in shop", 0, []string{
		"update " + mapKind + " " + cluster,
		"update " + mapKind + " " + bucket,
	}, 0)
	fc.wantPhases("second policy in shop", bucket, map[string]PhaseState{"shop": since(PhaseOwner, owner)})
	fc.steady("second policy in shop", 0)
	fc.delete(meshRolePolicy("shop", "q"))
	fc.step("second policy gone", 0, []string{
		"update " + mapKind + " " + cluster,
		"update " + mapKind + " " + bucket,
	}, 0)

	// Retiring: the bucket alone takes the cluster policies' decision (the
	// cluster object's update is the renumbering again).
	fc.delete(meshRolePolicy("shop", "p"))
	retired := fc.now
	fc.step("last policy gone from shop", 0, []string{
		"update " + mapKind + " " + cluster,
		"update " + mapKind + " " + bucket,
	}, 3*time.Second)
	fc.wantPhases("shop retiring", bucket, map[string]PhaseState{"shop": since(PhaseRetiring, retired)})
	if writes := policyRefs(fc.policy(bucket)); !slices.Equal(writes, []string{"cluster/everyone"}) {
		t.Errorf("while shop retires, its bucket writes the policies %v, want the cluster policies' only", writes)
	}
	if got := decidedElsewhere(fc.policy(cluster)); len(got) != 1 {
		t.Errorf("while shop retires, the cluster object must still leave it alone: %v", got)
	}
	fc.steady("shop retiring", 3*time.Second)

	// Released: the cluster object decides shop again, its bucket too.
	fc.step("shop retired 3s ago", 3*time.Second, []string{
		"update " + mapKind + " " + cluster,
		"update " + mapKind + " " + bucket,
	}, 3*time.Second)
	released := fc.now
	fc.wantPhases("shop released", bucket, map[string]PhaseState{"shop": since(PhaseReleased, released)})
	if got := decidedElsewhere(fc.policy(cluster)); len(got) != 0 {
		t.Errorf("once shop is released, the cluster object still leaves %v alone", got)
	}
	fc.steady("shop released", 3*time.Second)

	// Gone: the binding goes before its policy.
	fc.step("shop released 3s ago", 3*time.Second, []string{
		"delete " + bindingKind + " " + bucket,
		"delete " + mapKind + " " + bucket,
	}, 0)
	fc.wantObjects("shop gone", cluster)
	fc.steady("shop gone", 0)
}

// TestReconcilerWithholdsARearrival: a namespace that gets a policy again
// while released leaves its bucket first, decided by the cluster object
// alone meanwhile (Withheld), and then arrives afresh.
func TestReconcilerWithholdsARearrival(t *testing.T) {
	fc := newFakeCluster(t, clusterPolicy("everyone"), meshRolePolicy("shop", "p"))
	bucket := BucketOf("shop")
	cluster := ClusterObjectName
	fc.reconcile(0)
	fc.reconcile(3 * time.Second) // Owner
	fc.delete(meshRolePolicy("shop", "p"))
	fc.reconcile(0)               // Retiring
	fc.reconcile(3 * time.Second) // Released
	fc.wantPhases("shop released", bucket, map[string]PhaseState{"shop": since(PhaseReleased, fc.now)})
	released := fc.now

	// The cluster policy's number changes back (see the renumbering above).
	fc.create(meshRolePolicy("shop", "p"))
	fc.step("a policy again, released for 1s", time.Second, []string{
		"update " + mapKind + " " + cluster,
		"update " + mapKind + " " + bucket,
	}, 2*time.Second)
	fc.wantPhases("a policy again, released for 1s", bucket, map[string]PhaseState{"shop": since(PhaseReleased, released)})
	// The cluster object decides shop with the cluster policies; so must
	// its bucket, or the two objects would give its pods a mix.
	if writes := policyRefs(fc.policy(bucket)); !slices.Equal(writes, []string{"cluster/everyone"}) {
		t.Errorf("a policy again while released: shop's bucket writes the policies %v, want the cluster policies' only, as the cluster object", writes)
	}

	fc.step("a policy again, released for 3s: withheld", 2*time.Second, []string{
		"delete " + bindingKind + " " + bucket,
		"delete " + mapKind + " " + bucket,
	}, 100*time.Millisecond)
	fc.wantObjects("shop withheld", cluster)
	if winner := variable(&Object{Policy: *fc.policy(cluster)}, "winner"); strings.Contains(winner, `"shop"`) {
		t.Errorf("while shop is withheld, the cluster object decides it as a namespace of its own: winner = %s", winner)
	}
	if got := decidedElsewhere(fc.policy(cluster)); len(got) != 0 {
		t.Errorf("while shop is withheld, the cluster object leaves %v alone", got)
	}

	fc.step("withheld shop arrives", 100*time.Millisecond, []string{
		"update " + mapKind + " " + cluster,
		"create " + mapKind + " " + bucket,
		"create " + bindingKind + " " + bucket,
	}, 3*time.Second)
	fc.wantPhases("shop arriving again", bucket, map[string]PhaseState{"shop": since(PhaseArriving, fc.now)})
}

// TestReconcilerWritesNothingWhenPoliciesStayTheSame: with several
// namespaces settled, reconciling again, or after a change to a policy that
// changes no decision, writes nothing.
func TestReconcilerWritesNothingWhenPoliciesStayTheSame(t *testing.T) {
	fc := newFakeCluster(t, clusterPolicy("everyone"),
		meshRolePolicy("shop", "p"), meshRolePolicy("zk", "p"), meshRolePolicy("kafka", "p"), meshRolePolicy("mixed", "p"))
	_, writes := fc.reconcile(0)
	if len(writes) < 2*3 {
		t.Fatalf("the first reconcile wrote only %v", writes)
	}
	fc.reconcile(3 * time.Second)
	for _, d := range []time.Duration{0, time.Second, time.Hour} {
		fc.step(fmt.Sprintf("settled, %v later", d), d, nil, 0)
	}

	p := meshRolePolicy("shop", "p")
	if err := fc.client.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{"team": "shop"}
	if err := fc.client.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	fc.step("a label on a policy", 0, nil, 0)
}

// TestReconcilerRepairsItsObjects: a generated object someone deleted,
// unlabelled or changed the recorded spec of is written back, a leftover
// generated object goes, and objects meshrole does not manage stay.
func TestReconcilerRepairsItsObjects(t *testing.T) {
	leftover := admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{
		Name: "meshrole-bucket-99", Labels: map[string]string{ManagedByLabel: ManagedByValue},
	}}
	foreign := admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses"}}
	fc := newFakeCluster(t, clusterPolicy("everyone"), &leftover, &foreign)
	cluster := ClusterObjectName
	fc.step("first reconcile", 0, []string{
		"create " + mapKind + " " + cluster,
		"create " + bindingKind + " " + cluster,
		"delete " + mapKind + " meshrole-bucket-99",
	}, 0)
	if policies, _ := fc.objects(); !slices.Equal(policies, []string{cluster, "someone-elses"}) {
		t.Errorf("policies %v, want the cluster object and the one meshrole does not manage", policies)
	}

	fc.delete(fc.binding(cluster))
	fc.step("binding deleted", 0, []string{"create " + bindingKind + " " + cluster}, 0)

	p := fc.policy(cluster)
	p.Annotations[SpecHashAnnotation] = "edited"
	ignore := admissionregistrationv1.Ignore
	p.Spec.FailurePolicy = &ignore
	if err := fc.client.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	fc.step("spec edited", 0, []string{"update " + mapKind + " " + cluster}, 0)
	if got := *fc.policy(cluster).Spec.FailurePolicy; got != admissionregistrationv1.Fail {
		t.Errorf("failure policy %s after the repair, want Fail", got)
	}

	b := fc.binding(cluster)
	delete(b.Labels, ManagedByLabel)
	if err := fc.client.Update(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	fc.step("label removed", 0, []string{"update " + bindingKind + " " + cluster}, 0)
	if got := fc.binding(cluster).Labels[ManagedByLabel]; got != ManagedByValue {
		t.Errorf("the binding's %s label is %q after the repair", ManagedByLabel, got)
	}
	fc.steady("repaired", 0)
}

// TestReconcilerSetsTheOwner: every generated object is owned by the
// chart's ClusterRole, and a new owner rewrites them all.
func TestReconcilerSetsTheOwner(t *testing.T) {
	fc := newFakeCluster(t, clusterPolicy("everyone"), meshRolePolicy("shop", "p"))
	fc.r.Owner = &metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "meshrole", UID: "uid-1"}
	fc.reconcile(0)
	fc.reconcile(3 * time.Second)
	bucket := BucketOf("shop")
	for _, o := range []client.Object{fc.policy(ClusterObjectName), fc.binding(ClusterObjectName), fc.policy(bucket), fc.binding(bucket)} {
		if refs := o.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != "uid-1" {
			t.Errorf("%T %s: owners %v, want the ClusterRole uid-1", o, o.GetName(), refs)
		}
	}
	fc.r.Owner = &metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "meshrole", UID: "uid-2"}
	fc.step("new owner", 0, []string{
		"update " + mapKind + " " + ClusterObjectName,
		"update " + bindingKind + " " + ClusterObjectName,
		"update " + mapKind + " " + bucket,
		"update " + bindingKind + " " + bucket,
	}, 0)
	fc.steady("new owner", 0)
}
