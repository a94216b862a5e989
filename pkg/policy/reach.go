package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Reach tells which namespaces a policy can decide for: those where meshrole
// is enabled and, for a MeshRolePolicy, its own namespace; for a
// ClusterMeshRolePolicy, those its namespaceSelector picks. A pod's
// meshrole.io/* annotations are evidence of a policy's verdict only where
// the policy can reach the pod: anywhere else they were written by someone
// else (meshrole never sees a pod in a namespace where it is not enabled),
// and status, conflicts and audit must not count them.
type Reach struct {
	ref               Ref
	namespaceSelector labels.Selector
}

// NewReach returns the reach of a policy; namespaceSelector is nil for a
// MeshRolePolicy. A selector that does not compile reaches nothing, as it
// matches nothing in the engine.
func NewReach(ref Ref, namespaceSelector *metav1.LabelSelector) Reach {
	r := Reach{ref: ref}
	if ref.Cluster() {
		s, err := metav1.LabelSelectorAsSelector(namespaceSelector)
		if err != nil || namespaceSelector == nil {
			s = labels.Nothing()
		}
		r.namespaceSelector = s
	}
	return r
}

// Namespace reports whether the policy can decide for pods in a namespace
// with these labels.
func (r Reach) Namespace(namespace string, namespaceLabels labels.Labels) bool {
	if namespaceLabels == nil || namespaceLabels.Get(EnabledNamespaceLabel) != "true" {
		return false
	}
	if !r.ref.Cluster() {
		return namespace == r.ref.Namespace
	}
	return r.namespaceSelector.Matches(namespaceLabels)
}
