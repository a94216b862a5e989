package main

import (
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshrole/meshrole/test/harness"
)

// TestReadExampleHoldsThePolicyBack checks the split the story depends on:
// examples/eureka's workloads are applied first and its policy later.
func TestReadExampleHoldsThePolicyBack(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ex, err := readExample(filepath.Join(root, "examples", "eureka"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ex.policyFiles, []string{"policy.yaml"}) || len(ex.policies) != 1 || ex.policies[0].GetKind() != "MeshRolePolicy" {
		t.Errorf("policies %v from %v, want the MeshRolePolicy of policy.yaml", ex.policies, ex.policyFiles)
	}
	var kinds []string
	for _, o := range ex.others {
		kinds = append(kinds, o.GetKind())
	}
	slices.Sort(kinds)
	if want := []string{"Deployment", "Namespace", "Service", "StatefulSet"}; !slices.Equal(kinds, want) {
		t.Errorf("applied before the policy: %v, want %v", kinds, want)
	}
	if slices.Contains(ex.otherFiles, "policy.yaml") {
		t.Errorf("files applied before the policy %v include policy.yaml", ex.otherFiles)
	}
	for _, w := range workloads {
		if !slices.ContainsFunc(ex.others, func(o *unstructured.Unstructured) bool { return o.GetName() == w.app }) {
			t.Errorf("the demo waits for %d pods of %s, which examples/eureka does not define", w.pods, w.app)
		}
	}
}
