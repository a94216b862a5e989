package native

import (
	"encoding/json"
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
	phases, _ := json.Marshal(map[string]PhaseState{ns: {Phase: phase, Since: since.UTC().Format(time.RFC3339Nano)}})
	return admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{
		Name:        BucketOf(ns),
		Labels:      map[string]string{ManagedByLabel: ManagedByValue},
		Annotations: map[string]string{PhasesAnnotation: string(phases)},
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
	ago := func(phase Phase, d time.Duration) []admissionregistrationv1.MutatingAdmissionPolicy {
		return []admissionregistrationv1.MutatingAdmissionPolicy{nsObject("shop", phase, now.Add(-d))}
	}
	shop := []string{"shop"}
	for _, tc := range []struct {
		name                                   string
		plan                                   *policy.Plan
		existing                               []admissionregistrationv1.MutatingAdmissionPolicy
		arriving, retiring, released, withheld []string
		requeueIn                              time.Duration
	}{
		{"first policy: arriving, look again after a settle period", &planWith, nil, shop, nil, nil, nil, 3 * time.Second},
		{"arriving for 1s: still arriving", &planWith, ago(PhaseArriving, time.Second), shop, nil, nil, nil, 2 * time.Second},
		{"arriving for 3s: its bucket alone decides", &planWith, ago(PhaseArriving, 3*time.Second), nil, nil, nil, nil, 0},
		{"owner: steady", &planWith, ago(PhaseOwner, time.Hour), nil, nil, nil, nil, 0},
		{"last policy gone: retiring", &planWithout, ago(PhaseOwner, time.Hour), nil, shop, nil, nil, 3 * time.Second},
		{"retiring for 1s: still retiring", &planWithout, ago(PhaseRetiring, time.Second), nil, shop, nil, nil, 2 * time.Second},
		{"retiring for 3s: released to the cluster object", &planWithout, ago(PhaseRetiring, 3*time.Second), nil, nil, shop, nil, 3 * time.Second},
		{"released for 1s: still released", &planWithout, ago(PhaseReleased, time.Second), nil, nil, shop, nil, 2 * time.Second},
		{"released for 3s: gone", &planWithout, ago(PhaseReleased, 3*time.Second), nil, nil, nil, nil, 0},
		{"a policy again while retiring: its bucket alone decides it, so owner", &planWith, ago(PhaseRetiring, time.Second), nil, nil, nil, nil, 0},
		{"a policy again while released: it leaves the bucket first", &planWith, ago(PhaseReleased, time.Second), nil, nil, shop, nil, 2 * time.Second},
		{"a policy again, released for 3s: withheld, then arriving", &planWith, ago(PhaseReleased, 3*time.Second), nil, nil, nil, shop, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cov, wait := r.coverage(tc.plan, tc.existing, now)
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"arriving", keys(cov.Arriving), tc.arriving}, {"retiring", keys(cov.Retiring), tc.retiring},
				{"released", keys(cov.Released), tc.released}, {"withheld", keys(cov.Withheld), tc.withheld}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s %v, want %v", c.what, c.got, c.want)
				}
			}
			if wait != tc.requeueIn {
				t.Errorf("requeue after %v, want %v", wait, tc.requeueIn)
			}
		})
	}
}
