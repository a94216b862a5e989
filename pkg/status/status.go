// Package status keeps the status of meshrole's policies: which pods carry
// each workload entry, which running pods have drifted from what the policy
// gives them now, whether the policy compiles, and which other policies it
// conflicts with. It reads pods from a metadata-only informer cache, by
// namespace and with indexes on meshrole's annotations, so it makes no API
// call per pod.
package status

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Condition types and reasons written to policy status.
const (
	ConditionReady    = "Ready"
	ConditionConflict = "Conflict"

	ReasonAccepted        = "Accepted"
	ReasonInvalidSelector = "InvalidSelector"
	ReasonNeedsWebhook    = "NeedsWebhookMode"
	ReasonConflicting     = "ConflictingRoles"
	ReasonNoConflict      = "NoConflict"
)

// Pod index names.
const (
	// entryIndex: "<policy ref>/<workload>" of the entry a pod carries.
	entryIndex = "meshrole.io/entry"
	// conflictIndex: every policy a pod's conflict involves, winner and losers.
	conflictIndex = "meshrole.io/conflict-party"
)

// policyObject is either policy kind.
type policyObject interface {
	client.Object
	PolicySpec() *v1alpha1.PolicySpec
	PolicyStatus() *v1alpha1.PolicyStatus
}

// Reconciler writes one policy kind's status.
type Reconciler[T policyObject] struct {
	Client    client.Client
	Recorder  recorder.EventRecorder
	newPolicy func() T
	// namespaceSelector returns a cluster policy's selector, nil for namespaced ones.
	namespaceSelector func(T) *metav1.LabelSelector
	// nativeMode: policies are compiled into MutatingAdmissionPolicies, which
	// refuse what they cannot honour (policy.NativeProblems).
	nativeMode bool
	// drifted is meshrole_drifted_pods, shared by both kinds.
	drifted *driftGauge
}

// SetupWithManager registers the pod indexes, the drift gauge on
// controller-runtime's metrics registry, and the status controllers for both
// policy kinds. They are leader-elected: one replica writes. In native mode,
// Ready also reports what native mode refuses to compile.
//
// A policy's status depends on its pods, on the namespaces' labels, and on
// the other policies (which one decides a pod), so each controller watches
// all three. Pods are listed by namespace from the informer's namespace
// index, which the cache always keeps: no API call.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, nativeMode bool) error {
	pods := podMetadata()
	for name, index := range map[string]client.IndexerFunc{entryIndex: indexEntry, conflictIndex: indexConflictParties, verdictIndex: indexVerdict} {
		if err := mgr.GetFieldIndexer().IndexField(ctx, pods, name, index); err != nil {
			return fmt.Errorf("indexing pods by %s: %w", name, err)
		}
	}
	drifted, err := newDriftGauge(metrics.Registry)
	if err != nil {
		return err
	}
	rec := mgr.GetEventRecorder("meshrole")
	c := mgr.GetClient()

	namespaced := &Reconciler[*v1alpha1.MeshRolePolicy]{
		Client: c, Recorder: rec,
		newPolicy:         func() *v1alpha1.MeshRolePolicy { return &v1alpha1.MeshRolePolicy{} },
		namespaceSelector: func(*v1alpha1.MeshRolePolicy) *metav1.LabelSelector { return nil },
		nativeMode:        nativeMode,
		drifted:           drifted,
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("meshrolepolicy-status").
		For(&v1alpha1.MeshRolePolicy{}).
		Watches(&v1alpha1.MeshRolePolicy{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return namespacedPoliciesNamed(ctx, c, o.GetNamespace())
		}), builder.WithPredicates(decisionsChanged())).
		Watches(&v1alpha1.ClusterMeshRolePolicy{}, handler.EnqueueRequestsFromMapFunc(namespacedPoliciesReachedBy(c)),
			builder.WithPredicates(decisionsChanged())).
		WatchesMetadata(&corev1.Pod{}, podEvents(policiesOfPod(false), policiesReachingPod(c, false))).
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(namespacedPoliciesIn(c)),
			builder.WithPredicates(labelsChanged())).
		Complete(namespaced); err != nil {
		return err
	}
	cluster := &Reconciler[*v1alpha1.ClusterMeshRolePolicy]{
		Client: c, Recorder: rec,
		newPolicy: func() *v1alpha1.ClusterMeshRolePolicy { return &v1alpha1.ClusterMeshRolePolicy{} },
		namespaceSelector: func(p *v1alpha1.ClusterMeshRolePolicy) *metav1.LabelSelector {
			return &p.Spec.NamespaceSelector
		},
		nativeMode: nativeMode,
		drifted:    drifted,
	}
	return ctrl.NewControllerManagedBy(mgr).Named("clustermeshrolepolicy-status").
		For(&v1alpha1.ClusterMeshRolePolicy{}).
		Watches(&v1alpha1.MeshRolePolicy{}, handler.EnqueueRequestsFromMapFunc(clusterPoliciesReaching(c)),
			builder.WithPredicates(decisionsChanged())).
		Watches(&v1alpha1.ClusterMeshRolePolicy{}, handler.EnqueueRequestsFromMapFunc(allClusterPolicies(c)),
			builder.WithPredicates(decisionsChanged())).
		WatchesMetadata(&corev1.Pod{}, podEvents(policiesOfPod(true), policiesReachingPod(c, true))).
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(allClusterPolicies(c)),
			builder.WithPredicates(labelsChanged())).
		Complete(cluster)
}

// decisionsChanged passes the policy events that can change which policy
// decides a pod: a policy created or deleted, or its spec edited (a status
// write changes no generation).
func decisionsChanged() predicate.Predicate {
	return predicate.Or(predicate.GenerationChangedPredicate{}, predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return true },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	})
}

// labelsChanged passes namespace events that can change which policies reach
// the namespace: a namespace's labels decide that (see policy.Reach).
func labelsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
		},
	}
}

// namespacedPoliciesIn maps a namespace to its MeshRolePolicies.
func namespacedPoliciesIn(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, ns client.Object) []reconcile.Request {
		return namespacedPoliciesNamed(ctx, c, ns.GetName())
	}
}

// namespacedPoliciesNamed lists the MeshRolePolicies of one namespace.
func namespacedPoliciesNamed(ctx context.Context, c client.Reader, namespace string) []reconcile.Request {
	list := &v1alpha1.MeshRolePolicyList{}
	if err := c.List(ctx, list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	out := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		out[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return out
}

// namespacedPoliciesReachedBy maps a cluster policy to the MeshRolePolicies
// in the namespaces it reaches: there it may outrank, or stop outranking,
// them. An edit maps both versions, so the namespaces a changed selector
// leaves are covered too. Elsewhere it changes nothing of theirs, and with
// a thousand namespaces an edit would otherwise recompute a thousand
// statuses.
func namespacedPoliciesReachedBy(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		cp, ok := o.(*v1alpha1.ClusterMeshRolePolicy)
		if !ok {
			return nil
		}
		ref := policy.Ref{Name: cp.Name}
		namespaces, err := reachedNamespaces(ctx, c, ref, policy.NewReach(ref, &cp.Spec.NamespaceSelector))
		if err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, ns := range namespaces {
			out = append(out, namespacedPoliciesNamed(ctx, c, ns.name)...)
		}
		return out
	}
}

// policiesReachingPod maps a pod in an enabled namespace to the policies of
// one kind that reach its namespace: any of them may decide it now, whatever
// its annotations say (a pod created before any policy has none).
func policiesReachingPod(c client.Reader, cluster bool) handler.MapFunc {
	return func(ctx context.Context, pod client.Object) []reconcile.Request {
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		if err := c.Get(ctx, client.ObjectKey{Name: pod.GetNamespace()}, ns); err != nil ||
			ns.Labels[policy.EnabledNamespaceLabel] != "true" {
			return nil
		}
		if !cluster {
			return namespacedPoliciesNamed(ctx, c, ns.Name)
		}
		return clusterPoliciesReachingNamespace(ctx, c, ns)
	}
}

// allClusterPolicies maps a namespace to every ClusterMeshRolePolicy: any of
// them may start or stop selecting it.
func allClusterPolicies(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		list := &v1alpha1.ClusterMeshRolePolicyList{}
		if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		out := make([]reconcile.Request, len(list.Items))
		for i := range list.Items {
			out[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
		}
		return out
	}
}

// clusterPoliciesReaching maps a MeshRolePolicy to the cluster policies
// that reach its namespace, the only ones it can outrank or conflict with.
func clusterPoliciesReaching(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		if err := c.Get(ctx, client.ObjectKey{Name: o.GetNamespace()}, ns); err != nil {
			return nil
		}
		return clusterPoliciesReachingNamespace(ctx, c, ns)
	}
}

// clusterPoliciesReachingNamespace lists the cluster policies that reach ns.
func clusterPoliciesReachingNamespace(ctx context.Context, c client.Reader, ns *metav1.PartialObjectMetadata) []reconcile.Request {
	list := &v1alpha1.ClusterMeshRolePolicyList{}
	if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		cp := &list.Items[i]
		if policy.NewReach(policy.Ref{Name: cp.Name}, &cp.Spec.NamespaceSelector).Namespace(ns.Name, labels.Set(ns.Labels)) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cp)})
		}
	}
	return out
}

func podMetadata() *metav1.PartialObjectMetadata {
	p := &metav1.PartialObjectMetadata{}
	p.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	return p
}

func indexEntry(o client.Object) []string {
	a := o.GetAnnotations()
	if a[policy.PolicyAnnotation] == "" || a[policy.WorkloadAnnotation] == "" {
		return nil
	}
	return []string{a[policy.PolicyAnnotation] + "/" + a[policy.WorkloadAnnotation]}
}

func indexConflictParties(o client.Object) []string {
	a := o.GetAnnotations()
	if a[policy.ConflictAnnotation] == "" {
		return nil
	}
	return append([]string{a[policy.PolicyAnnotation]}, policy.ConflictingPolicies(a[policy.ConflictAnnotation])...)
}

// statusDelay batches the pod events of a policy into one status write:
// a rollout creating hundreds of pods then costs a few writes, not one per
// pod, and the counts trail the pods by about this much.
const statusDelay = time.Second

// podEvents enqueues the policies a pod concerns, after statusDelay; the
// queue keeps one entry per policy, so a burst of pod events becomes one
// reconcile. An update that changes nothing the cache keeps (the pod's
// status, say) changes no policy's status and enqueues nothing.
func podEvents(policies ...handler.MapFunc) handler.EventHandler {
	enqueue := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, mapFunc := range policies {
			for _, req := range mapFunc(ctx, o) {
				q.AddAfter(req, statusDelay)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if sameMetadata(e.ObjectOld, e.ObjectNew) {
				return
			}
			enqueue(ctx, e.ObjectOld, q)
			enqueue(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
	}
}

// sameMetadata reports whether two versions of a pod agree on everything
// status reads.
func sameMetadata(a, b client.Object) bool {
	return maps.Equal(a.GetLabels(), b.GetLabels()) && maps.Equal(a.GetAnnotations(), b.GetAnnotations()) &&
		(a.GetDeletionTimestamp() == nil) == (b.GetDeletionTimestamp() == nil)
}

// policiesOfPod maps a pod to the policies of one kind its annotations name.
func policiesOfPod(cluster bool) handler.MapFunc {
	return func(_ context.Context, o client.Object) []reconcile.Request {
		refs := indexConflictParties(o)
		if p := o.GetAnnotations()[policy.PolicyAnnotation]; p != "" {
			refs = append(refs, p)
		}
		var out []reconcile.Request
		for _, s := range refs {
			ref, ok := policy.ParseRef(s)
			if !ok || ref.Cluster() != cluster {
				continue
			}
			req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}}
			if !slices.Contains(out, req) {
				out = append(out, req)
			}
		}
		return out
	}
}

// Reconcile recomputes one policy's status and writes it when it changed.
func (r *Reconciler[T]) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p := r.newPolicy()
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, r.forget(ctx, policy.Ref{Namespace: req.Namespace, Name: req.Name})
		}
		return reconcile.Result{}, err
	}
	ref := policy.Ref{Namespace: p.GetNamespace(), Name: p.GetName()}
	spec := p.PolicySpec()
	reach := policy.NewReach(ref, r.namespaceSelector(p))
	reaches := r.reaches(reach)

	drifts, err := r.drift(ctx, ref, reach)
	if err != nil {
		return reconcile.Result{}, err
	}

	next := p.PolicyStatus().DeepCopy()
	next.ObservedGeneration = p.GetGeneration()
	next.Workloads = nil
	for _, w := range spec.Workloads {
		pods := &metav1.PartialObjectMetadataList{}
		pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
		// Read-only: only the namespaces are read.
		if err := r.Client.List(ctx, pods, client.MatchingFields{entryIndex: ref.String() + "/" + w.Name}, client.UnsafeDisableDeepCopy); err != nil {
			return reconcile.Result{}, err
		}
		var matched int32
		for i := range pods.Items {
			ok, err := reaches(ctx, pods.Items[i].Namespace)
			if err != nil {
				return reconcile.Result{}, err
			}
			if ok {
				matched++
			}
		}
		next.Workloads = append(next.Workloads, v1alpha1.WorkloadStatus{Name: w.Name, MatchedPods: matched, DriftedPods: drifts.byEntry[w.Name]})
	}

	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonAccepted,
		Message: "the webhook applies this policy", ObservedGeneration: p.GetGeneration()}
	if r.nativeMode {
		ready.Message = "compiled into meshrole's MutatingAdmissionPolicies"
	}
	if problems := policy.Problems(spec, r.namespaceSelector(p)); len(problems) > 0 {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonInvalidSelector,
			strings.Join(problems, "; ")+": the affected workloads match no pod"
	} else if problems := policy.NativeProblems(spec); r.nativeMode && len(problems) > 0 {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonNeedsWebhook,
			strings.Join(problems, "; ")+"; native mode does not apply this policy at all"
	}
	meta.SetStatusCondition(&next.Conditions, ready)

	others, err := r.conflictingPolicies(ctx, ref, reaches)
	if err != nil {
		return reconcile.Result{}, err
	}
	conflict := metav1.Condition{Type: ConditionConflict, Status: metav1.ConditionFalse, Reason: ReasonNoConflict,
		Message: "no pod is matched by another policy that would write other keys at the same priority", ObservedGeneration: p.GetGeneration()}
	if len(others) > 0 {
		conflict.Status, conflict.Reason = metav1.ConditionTrue, ReasonConflicting
		conflict.Message = fmt.Sprintf("pods are also matched by %s, which would write other keys at the same priority; the winner is chosen by kind and name; give one policy a higher priority",
			strings.Join(others, ", "))
	}
	wasConflicting := meta.IsStatusConditionTrue(p.PolicyStatus().Conditions, ConditionConflict)
	meta.SetStatusCondition(&next.Conditions, conflict)

	// The condition in status is the episode's memory: it survives restarts
	// and changes of leader, so each episode raises one event.
	drifted := driftedCondition(ref, spec, drifts, p.GetGeneration())
	wasDrifted := meta.IsStatusConditionTrue(p.PolicyStatus().Conditions, ConditionDrifted)
	meta.SetStatusCondition(&next.Conditions, drifted)

	if apiequality.Semantic.DeepEqual(next, p.PolicyStatus()) {
		return reconcile.Result{}, nil
	}
	*p.PolicyStatus() = *next
	if err := r.Client.Status().Update(ctx, p); err != nil {
		if apierrors.IsConflict(err) {
			// The cache has not yet seen this controller's previous
			// write; by statusDelay it has. Not an error worth a log line.
			return reconcile.Result{RequeueAfter: statusDelay}, nil
		}
		return reconcile.Result{}, err
	}
	if len(others) > 0 && !wasConflicting {
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, ReasonConflicting, "Admit", conflict.Message)
	}
	if drifts.total > 0 && !wasDrifted {
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, ReasonPodsDrifted, "DetectDrift", "%s", drifted.Message)
	}
	return reconcile.Result{}, nil
}

// drift finds the drifted pods ref decides in the namespaces reach covers,
// and reports them in meshrole_drifted_pods, with the pods of those
// namespaces that no policy decides. A namespace ref no longer reaches has
// its NoPolicy series counted again.
func (r *Reconciler[T]) drift(ctx context.Context, ref policy.Ref, reach policy.Reach) (driftReport, error) {
	namespaces, err := reachedNamespaces(ctx, r.Client, ref, reach)
	if err != nil {
		return driftReport{}, err
	}
	store, err := policyStore(ctx, r.Client, namespaces, r.nativeMode)
	if err != nil {
		return driftReport{}, err
	}
	report, err := findDrift(ctx, r.Client, store, ref, namespaces)
	if err != nil {
		return driftReport{}, err
	}
	var left []string
	for _, ns := range r.drifted.namespacesOf(ref) {
		if _, ok := report.byNamespace[ns]; !ok {
			left = append(left, ns)
		}
	}
	orphaned, err := orphansIn(ctx, r.Client, left, r.nativeMode)
	if err != nil {
		return driftReport{}, err
	}
	maps.Copy(orphaned, report.orphaned)
	r.drifted.report(ref, report.byNamespace, orphaned)
	return report, nil
}

// forget removes a deleted policy's series from meshrole_drifted_pods and
// counts again the pods no policy decides where it reached, or where pods
// record it. The policies that decide its pods now are reconciled by their
// own watch on policy deletions.
func (r *Reconciler[T]) forget(ctx context.Context, ref policy.Ref) error {
	namespaces, err := namespacesRecording(ctx, r.Client, ref)
	if err != nil {
		return err
	}
	for _, ns := range r.drifted.namespacesOf(ref) {
		if !slices.Contains(namespaces, ns) {
			namespaces = append(namespaces, ns)
		}
	}
	orphaned, err := orphansIn(ctx, r.Client, namespaces, r.nativeMode)
	if err != nil {
		return err
	}
	r.drifted.report(ref, nil, orphaned)
	return nil
}

// conflictingPolicies lists the other policies that tie with ref, writing
// other keys, on some existing pod that ref can reach.
func (r *Reconciler[T]) conflictingPolicies(ctx context.Context, ref policy.Ref, reaches reachFunc) ([]string, error) {
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	// Read-only: only namespaces and annotations are read.
	if err := r.Client.List(ctx, pods, client.MatchingFields{conflictIndex: ref.String()}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var others []string
	add := func(party string) {
		if party != ref.String() && !slices.Contains(others, party) {
			others = append(others, party)
		}
	}
	for i := range pods.Items {
		if ok, err := reaches(ctx, pods.Items[i].Namespace); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		a := pods.Items[i].GetAnnotations()
		winner := a[policy.PolicyAnnotation]
		if winner != ref.String() {
			// ref lost on this pod: its conflict is with the winner.
			add(winner)
			continue
		}
		for _, loser := range policy.ConflictingPolicies(a[policy.ConflictAnnotation]) {
			add(loser)
		}
	}
	slices.Sort(others)
	return others, nil
}

// reachFunc reports whether a policy reaches a namespace; see policy.Reach.
type reachFunc func(ctx context.Context, namespace string) (bool, error)

// reaches returns the reachFunc of one reconcile: it reads each namespace's
// labels from the cache once.
func (r *Reconciler[T]) reaches(reach policy.Reach) reachFunc {
	seen := map[string]bool{}
	return func(ctx context.Context, namespace string) (bool, error) {
		if ok, known := seen[namespace]; known {
			return ok, nil
		}
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		err := r.Client.Get(ctx, client.ObjectKey{Name: namespace}, ns)
		if client.IgnoreNotFound(err) != nil {
			return false, err
		}
		ok := err == nil && reach.Namespace(namespace, labels.Set(ns.Labels))
		seen[namespace] = ok
		return ok, nil
	}
}
