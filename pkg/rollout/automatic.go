package rollout

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Event reasons of the Automatic mode, on the policy.
const (
	ReasonRolloutStarted  = "RolloutStarted"
	ReasonRolloutFinished = "RolloutFinished"
	ReasonRolloutStopped  = "RolloutStopped"
)

// Defaults of an Automatic's zero fields.
const (
	DefaultSettle     = 5 * time.Second
	DefaultBackoff    = time.Minute
	DefaultMaxBackoff = time.Hour
)

// Automatic is the Automatic mode: it restarts the drifted pods of the
// policies whose spec.rollout is Automatic, with the same Find, NewPlan and
// Runner as kubectl meshrole rollout, and never bare pods. It restarts only
// the pods such a policy decides now. Its requests are policies: namespace
// and name, the namespace empty for a ClusterMeshRolePolicy.
//
// When a rollout stops (an eviction refused for Timeout, a replacement not
// Ready in time or drifted), it records why on the policy and evicts nothing
// of that policy's for Backoff, doubled at each stop up to MaxBackoff, or
// until the policy's generation changes.
type Automatic struct {
	// Policies reads both policy kinds and namespace metadata: the manager's
	// cache.
	Policies client.Reader
	// Client reads pods and their owners and evicts pods. It should read
	// from the API server: each step of a rollout reads what the owner just
	// did, and a cache of whole pods would hold every pod of the cluster.
	Client   client.Client
	Recorder events.EventRecorder
	// Runner holds the Runner settings (Timeout, intervals); Client,
	// Policies and Progress are set for each rollout, and WaitOwnerReady:
	// after a stop, the next try evicts nothing of an owner whose
	// replacement is still not Ready.
	Runner Runner
	// Settle is how long a change waits before it is looked at: a burst of
	// pod events becomes one look, and every replica's cache has a changed
	// policy before a replacement is admitted with it.
	Settle     time.Duration
	Backoff    time.Duration
	MaxBackoff time.Duration

	// stopped are the policies whose last rollout stopped. Reconcile runs
	// one request at a time (SetupWithManager), so no lock.
	stopped map[policy.Ref]stop
	// automatic are the Automatic policies, kept by the policy events.
	automatic automaticSet
}

// automaticSet is the Automatic policies and the namespaces they reach. An
// event looks at them only: listing every policy at each pod creation or
// policy event costs a copy of each, at 10,000 policies tens of megabytes
// per event, and a quadratic start-up.
type automaticSet struct {
	mu    sync.Mutex
	reach map[policy.Ref]policy.Reach
}

// track records p's rollout mode; deleted forgets it.
func (s *automaticSet) track(p policyObject, deleted bool) {
	ref := policy.Ref{Namespace: p.GetNamespace(), Name: p.GetName()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if deleted || p.PolicySpec().Rollout != v1alpha1.RolloutAutomatic {
		delete(s.reach, ref)
		return
	}
	if s.reach == nil {
		s.reach = map[policy.Ref]policy.Reach{}
	}
	var selector *metav1.LabelSelector
	if c, ok := p.(*v1alpha1.ClusterMeshRolePolicy); ok {
		selector = &c.Spec.NamespaceSelector
	}
	s.reach[ref] = policy.NewReach(ref, selector)
}

// requests lists the Automatic policies whose reach keep accepts (all of
// them when keep is nil).
func (s *automaticSet) requests(keep func(policy.Reach) bool) []reconcile.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []reconcile.Request
	for ref, r := range s.reach {
		if keep == nil || keep(r) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}})
		}
	}
	return out
}

func (s *automaticSet) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reach) == 0
}

// stop is a policy's last stopped rollout.
type stop struct {
	generation int64
	stops      int
	until      time.Time
}

// policyObject is either policy kind.
type policyObject interface {
	client.Object
	PolicySpec() *v1alpha1.PolicySpec
}

// SetupWithManager registers the Automatic mode as a controller of mgr:
// leader-elected, one rollout at a time, started by policy changes, pod
// creations and namespace label changes, each after Settle.
func (a *Automatic) SetupWithManager(mgr ctrl.Manager) error {
	policyChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).Named("automatic-rollout").
		// Any policy's change can change what an Automatic policy decides.
		Watches(&v1alpha1.MeshRolePolicy{}, a.enqueue(a.everyAutomaticPolicy), policyChanged).
		Watches(&v1alpha1.ClusterMeshRolePolicy{}, a.enqueue(a.everyAutomaticPolicy), policyChanged).
		// Pods drift at their creation: admitted before meshrole or their
		// policy, or injected by Istio. Status updates are left out.
		WatchesMetadata(&corev1.Pod{}, a.enqueue(a.podPolicies), builder.WithPredicates(podCreated())).
		WatchesMetadata(&corev1.Namespace{}, a.enqueue(a.namespacePolicies), builder.WithPredicates(labelsChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1, NeedLeaderElection: ptr.To(true)}).
		Complete(a)
}

func podCreated() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// labelsChanged passes namespace label changes: a namespace enabled, or
// newly selected by a cluster policy.
func labelsChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
		},
	}
}

// enqueue adds what policies returns after Settle. The queue holds a
// request once, so a burst of events is one reconcile.
func (a *Automatic) enqueue(policies func(ctx context.Context, o client.Object, deleted bool) []reconcile.Request) handler.EventHandler {
	add := func(ctx context.Context, o client.Object, deleted bool, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range policies(ctx, o, deleted) {
			q.AddAfter(req, a.settle())
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, false, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.ObjectNew, false, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, true, q)
		},
	}
}

// everyAutomaticPolicy records a policy event and maps it to the policy
// itself (so that a policy switched to Manual or deleted forgets its stops)
// and every Automatic policy: any change can change what they decide.
func (a *Automatic) everyAutomaticPolicy(_ context.Context, changed client.Object, deleted bool) []reconcile.Request {
	if p, ok := changed.(policyObject); ok {
		a.automatic.track(p, deleted)
	}
	out := []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(changed)}}
	for _, req := range a.automatic.requests(nil) {
		if req != out[0] {
			out = append(out, req)
		}
	}
	return out
}

func (a *Automatic) podPolicies(ctx context.Context, pod client.Object, _ bool) []reconcile.Request {
	return a.automaticPoliciesIn(ctx, pod.GetNamespace())
}

func (a *Automatic) namespacePolicies(ctx context.Context, ns client.Object, _ bool) []reconcile.Request {
	return a.automaticPoliciesIn(ctx, ns.GetName())
}

// automaticPoliciesIn lists the Automatic policies that reach namespace.
func (a *Automatic) automaticPoliciesIn(ctx context.Context, namespace string) []reconcile.Request {
	if a.automatic.empty() {
		return nil // the usual case: no namespace read per pod
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := a.Policies.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		return nil
	}
	return a.automatic.requests(func(r policy.Reach) bool { return r.Namespace(namespace, labels.Set(ns.Labels)) })
}

// listPolicies lists every MeshRolePolicy and ClusterMeshRolePolicy.
func (a *Automatic) listPolicies(ctx context.Context) (*v1alpha1.MeshRolePolicyList, *v1alpha1.ClusterMeshRolePolicyList, error) {
	namespaced := &v1alpha1.MeshRolePolicyList{}
	if err := a.Policies.List(ctx, namespaced); err != nil {
		return nil, nil, fmt.Errorf("listing MeshRolePolicies: %w", err)
	}
	cluster := &v1alpha1.ClusterMeshRolePolicyList{}
	if err := a.Policies.List(ctx, cluster); err != nil {
		return nil, nil, fmt.Errorf("listing ClusterMeshRolePolicies: %w", err)
	}
	return namespaced, cluster, nil
}

// Reconcile converges the drifted pods of one Automatic policy, unless its
// last rollout stopped and it is backing off.
func (a *Automatic) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ref := policy.Ref{Namespace: req.Namespace, Name: req.Name}
	log := ctrl.LoggerFrom(ctx).WithValues("policy", ref.String())
	p, err := a.policy(ctx, ref)
	if err != nil {
		return reconcile.Result{}, err
	}
	if p == nil || p.PolicySpec().Rollout != v1alpha1.RolloutAutomatic {
		delete(a.stopped, ref)
		return reconcile.Result{}, nil
	}
	last, stoppedBefore := a.stopped[ref]
	if stoppedBefore && last.generation != p.GetGeneration() {
		// The policy changed since: what stopped may be fixed.
		stoppedBefore = false
		delete(a.stopped, ref)
	}
	if wait := time.Until(last.until); stoppedBefore && wait > 0 {
		log.V(1).Info("automatic rollout backing off after a stop", "retryIn", wait.Round(time.Second))
		return reconcile.Result{RequeueAfter: wait}, nil
	}

	store, err := a.decider(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	scope := Scope{Namespace: ref.Namespace, AllNamespaces: ref.Cluster(), Policy: &ref, DecidedNow: true}
	targets, err := Find(ctx, a.Client, store, scope)
	var notEnabled *NotEnabledError
	if errors.As(err, &notEnabled) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	// Bare pods never: nothing would recreate them.
	plan := NewPlan(targets, PlanOptions{})
	for _, s := range plan.Skipped {
		log.V(1).Info("drifted pod left alone", "pod", s.Target.Key(), "owner", s.Target.Owner.String(), "why", s.Why)
	}
	if plan.Len() == 0 {
		delete(a.stopped, ref)
		return reconcile.Result{}, nil
	}

	a.Recorder.Eventf(p, nil, corev1.EventTypeNormal, ReasonRolloutStarted, "Rollout", "%s",
		eventNote(fmt.Sprintf("restarting %d drifted pods (%s), one pod per owner at a time, through the Eviction API", plan.Len(), planSummary(plan))))
	log.Info("automatic rollout started", "pods", plan.Len(), "plan", planSummary(plan))
	runner := a.Runner
	runner.Client, runner.Policies, runner.WaitOwnerReady = a.Client, store, true
	runner.Progress = func(e Event) {
		log.Info(e.Message, "pod", e.Pod, "owner", e.Owner.String(), "elapsed", e.Elapsed.Round(100*time.Millisecond).String())
	}
	started := time.Now()
	result, err := runner.Run(ctx, plan)
	if err != nil && ctx.Err() != nil {
		// Shutting down or no longer the leader: the next leader looks again.
		log.Info("automatic rollout interrupted", "restarted", result.Restarted, "reason", ctx.Err().Error())
		return reconcile.Result{}, nil
	}
	if err != nil {
		s := stop{generation: p.GetGeneration(), stops: last.stops + 1}
		wait := a.backoff(s.stops)
		s.until = time.Now().Add(wait)
		if a.stopped == nil {
			a.stopped = map[policy.Ref]stop{}
		}
		a.stopped[ref] = s
		message := fmt.Sprintf("stopped after %d pods restarted: %v; no pod of this policy is evicted for %s or until the policy changes (kubectl meshrole rollout --policy %s retries at once)",
			result.Restarted, err, wait, ref)
		a.Recorder.Eventf(p, nil, corev1.EventTypeWarning, ReasonRolloutStopped, "Rollout", "%s", eventNote(message))
		log.Info("automatic rollout stopped", "restarted", result.Restarted, "error", err.Error(), "stops", s.stops, "retryIn", wait.String())
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	delete(a.stopped, ref)
	took := time.Since(started).Round(time.Second)
	a.Recorder.Eventf(p, nil, corev1.EventTypeNormal, ReasonRolloutFinished, "Rollout", "%s",
		fmt.Sprintf("%d pods restarted, %d no longer needed it, in %s", result.Restarted, result.Unchanged, took))
	log.Info("automatic rollout finished", "restarted", result.Restarted, "unchanged", result.Unchanged, "took", took.String())
	return reconcile.Result{}, nil
}

// policy reads the policy ref names; nil when it does not exist.
func (a *Automatic) policy(ctx context.Context, ref policy.Ref) (policyObject, error) {
	var p policyObject = &v1alpha1.MeshRolePolicy{}
	if ref.Cluster() {
		p = &v1alpha1.ClusterMeshRolePolicy{}
	}
	err := a.Policies.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, p)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading policy %s: %w", ref, err)
	}
	return p, nil
}

// decider is every policy now, in a Store: the verdicts the webhook gives,
// from the same cache.
func (a *Automatic) decider(ctx context.Context) (*policy.Store, error) {
	namespaced, cluster, err := a.listPolicies(ctx)
	if err != nil {
		return nil, err
	}
	store := policy.NewStore()
	for i := range namespaced.Items {
		store.SetMeshRolePolicy(&namespaced.Items[i])
	}
	for i := range cluster.Items {
		store.SetClusterMeshRolePolicy(&cluster.Items[i])
	}
	return store, nil
}

// planSummary names the owners of a plan and their pod counts, briefly
// enough for an event.
func planSummary(plan *Plan) string {
	const most = 5
	var parts []string
	for i, o := range plan.Owners {
		if i == most {
			parts = append(parts, fmt.Sprintf("%d more owners", len(plan.Owners)-most))
			break
		}
		parts = append(parts, fmt.Sprintf("%s/%s: %d", o.Owner.Namespace, o.Owner, len(o.Pods)))
	}
	return strings.Join(parts, ", ")
}

// noteLimit is the most bytes an event's note may have; the API server
// refuses a longer one, and the event is lost.
const noteLimit = 1024

// eventNote is s, cut to noteLimit bytes on a character boundary. The log
// has the whole of it.
func eventNote(s string) string {
	if len(s) <= noteLimit {
		return s
	}
	const more = "..."
	cut := noteLimit - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

// backoff is the wait after the n-th stop in a row: Backoff, doubled each
// time, at most MaxBackoff.
func (a *Automatic) backoff(n int) time.Duration {
	wait, limit := a.Backoff, a.MaxBackoff
	if wait <= 0 {
		wait = DefaultBackoff
	}
	if limit <= 0 {
		limit = DefaultMaxBackoff
	}
	for i := 1; i < n && wait < limit; i++ {
		wait *= 2
	}
	return min(wait, limit)
}

func (a *Automatic) settle() time.Duration {
	if a.Settle > 0 {
		return a.Settle
	}
	return DefaultSettle
}
