// Package status keeps the status of meshrole's policies: which pods carry
// each workload entry, whether the policy compiles, and which other policies
// it conflicts with. It reads pods from a metadata-only informer cache, with
// indexes on meshrole's annotations, so it makes no API call per pod.
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
}

// SetupWithManager registers the pod indexes and the status controllers for
// both policy kinds. They are leader-elected: one replica writes. In native
// mode, Ready also reports what native mode refuses to compile.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, nativeMode bool) error {
	pods := podMetadata()
	if err := mgr.GetFieldIndexer().IndexField(ctx, pods, entryIndex, indexEntry); err != nil {
		return fmt.Errorf("indexing pods: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, pods, conflictIndex, indexConflictParties); err != nil {
		return fmt.Errorf("indexing pods: %w", err)
	}
	rec := mgr.GetEventRecorder("meshrole")

	namespaced := &Reconciler[*v1alpha1.MeshRolePolicy]{
		Client: mgr.GetClient(), Recorder: rec,
		newPolicy:         func() *v1alpha1.MeshRolePolicy { return &v1alpha1.MeshRolePolicy{} },
		namespaceSelector: func(*v1alpha1.MeshRolePolicy) *metav1.LabelSelector { return nil },
		nativeMode:        nativeMode,
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("meshrolepolicy-status").
		For(&v1alpha1.MeshRolePolicy{}).
		WatchesMetadata(&corev1.Pod{}, podEvents(policiesOfPod(false))).
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(namespacedPoliciesIn(mgr.GetClient())),
			builder.WithPredicates(labelsChanged())).
		Complete(namespaced); err != nil {
		return err
	}
	cluster := &Reconciler[*v1alpha1.ClusterMeshRolePolicy]{
		Client: mgr.GetClient(), Recorder: rec,
		newPolicy: func() *v1alpha1.ClusterMeshRolePolicy { return &v1alpha1.ClusterMeshRolePolicy{} },
		namespaceSelector: func(p *v1alpha1.ClusterMeshRolePolicy) *metav1.LabelSelector {
			return &p.Spec.NamespaceSelector
		},
		nativeMode: nativeMode,
	}
	return ctrl.NewControllerManagedBy(mgr).Named("clustermeshrolepolicy-status").
		For(&v1alpha1.ClusterMeshRolePolicy{}).
		WatchesMetadata(&corev1.Pod{}, podEvents(policiesOfPod(true))).
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(allClusterPolicies(mgr.GetClient())),
			builder.WithPredicates(labelsChanged())).
		Complete(cluster)
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
		list := &v1alpha1.MeshRolePolicyList{}
		if err := c.List(ctx, list, client.InNamespace(ns.GetName())); err != nil {
			return nil
		}
		out := make([]reconcile.Request, len(list.Items))
		for i := range list.Items {
			out[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
		}
		return out
	}
}

// allClusterPolicies maps a namespace to every ClusterMeshRolePolicy: any of
// them may start or stop selecting it.
func allClusterPolicies(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		list := &v1alpha1.ClusterMeshRolePolicyList{}
		if err := c.List(ctx, list); err != nil {
			return nil
		}
		out := make([]reconcile.Request, len(list.Items))
		for i := range list.Items {
			out[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
		}
		return out
	}
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

// podEvents enqueues the policies a pod names, after statusDelay; the queue
// keeps one entry per policy, so a burst of pod events becomes one reconcile.
func podEvents(policies handler.MapFunc) handler.EventHandler {
	enqueue := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range policies(ctx, o) {
			q.AddAfter(req, statusDelay)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.ObjectOld, q)
			enqueue(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
	}
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
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	ref := policy.Ref{Namespace: p.GetNamespace(), Name: p.GetName()}
	spec := p.PolicySpec()
	reaches := r.reaches(policy.NewReach(ref, r.namespaceSelector(p)))

	next := p.PolicyStatus().DeepCopy()
	next.ObservedGeneration = p.GetGeneration()
	next.Workloads = nil
	for _, w := range spec.Workloads {
		pods := &metav1.PartialObjectMetadataList{}
		pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
		if err := r.Client.List(ctx, pods, client.MatchingFields{entryIndex: ref.String() + "/" + w.Name}); err != nil {
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
		next.Workloads = append(next.Workloads, v1alpha1.WorkloadStatus{Name: w.Name, MatchedPods: matched})
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

	if apiequality.Semantic.DeepEqual(next, p.PolicyStatus()) {
		return reconcile.Result{}, nil
	}
	*p.PolicyStatus() = *next
	if err := r.Client.Status().Update(ctx, p); err != nil {
		return reconcile.Result{}, err
	}
	if len(others) > 0 && !wasConflicting {
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, ReasonConflicting, "Admit", conflict.Message)
	}
	return reconcile.Result{}, nil
}

// conflictingPolicies lists the other policies that tie with ref, writing
// other keys, on some existing pod that ref can reach.
func (r *Reconciler[T]) conflictingPolicies(ctx context.Context, ref policy.Ref, reaches reachFunc) ([]string, error) {
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := r.Client.List(ctx, pods, client.MatchingFields{conflictIndex: ref.String()}); err != nil {
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
