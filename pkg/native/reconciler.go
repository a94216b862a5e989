package native

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// SpecHashAnnotation records the hash of the spec meshrole generated, so that
// an unchanged plan writes nothing (the API server adds defaults to the
// stored spec, which a field-by-field comparison would take for drift).
const SpecHashAnnotation = "meshrole.io/spec-hash"

// Reconciler keeps the generated MutatingAdmissionPolicies and bindings equal
// to what the current policies compile to. Every change to any policy
// recompiles the whole plan: the result is a handful of objects, and only
// those whose spec changed are written.
type Reconciler struct {
	// Client reads policies and generated objects from the cache and writes.
	Client  client.Client
	Options Options
	// Owner, when set, is made the controller owner of every generated
	// object, so that deleting it (the chart's ClusterRole) garbage-collects
	// them. It must be cluster-scoped.
	Owner *metav1.OwnerReference
	// Settle is how long each handover step waits; 3s when zero.
	Settle time.Duration
	// now times the handover steps; time.Now when nil (tests set it).
	now func() time.Time

	synced atomic.Bool
}

// reconcileKey is the only key: there is one plan.
var reconcileKey = reconcile.Request{NamespacedName: client.ObjectKey{Name: "native-plan"}}

// SetupWithManager checks that the API server serves MutatingAdmissionPolicy
// and registers the reconciler (leader-elected) and a readiness check that
// passes once the generated objects have been written.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := servesMutatingAdmissionPolicy(mgr); err != nil {
		return err
	}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{reconcileKey}
	})
	ours := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[ManagedByLabel] == ManagedByValue
	}))
	if err := ctrl.NewControllerManagedBy(mgr).
		Named("native-policies").
		Watches(&v1alpha1.MeshRolePolicy{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.ClusterMeshRolePolicy{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Someone editing or deleting a generated object gets it back.
		Watches(&admissionregistrationv1.MutatingAdmissionPolicy{}, all, ours).
		Watches(&admissionregistrationv1.MutatingAdmissionPolicyBinding{}, all, ours).
		// Once at start, so that readiness does not wait for an event (an
		// empty cluster sends none) and leftovers of a previous plan go.
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			q.Add(reconcileKey)
			return nil
		})).
		Complete(r); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Only the leader writes; a standby replica has nothing to wait for, and
	// must be ready for rollouts (maxUnavailable 0) to go on.
	elected := mgr.Elected()
	return mgr.AddReadyzCheck("native-policies", func(*http.Request) error {
		select {
		case <-elected:
			if !r.synced.Load() {
				return errors.New("the MutatingAdmissionPolicies have not been written yet")
			}
		default:
		}
		return nil
	})
}

func servesMutatingAdmissionPolicy(mgr ctrl.Manager) error {
	dc, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	return RequireServerSupport(dc)
}

// RequireServerSupport returns an error, naming the Kubernetes version native
// mode needs and the API server's own, unless the API server serves
// mutatingadmissionpolicies in admissionregistration.k8s.io/v1. Native mode
// refuses to start without them rather than run with no policy enforced.
func RequireServerSupport(dc discovery.DiscoveryInterface) error {
	gv := admissionregistrationv1.SchemeGroupVersion.String()
	resources, err := dc.ServerResourcesForGroupVersion(gv)
	switch {
	case err == nil:
		for _, r := range resources.APIResources {
			if r.Name == "mutatingadmissionpolicies" {
				return nil
			}
		}
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("native mode: asking the API server whether it serves %s mutatingadmissionpolicies: %w", gv, err)
	}
	server := "of an unknown version"
	if v, err := dc.ServerVersion(); err == nil && v.GitVersion != "" {
		server = v.GitVersion
		if parsed, err := utilversion.ParseGeneric(v.GitVersion); err == nil && parsed.AtLeast(minNativeVersion) {
			// New enough, yet the API is off (--runtime-config, or a
			// distribution that disables it).
			return fmt.Errorf("native mode needs MutatingAdmissionPolicy (%s), which this API server (%s) does not serve: "+
				"enable %s/mutatingadmissionpolicies in its --runtime-config, or use mode: webhook",
				gv, server, gv)
		}
	}
	return fmt.Errorf("native mode needs Kubernetes %d.%d or later (MutatingAdmissionPolicy %s); this API server is %s; use mode: webhook",
		minNativeVersion.Major(), minNativeVersion.Minor(), gv, server)
}

// minNativeVersion is the first Kubernetes release serving
// MutatingAdmissionPolicy in admissionregistration.k8s.io/v1 (GA).
var minNativeVersion = utilversion.MajorMinor(1, 36)

// Reconcile compiles the current policies and writes what changed.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	store := policy.NewStore()
	var namespaced v1alpha1.MeshRolePolicyList
	if err := r.Client.List(ctx, &namespaced); err != nil {
		return reconcile.Result{}, err
	}
	for i := range namespaced.Items {
		store.SetMeshRolePolicy(&namespaced.Items[i])
	}
	var cluster v1alpha1.ClusterMeshRolePolicyList
	if err := r.Client.List(ctx, &cluster); err != nil {
		return reconcile.Result{}, err
	}
	for i := range cluster.Items {
		store.SetClusterMeshRolePolicy(&cluster.Items[i])
	}
	plan := store.Plan()

	var existing admissionregistrationv1.MutatingAdmissionPolicyList
	if err := r.Client.List(ctx, &existing, client.MatchingLabels{ManagedByLabel: ManagedByValue}); err != nil {
		return reconcile.Result{}, err
	}
	now := r.clock()
	cov, wait := r.coverage(&plan, existing.Items, now)
	desired, err := Compile(&plan, r.Options, cov)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := r.apply(ctx, desired, existing.Items, now); err != nil {
		return reconcile.Result{}, err
	}
	r.synced.Store(true)
	return reconcile.Result{RequeueAfter: wait}, nil
}

func (r *Reconciler) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// settle is how long a handover step waits for the API server to see the
// previous one: it reloads admission policies from its informers every
// second (k8s.io/apiserver policy_source.go).
func (r *Reconciler) settle() time.Duration {
	if r.Settle > 0 {
		return r.Settle
	}
	return 3 * time.Second
}

// coverage works out, from the phases recorded on the bucket objects, which
// namespaces are being handed over (see Coverage) and when to look again; a
// released entry that has waited long enough is left out, and so deleted.
//
// A namespace that gets its first MeshRolePolicy is Arriving: the cluster
// object takes its whole decision, then its bucket entry appears; once the
// API server surely sees the entry, it is the Owner and the cluster object
// leaves it alone. One that loses its last is Retiring: its bucket entry
// takes the cluster policies' decision; then Released: the cluster object
// decides it again; then the entry goes. Each step waits for the API server
// to see the previous one, and at every step the objects that decide the
// namespace agree on its decision.
func (r *Reconciler) coverage(plan *policy.Plan, existing []admissionregistrationv1.MutatingAdmissionPolicy, now time.Time) (Coverage, time.Duration) {
	cov := Coverage{Arriving: map[string]bool{}, Retiring: map[string]bool{}, Released: map[string]bool{}, Withheld: map[string]bool{}}
	type state struct {
		phase Phase
		since time.Time
	}
	observed := map[string]state{}
	for i := range existing {
		for ns, st := range phasesOf(&existing[i]) {
			since, _ := time.Parse(time.RFC3339Nano, st.Since)
			observed[ns] = state{st.Phase, since}
		}
	}
	var wait time.Duration
	later := func(since time.Time) bool {
		left := r.settle() - now.Sub(since)
		if left > 0 && (wait == 0 || left < wait) {
			wait = left
		}
		return left > 0
	}
	wanted := map[string]bool{}
	for _, sc := range plan.Scopes {
		if sc.Namespace != "" && !slices.Contains(r.Options.ExcludedNamespaces, sc.Namespace) {
			wanted[sc.Namespace] = true
		}
	}
	for ns := range wanted {
		st, ok := observed[ns]
		switch {
		case !ok:
			cov.Arriving[ns] = true
			later(now)
		case st.phase == PhaseArriving && later(st.since):
			cov.Arriving[ns] = true
		case st.phase == PhaseReleased:
			// The cluster object and the bucket both decide it: it leaves
			// the bucket before it can arrive again.
			if later(st.since) {
				cov.Released[ns] = true
			} else {
				cov.Withheld[ns] = true
				if wait == 0 || wait > 100*time.Millisecond {
					wait = 100 * time.Millisecond
				}
			}
		}
		// Arriving long enough, Owner, or Retiring (its bucket alone decides
		// it): Owner, a single object's update.
	}
	for ns, st := range observed {
		if wanted[ns] {
			continue
		}
		switch st.phase {
		case PhaseRetiring:
			if later(st.since) {
				cov.Retiring[ns] = true
			} else {
				cov.Released[ns] = true
				later(now)
			}
		case PhaseReleased:
			if later(st.since) {
				cov.Released[ns] = true
			}
		default: // Owner or Arriving
			cov.Retiring[ns] = true
			later(now)
		}
	}
	return cov, wait
}

// phasesOf reads the phases recorded on a bucket object.
func phasesOf(o client.Object) map[string]PhaseState {
	var phases map[string]PhaseState
	if v := o.GetAnnotations()[PhasesAnnotation]; v != "" {
		_ = json.Unmarshal([]byte(v), &phases) // a hand-edited value counts as none
	}
	return phases
}

// apply writes the desired objects and deletes what is no longer wanted:
// the cluster object first (an arriving namespace's decision is there before
// its bucket entry appears), then the buckets. A policy is written before
// its binding and a binding deleted before its policy.
func (r *Reconciler) apply(ctx context.Context, desired []Object, existing []admissionregistrationv1.MutatingAdmissionPolicy, now time.Time) error {
	previous := map[string]PhaseState{}
	for i := range existing {
		maps.Copy(previous, phasesOf(&existing[i]))
	}
	slices.SortStableFunc(desired, func(a, b Object) int {
		return boolRank(a.Policy.Name != ClusterObjectName) - boolRank(b.Policy.Name != ClusterObjectName)
	})

	wanted := map[string]bool{}
	for i := range desired {
		o := &desired[i]
		wanted[o.Policy.Name] = true
		if o.Phases != nil {
			// A phase's start time is kept while the phase lasts.
			states := map[string]PhaseState{}
			for ns, phase := range o.Phases {
				st := PhaseState{Phase: phase, Since: now.UTC().Format(time.RFC3339Nano)}
				if prev, ok := previous[ns]; ok && prev.Phase == phase && prev.Since != "" {
					st.Since = prev.Since
				}
				states[ns] = st
			}
			b, err := json.Marshal(states)
			if err != nil {
				return err
			}
			o.Policy.Annotations = map[string]string{PhasesAnnotation: string(b)}
		}
		if err := r.put(ctx, &o.Policy, &admissionregistrationv1.MutatingAdmissionPolicy{}, o.Policy.Spec); err != nil {
			return err
		}
		if err := r.put(ctx, &o.Binding, &admissionregistrationv1.MutatingAdmissionPolicyBinding{}, o.Binding.Spec); err != nil {
			return err
		}
	}
	selector := client.MatchingLabels{ManagedByLabel: ManagedByValue}
	var bindings admissionregistrationv1.MutatingAdmissionPolicyBindingList
	if err := r.Client.List(ctx, &bindings, selector); err != nil {
		return err
	}
	for i := range bindings.Items {
		if !wanted[bindings.Items[i].Name] {
			if err := client.IgnoreNotFound(r.Client.Delete(ctx, &bindings.Items[i])); err != nil {
				return err
			}
		}
	}
	for i := range existing {
		if !wanted[existing[i].Name] {
			if err := client.IgnoreNotFound(r.Client.Delete(ctx, &existing[i])); err != nil {
				return err
			}
		}
	}
	return nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// put creates obj, or updates the existing object when the spec meshrole
// generated for it (recorded as a hash), its phase or its owner changed.
func (r *Reconciler) put(ctx context.Context, obj, existing client.Object, spec any) error {
	hash, err := specHash(spec)
	if err != nil {
		return err
	}
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[SpecHashAnnotation] = hash
	obj.SetAnnotations(annotations)
	if r.Owner != nil {
		obj.SetOwnerReferences([]metav1.OwnerReference{*r.Owner})
	}

	err = r.Client.Get(ctx, client.ObjectKeyFromObject(obj), existing)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s: %w", describe(obj), err)
		}
		return nil
	case err != nil:
		return err
	}
	have := existing.GetAnnotations()
	if have[SpecHashAnnotation] == hash &&
		have[PhasesAnnotation] == annotations[PhasesAnnotation] &&
		existing.GetLabels()[ManagedByLabel] == ManagedByValue &&
		sameOwners(existing.GetOwnerReferences(), obj.GetOwnerReferences()) {
		return nil
	}
	obj.SetResourceVersion(existing.GetResourceVersion())
	if err := r.Client.Update(ctx, obj); err != nil {
		return fmt.Errorf("updating %s: %w", describe(obj), err)
	}
	return nil
}

func sameOwners(a, b []metav1.OwnerReference) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].UID != b[i].UID {
			return false
		}
	}
	return true
}

func specHash(spec any) (string, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

func describe(obj client.Object) string {
	kind := "MutatingAdmissionPolicy"
	if _, ok := obj.(*admissionregistrationv1.MutatingAdmissionPolicyBinding); ok {
		kind = "MutatingAdmissionPolicyBinding"
	}
	return kind + " " + obj.GetName()
}

// ClusterRoleOwner is an owner reference to a ClusterRole, looked up by name.
func ClusterRoleOwner(ctx context.Context, c client.Reader, name string) (*metav1.OwnerReference, error) {
	role := &metav1.PartialObjectMetadata{}
	gvk := schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}
	role.SetGroupVersionKind(gvk)
	if err := c.Get(ctx, client.ObjectKey{Name: name}, role); err != nil {
		return nil, fmt.Errorf("reading ClusterRole %s, the owner of the generated MutatingAdmissionPolicies: %w", name, err)
	}
	return &metav1.OwnerReference{
		APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: name, UID: role.GetUID(),
	}, nil
}
