package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
)

// Defaults of a Runner's zero fields.
const (
	DefaultTimeout       = 5 * time.Minute
	DefaultPollInterval  = time.Second
	DefaultRetryInterval = 5 * time.Second
	DefaultReportEvery   = 30 * time.Second
)

// Runner restarts the pods of a plan, one pod at a time in plan order. A
// Runner runs one plan at a time; to restart several owners at once, give
// each its own Runner and a Plan of that owner alone.
type Runner struct {
	// Client evicts and reads pods. It must see new pods promptly: a cached
	// client works if its cache watches pods.
	Client   client.Client
	Policies Decider
	// DryRun reports each step of the plan and writes nothing.
	DryRun bool
	// Timeout bounds each wait of one pod: the eviction, retried while a
	// PodDisruptionBudget refuses it, and then its replacement becoming Ready.
	Timeout time.Duration
	// PollInterval is how often a pod's replacement is looked for.
	PollInterval time.Duration
	// RetryInterval is the wait before retrying a refused eviction.
	RetryInterval time.Duration
	// ReportEvery repeats what a long wait is waiting for.
	ReportEvery time.Duration
	// WaitOwnerReady makes each eviction wait, within Timeout, until the
	// owner's other pods are Ready. Within a run they are, as each
	// replacement is waited for; it matters when a run starts after another
	// stopped at a replacement that never became Ready: an owner without a
	// PodDisruptionBudget then loses no second pod. The Automatic mode sets
	// it, as it runs again without a human.
	WaitOwnerReady bool
	// Progress receives one event per step; see Lines.
	Progress func(Event)

	start time.Time
}

// Event is one step of a rollout.
type Event struct {
	// Elapsed is the time since the rollout started.
	Elapsed time.Duration
	// Pod is "<namespace>/<name>" of the pod being restarted.
	Pod     string
	Owner   Owner
	Message string
}

func (e Event) String() string {
	return fmt.Sprintf("[%6.1fs] %s (%s): %s", e.Elapsed.Seconds(), e.Pod, e.Owner, e.Message)
}

// Lines is a Progress that writes each event as a line to w.
func Lines(w io.Writer) func(Event) {
	return func(e Event) { _, _ = fmt.Fprintln(w, e.String()) }
}

// Result counts what a rollout did.
type Result struct {
	// Restarted pods were evicted and replaced by a Ready pod without drift
	// (or, for a bare pod, are gone).
	Restarted int
	// Unchanged pods were gone, replaced or no longer drifted when their turn came.
	Unchanged int
}

// Run restarts the plan's pods: per owner, one pod at a time, each through
// the Eviction API, waiting until its replacement is Ready and carries its
// verdict before the next. It stops at the first pod whose eviction stays
// refused or whose replacement does not become Ready within Timeout or comes
// back drifted, and says why.
func (r *Runner) Run(ctx context.Context, plan *Plan) (Result, error) {
	r.start = time.Now()
	var result Result
	for _, o := range plan.Owners {
		for i := range o.Pods {
			t := &o.Pods[i]
			if r.DryRun {
				r.report(t, "would evict (dry run); drift: %s", driftText(t.Drift))
				continue
			}
			restarted, err := r.restart(ctx, t)
			if err != nil {
				return result, err
			}
			if restarted {
				result.Restarted++
			} else {
				result.Unchanged++
			}
		}
	}
	return result, nil
}

func (r *Runner) report(t *Target, format string, args ...any) {
	if r.Progress == nil {
		return
	}
	r.Progress(Event{Elapsed: time.Since(r.start), Pod: t.Key(), Owner: t.Owner, Message: fmt.Sprintf(format, args...)})
}

// restart evicts one pod and waits for its replacement. It reports false
// when the pod needed nothing when its turn came.
func (r *Runner) restart(ctx context.Context, t *Target) (bool, error) {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Name}, &pod)
	switch {
	case apierrors.IsNotFound(err):
		r.report(t, "gone already; next")
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading pod %s: %w", t.Key(), err)
	case pod.UID != t.UID:
		r.report(t, "replaced already; next")
		return false, nil
	}
	drift := r.drift(t, &pod)
	if len(drift) == 0 {
		r.report(t, "no longer drifted; next")
		return false, nil
	}
	if r.WaitOwnerReady && t.Owner.Kind != "" {
		if err := r.waitOwnerReady(ctx, t); err != nil {
			return false, err
		}
	}

	before, err := r.existing(ctx, t)
	if err != nil {
		return false, err
	}
	evicted, err := r.evict(ctx, t, drift)
	if err != nil || !evicted {
		return false, err
	}
	if t.Owner.Kind == "" {
		return true, r.waitGone(ctx, t)
	}
	return true, r.waitReplaced(ctx, t, before)
}

// drift is the pod's drift now.
func (r *Runner) drift(t *Target, pod *corev1.Pod) []policy.Drift {
	d := r.Policies.Decide(policy.Input{Namespace: t.Namespace, NamespaceLabels: labels.Set(t.NamespaceLabels), PodLabels: labels.Set(pod.Labels)})
	return policy.DetectDrift(pod.Labels, pod.Annotations, d)
}

// existing are the UIDs of the pods in t's namespace: a replacement is a
// pod that is not among them.
func (r *Runner) existing(ctx context.Context, t *Target) (map[types.UID]bool, error) {
	uids := map[types.UID]bool{t.UID: true}
	if t.Owner.Kind == "" || t.Owner.Kind == "StatefulSet" {
		return uids, nil
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(t.Namespace)); err != nil {
		return nil, fmt.Errorf("listing pods in %s: %w", t.Namespace, err)
	}
	for i := range pods.Items {
		uids[pods.Items[i].UID] = true
	}
	return uids, nil
}

// evict asks the Eviction API to evict the pod, retrying while a
// PodDisruptionBudget refuses it (429). It reports false when the pod turned
// out to be replaced already.
func (r *Runner) evict(ctx context.Context, t *Target, drift []policy.Drift) (bool, error) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: t.Name}}
	uid := t.UID
	deadline := time.Now().Add(r.timeout())
	r.report(t, "evicting, then waiting for %s; drift: %s", r.awaited(t), driftText(drift))
	for attempt := 1; ; attempt++ {
		eviction := &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: t.Name},
			// Only the pod that was checked: not a replacement of the same name.
			DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}},
		}
		err := r.Client.SubResource("eviction").Create(ctx, pod, eviction)
		switch {
		case err == nil:
			r.report(t, "evicted")
			return true, nil
		case apierrors.IsNotFound(err):
			r.report(t, "gone before its eviction")
			return true, nil
		case apierrors.IsConflict(err):
			r.report(t, "replaced before its eviction; next")
			return false, nil
		case !apierrors.IsTooManyRequests(err):
			return false, fmt.Errorf("evicting pod %s: %w", t.Key(), err)
		}
		wait := r.retryInterval()
		if time.Now().Add(wait).After(deadline) {
			return false, fmt.Errorf("evicting pod %s (%s): still refused after %s and %d attempts: %s; "+
				"its PodDisruptionBudget allows no disruption now: check that the owner's other pods are Ready, then run the rollout again",
				t.Key(), t.Owner, r.timeout(), attempt, apiMessage(err))
		}
		r.report(t, "eviction refused (attempt %d): %s; retrying in %s", attempt, apiMessage(err), wait)
		if err := sleep(ctx, wait); err != nil {
			return false, err
		}
	}
}

// awaited says what comes after a pod's eviction.
func (r *Runner) awaited(t *Target) string {
	if t.Owner.Kind == "" {
		return "it to be gone (no controller recreates it)"
	}
	return fmt.Sprintf("%s to replace it with a Ready pod that carries its verdict", t.Owner)
}

// waitOwnerReady waits until every other pod of t's owner is Ready.
func (r *Runner) waitOwnerReady(ctx context.Context, t *Target) error {
	return r.poll(ctx, t, func() (bool, string, error) {
		var pods corev1.PodList
		if err := r.Client.List(ctx, &pods, client.InNamespace(t.Namespace)); err != nil {
			return false, "", fmt.Errorf("listing pods in %s: %w", t.Namespace, err)
		}
		owners := ownerCache{c: r.Client, found: map[types.UID]Owner{}}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.UID == t.UID || p.DeletionTimestamp != nil || metav1.GetControllerOf(p) == nil || isReady(p) {
				continue
			}
			owner, err := owners.of(ctx, p)
			if err != nil {
				return false, "", err
			}
			if owner == t.Owner {
				return false, fmt.Sprintf("%s's pod %s to be Ready before evicting another (%s)", t.Owner, p.Name, podState(p)), nil
			}
		}
		return true, "", nil
	})
}

// waitGone waits until an evicted bare pod is deleted.
func (r *Runner) waitGone(ctx context.Context, t *Target) error {
	return r.poll(ctx, t, func() (bool, string, error) {
		var pod corev1.Pod
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Name}, &pod)
		switch {
		case apierrors.IsNotFound(err) || (err == nil && pod.UID != t.UID):
			r.report(t, "gone")
			return true, "", nil
		case err != nil:
			return false, "", fmt.Errorf("reading pod %s: %w", t.Key(), err)
		}
		return false, "it to be deleted", nil
	})
}

// waitReplaced waits for the owner's replacement of an evicted pod to be
// Ready, and fails as soon as the replacement is drifted.
func (r *Runner) waitReplaced(ctx context.Context, t *Target, before map[types.UID]bool) error {
	started := time.Now()
	var seen types.UID
	return r.poll(ctx, t, func() (bool, string, error) {
		pod, err := r.replacement(ctx, t, before)
		if err != nil {
			return false, "", err
		}
		if pod == nil {
			return false, fmt.Sprintf("%s to create a replacement", t.Owner), nil
		}
		if pod.UID != seen {
			seen = pod.UID
			if drift := r.drift(t, pod); len(drift) > 0 {
				return false, "", fmt.Errorf("pod %s's replacement %s came back drifted: %s; stopping: check that meshrole's webhook is running and its configuration sorts before Istio's (kubectl meshrole audit)",
					t.Key(), pod.Name, driftText(drift))
			}
			r.report(t, "replacement %s created with its verdict", pod.Name)
		}
		if isReady(pod) {
			r.report(t, "replacement %s is Ready after %s", pod.Name, time.Since(started).Round(100*time.Millisecond))
			return true, "", nil
		}
		return false, fmt.Sprintf("replacement %s to be Ready (%s)", pod.Name, podState(pod)), nil
	})
}

// replacement is the owner's new pod for t, or nil: for a StatefulSet the
// pod of the same name with a new UID, for other owners a pod of the same
// owner that was not there before the eviction.
func (r *Runner) replacement(ctx context.Context, t *Target, before map[types.UID]bool) (*corev1.Pod, error) {
	if t.Owner.Kind == "StatefulSet" {
		var pod corev1.Pod
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Name}, &pod)
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("reading pod %s: %w", t.Key(), err)
		case pod.UID == t.UID || pod.DeletionTimestamp != nil:
			return nil, nil
		}
		return &pod, nil
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(t.Namespace)); err != nil {
		return nil, fmt.Errorf("listing pods in %s: %w", t.Namespace, err)
	}
	// A Deployment may replace the pod from another of its ReplicaSets.
	owners := ownerCache{c: r.Client, found: map[types.UID]Owner{}}
	var found []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if before[p.UID] || p.DeletionTimestamp != nil || metav1.GetControllerOf(p) == nil {
			continue
		}
		owner, err := owners.of(ctx, p)
		if err != nil {
			return nil, err
		}
		if owner == t.Owner {
			found = append(found, p)
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	// The oldest: the one the owner created first for the evicted pod.
	return slices.MinFunc(found, func(a, b *corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	}), nil
}

// poll calls check every PollInterval until it is done, fails, or Timeout
// passes. check says what it is waiting for; that is reported when it
// changes and every ReportEvery.
func (r *Runner) poll(ctx context.Context, t *Target, check func() (done bool, waitingFor string, err error)) error {
	deadline := time.Now().Add(r.timeout())
	var last string
	var lastReport time.Time
	for {
		done, waitingFor, err := check()
		if err != nil || done {
			return err
		}
		if waitingFor != last || time.Since(lastReport) >= r.reportEvery() {
			r.report(t, "waiting for %s", waitingFor)
			last, lastReport = waitingFor, time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s (%s): gave up after %s waiting for %s; stopping so that no more of its pods go down",
				t.Key(), t.Owner, r.timeout(), waitingFor)
		}
		if err := sleep(ctx, r.pollInterval()); err != nil {
			return err
		}
	}
}

func isReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podState is a pod's phase and, when it says something, why it is not Ready.
func podState(pod *corev1.Pod) string {
	state := "phase " + string(pod.Status.Phase)
	if pod.Status.Phase == "" {
		state = "no phase yet"
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue {
			state += ", Ready " + string(c.Status)
			if c.Reason != "" {
				state += ": " + c.Reason
			}
		}
	}
	return state
}

// apiMessage is an API error's message, without the client's prefixes.
func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Message != "" {
		return status.Status().Message
	}
	return err.Error()
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

func (r *Runner) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

func (r *Runner) pollInterval() time.Duration {
	if r.PollInterval > 0 {
		return r.PollInterval
	}
	return DefaultPollInterval
}

func (r *Runner) retryInterval() time.Duration {
	if r.RetryInterval > 0 {
		return r.RetryInterval
	}
	return DefaultRetryInterval
}

func (r *Runner) reportEvery() time.Duration {
	if r.ReportEvery > 0 {
		return r.ReportEvery
	}
	return DefaultReportEvery
}
