// Package rollout converges running pods on the current policies: it finds
// the pods that have drifted from what meshrole would give them now
// (policy.DetectDrift), plans their restart per owner, and restarts them
// through the Eviction API one pod at a time per owner, waiting for each
// replacement to be Ready and to carry its verdict. The kubectl plugin and
// the in-cluster manager both run it.
package rollout

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
)

// Decider is the policy engine; *policy.Store is one.
type Decider interface {
	Decide(policy.Input) policy.Decision
}

// Scope is which pods a rollout looks at.
type Scope struct {
	// Namespace limits the rollout to one namespace. Exactly one of
	// Namespace and AllNamespaces must be set.
	Namespace string
	// AllNamespaces looks at every enabled namespace.
	AllNamespaces bool
	// Policy, when set, limits the rollout to the pods that policy decides
	// now or that record it as their verdict.
	Policy *policy.Ref
	// DecidedNow, with Policy, leaves out the pods that only record Policy
	// as their verdict: the pods another policy, or none, decides now belong
	// to whoever owns that verdict. The Automatic mode restarts only what its
	// policy decides.
	DecidedNow bool
}

// NotEnabledError is Find's error for a namespace meshrole does not see.
type NotEnabledError struct {
	Namespace string
}

func (e *NotEnabledError) Error() string {
	return fmt.Sprintf("namespace %s is not enabled (label %s=true): meshrole never sees its pods, so restarting them would change nothing",
		e.Namespace, policy.EnabledNamespaceLabel)
}

// systemNamespace is never sent to the webhook, even when labelled (the
// chart's namespaceSelector), so its pods can never get a verdict.
const systemNamespace = "kube-system"

// Owner is the workload that replaces a pod: a StatefulSet, a DaemonSet, a
// Deployment (for pods of its ReplicaSets), a ReplicaSet without a
// Deployment, or another controller. Kind is empty for a pod without a
// controller.
type Owner struct {
	Namespace string
	Kind      string
	Name      string
}

func (o Owner) String() string {
	if o.Kind == "" {
		return "no controller"
	}
	return o.Kind + " " + o.Name
}

// Target is one drifted pod.
type Target struct {
	Namespace string
	Name      string
	UID       types.UID
	Owner     Owner
	// Ordinal is a StatefulSet pod's ordinal, -1 for other pods.
	Ordinal int
	// NamespaceLabels are the labels the verdict was decided with.
	NamespaceLabels map[string]string
	Drift           []policy.Drift
}

// Key is "<namespace>/<name>".
func (t *Target) Key() string { return t.Namespace + "/" + t.Name }

// Find lists the drifted pods in scope, in enabled namespaces only, with
// their owners. It reads whole pods (owners and phase are not metadata that
// drift needs, but a rollout does) and the ReplicaSets that own them.
// Finished pods and pods being deleted are left out: nothing restarts them.
func Find(ctx context.Context, c client.Reader, policies Decider, scope Scope) ([]Target, error) {
	namespaces, err := enabledNamespaces(ctx, c, scope)
	if err != nil {
		return nil, err
	}
	owners := ownerCache{c: c, found: map[types.UID]Owner{}}
	var targets []Target
	for i := range namespaces {
		ns := &namespaces[i]
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
			return nil, fmt.Errorf("listing pods in %s: %w", ns.Name, err)
		}
		for j := range pods.Items {
			pod := &pods.Items[j]
			if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			d := policies.Decide(policy.Input{Namespace: ns.Name, NamespaceLabels: labels.Set(ns.Labels), PodLabels: labels.Set(pod.Labels)})
			if scope.Policy != nil && !decidedBy(pod, d, *scope.Policy, scope.DecidedNow) {
				continue
			}
			drift := policy.DetectDrift(pod.Labels, pod.Annotations, d)
			if len(drift) == 0 {
				continue
			}
			owner, err := owners.of(ctx, pod)
			if err != nil {
				return nil, err
			}
			t := Target{
				Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
				Owner: owner, Ordinal: -1, NamespaceLabels: ns.Labels, Drift: drift,
			}
			if owner.Kind == "StatefulSet" {
				t.Ordinal = ordinal(pod.Name, owner.Name)
			}
			targets = append(targets, t)
		}
	}
	return targets, nil
}

// decidedBy reports whether ref decides the pod now or, unless now, is the
// verdict the pod records.
func decidedBy(pod *corev1.Pod, d policy.Decision, ref policy.Ref, now bool) bool {
	if d.Winner != nil && d.Winner.Policy == ref {
		return true
	}
	return !now && pod.Annotations[policy.PolicyAnnotation] == ref.String()
}

func enabledNamespaces(ctx context.Context, c client.Reader, scope Scope) ([]corev1.Namespace, error) {
	switch {
	case scope.AllNamespaces && scope.Namespace != "":
		return nil, fmt.Errorf("a rollout's scope is one namespace or all of them, not both")
	case scope.AllNamespaces:
		var list corev1.NamespaceList
		if err := c.List(ctx, &list, client.MatchingLabels{policy.EnabledNamespaceLabel: "true"}); err != nil {
			return nil, fmt.Errorf("listing namespaces: %w", err)
		}
		var out []corev1.Namespace
		for _, ns := range list.Items {
			if ns.Name != systemNamespace {
				out = append(out, ns)
			}
		}
		return out, nil
	case scope.Namespace == "":
		return nil, fmt.Errorf("a rollout needs a namespace, or all namespaces")
	}
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: scope.Namespace}, &ns); err != nil {
		return nil, fmt.Errorf("reading namespace %s: %w", scope.Namespace, err)
	}
	if ns.Labels[policy.EnabledNamespaceLabel] != "true" || ns.Name == systemNamespace {
		return nil, &NotEnabledError{Namespace: ns.Name}
	}
	return []corev1.Namespace{ns}, nil
}

// ownerCache resolves pods' owners, reading each ReplicaSet once.
type ownerCache struct {
	c     client.Reader
	found map[types.UID]Owner
}

func (oc *ownerCache) of(ctx context.Context, pod *corev1.Pod) (Owner, error) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return Owner{Namespace: pod.Namespace}, nil
	}
	owner := Owner{Namespace: pod.Namespace, Kind: ref.Kind, Name: ref.Name}
	if ref.Kind != "ReplicaSet" || !strings.HasPrefix(ref.APIVersion, "apps/") {
		return owner, nil
	}
	if o, ok := oc.found[ref.UID]; ok {
		return o, nil
	}
	var rs appsv1.ReplicaSet
	err := oc.c.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: ref.Name}, &rs)
	switch {
	case apierrors.IsNotFound(err):
		// Being deleted with its pods; the ReplicaSet is all there is to name.
	case err != nil:
		return Owner{}, fmt.Errorf("reading ReplicaSet %s/%s, the owner of pod %s: %w", pod.Namespace, ref.Name, pod.Name, err)
	default:
		if d := metav1.GetControllerOf(&rs); d != nil && d.Kind == "Deployment" {
			owner = Owner{Namespace: pod.Namespace, Kind: "Deployment", Name: d.Name}
		}
	}
	oc.found[ref.UID] = owner
	return owner, nil
}

// ordinal is a StatefulSet pod's ordinal, from its name "<set>-<ordinal>";
// -1 if the name is not of that form.
func ordinal(pod, statefulSet string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(pod, statefulSet+"-"))
	if err != nil || !strings.HasPrefix(pod, statefulSet+"-") || n < 0 {
		return -1
	}
	return n
}
