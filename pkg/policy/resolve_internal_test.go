package policy

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// The resolver's memory is bounded by namespaces seen recently, and grows
// with the distinct label sets, not with the namespaces sharing one.
func TestClusterResolverBounded(t *testing.T) {
	s := NewStore()
	s.SetClusterMeshRolePolicy(&v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "c"},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{
			PolicySpec:        v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{Name: "w", Role: v1alpha1.RoleClientStateless}}},
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}},
		},
	})
	r := s.clusterFor
	for i := range maxResolvedNamespaces + 10 {
		if got := r.selecting(fmt.Sprintf("ns-%d", i), labels.Set{"team": "shop"}); len(got) != 1 {
			t.Fatalf("namespace %d: %d cluster policies, want 1", i, len(got))
		}
	}
	if len(r.byNamespace) > maxResolvedNamespaces || len(r.byLabels) != 1 {
		t.Errorf("%d namespaces and %d label sets kept; want at most %d and 1", len(r.byNamespace), len(r.byLabels), maxResolvedNamespaces)
	}
}
