package native

import (
	"maps"
	"slices"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

func nsObject(ns string, phase Phase, since time.Time) admissionregistrationv1.MutatingAdmissionPolicy {
	return admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{
		Name:        NamespaceObjectPrefix + ns,
		Labels:      map[string]string{ManagedByLabel: ManagedByValue, ScopeLabel: ns},
		Annotations: map[string]string{PhaseAnnotation: string(phase), PhaseSinceAnnotation: since.UTC().Format(time.RFC3339Nano)},
	}}
}

// TestCoverageHandsOverInSteps walks a namespace through getting its first
// MeshRolePolicy and losing its last, one settle period per step.
func TestCoverageHandsOverInSteps(t *testing.T) {
	r := &Reconciler{Settle: 3 * time.Second}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	withShop := policy.NewStore()
	withShop.SetMeshRolePolicy(&v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"},
		Spec:       v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{Name: "w", Role: v1alpha1.RolePeerStateful}}},
	})
	planWith, planWithout := withShop.Plan(), policy.NewStore().Plan()

	keys := func(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
	for _, tc := range []struct {
		name          string
		plan          *policy.Plan
		existing      []admissionregistrationv1.MutatingAdmissionPolicy
		arriving      []string
		retiring      []string
		wantRequeue   bool
		wantRequeueIn time.Duration
	}{
		{"first policy: arriving, look again after a settle period", &planWith, nil, []string{"shop"}, nil, true, 3 * time.Second},
		{"arriving for 1s: still arriving", &planWith, []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", PhaseArriving, now.Add(-time.Second))}, []string{"shop"}, nil, true, 2 * time.Second},
		{"arriving for 3s: its own object alone decides", &planWith, []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", PhaseArriving, now.Add(-3*time.Second))}, nil, nil, false, 0},
		{"owner: steady", &planWith, []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", PhaseOwner, now.Add(-time.Hour))}, nil, nil, false, 0},
		{"last policy gone: retiring", &planWithout, []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", PhaseOwner, now.Add(-time.Hour))}, nil, []string{"shop"}, true, 3 * time.Second},
		{"retiring for 1s: still retiring", &planWithout, []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", PhaseRetiring, now.Add(-time.Second))}, nil, []string{"shop"}, true, 2 * time.Second},
		{"retiring for 3s: gone", &planWithout, []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", PhaseRetiring, now.Add(-3*time.Second))}, nil, nil, false, 0},
		{"a policy again while retiring: arriving again", &planWith, []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", PhaseRetiring, now.Add(-time.Second))}, []string{"shop"}, nil, true, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cov, wait := r.coverage(tc.plan, tc.existing, now)
			if got := keys(cov.Arriving); !slices.Equal(got, tc.arriving) {
				t.Errorf("arriving %v, want %v", got, tc.arriving)
			}
			if got := keys(cov.Retiring); !slices.Equal(got, tc.retiring) {
				t.Errorf("retiring %v, want %v", got, tc.retiring)
			}
			if (wait > 0) != tc.wantRequeue || (tc.wantRequeue && wait != tc.wantRequeueIn) {
				t.Errorf("requeue after %v, want %v", wait, tc.wantRequeueIn)
			}
		})
	}
}
