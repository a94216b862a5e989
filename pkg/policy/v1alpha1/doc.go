// Package v1alpha1 holds meshrole's policy API: MeshRolePolicy and
// ClusterMeshRolePolicy map workloads to the roles peer-stateful and
// client-stateless.
//
// +kubebuilder:object:generate=true
// +groupName=meshrole.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of meshrole's policies.
	GroupVersion = schema.GroupVersion{Group: "meshrole.io", Version: "v1alpha1"}

	// SchemeBuilder registers the policy kinds with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the policy kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MeshRolePolicy{}, &MeshRolePolicyList{},
		&ClusterMeshRolePolicy{}, &ClusterMeshRolePolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
