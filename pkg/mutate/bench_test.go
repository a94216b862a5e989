package mutate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

// typicalReview is the seed's eureka-server pod grown to a typical ~4.5 KB
// review with the env, probes and volumes real pods carry.
func typicalReview(b *testing.B) []byte {
	b.Helper()
	body, err := loadgen.BaseReview("")
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// floor decodes the review and answers "allowed" with no patch: the least
// any webhook can do, and the yardstick for meshrole's handler.
type floor struct{}

func (floor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Result: &metav1.Status{Code: http.StatusOK}}
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

func serve(b *testing.B, h http.Handler, body []byte) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, mutate.Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("HTTP %d", rec.Code)
		}
	}
}

// BenchmarkAdmission compares meshrole's full handler with the floor on the
// same ~4.5 KB review, in one run: go test -bench Admission -benchmem ./pkg/mutate
func BenchmarkAdmission(b *testing.B) {
	body := typicalReview(b)
	b.Run("floor", func(b *testing.B) { serve(b, floor{}, body) })
	b.Run("meshrole", func(b *testing.B) { serve(b, newMutator(b), body) })
}

// BenchmarkDecidePolicyCount shows a decision's cost does not grow with the
// policies of other namespaces: 10 policies vs 10,000 over 1,000 namespaces.
func BenchmarkDecidePolicyCount(b *testing.B) {
	for _, n := range []struct{ policies, namespaces int }{{10, 1}, {10_000, 1_000}} {
		store := policy.NewStore()
		for i := range n.policies {
			ns := fmt.Sprintf("ns-%d", i%n.namespaces)
			store.SetMeshRolePolicy(&v1alpha1.MeshRolePolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p-%d", i)},
				Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{
					{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i)}}},
					{Name: "clients", Role: v1alpha1.RoleClientStateless, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}},
				}},
			})
		}
		in := policy.Input{Namespace: "ns-0", PodLabels: labels.Set{"app": "app-0"}}
		b.Run(fmt.Sprintf("policies=%d/namespaces=%d", n.policies, n.namespaces), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := store.Decide(in); d.Winner == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}
