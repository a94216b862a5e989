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

// benchPolicy is policy i of a namespace: a peer entry for app-<i> and a
// client entry for tier web-<i>, so that a pod labelled app=app-0 matches
// policy 0 only and every other policy is evaluated and passed over.
func benchPolicy(namespace string, i int) *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fmt.Sprintf("p-%05d", i)},
		Spec:       v1alpha1.PolicySpec{Workloads: benchWorkloads(i)},
	}
}

func benchWorkloads(i int) []v1alpha1.Workload {
	return []v1alpha1.Workload{
		{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i)}}},
		{Name: "clients", Role: v1alpha1.RoleClientStateless, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("web-%d", i)}}},
	}
}

// benchClusterPolicy is cluster policy i, shaped like benchPolicy, selecting
// the namespaces labelled group=<group>.
func benchClusterPolicy(i int, group string) *v1alpha1.ClusterMeshRolePolicy {
	return &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c-%05d", i)},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{
			PolicySpec:        v1alpha1.PolicySpec{Workloads: benchWorkloads(i)},
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"group": group}},
		},
	}
}

// decideLoop measures Decide for one pod and checks the verdict every time.
func decideLoop(b *testing.B, store *policy.Store, in policy.Input, wantMatches int) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if d := store.Decide(in); len(d.Matches) != wantMatches {
			b.Fatalf("%d matches, want %d", len(d.Matches), wantMatches)
		}
	}
}

// BenchmarkDecideNamespacePolicies measures a decision where the pod's own
// namespace holds 1, 10, 100 and 1,000 policies, among 10,000 policies in
// all (the others spread over 1,000 namespaces): what a decision costs grows
// with the policies that can match the pod, never with the total.
func BenchmarkDecideNamespacePolicies(b *testing.B) {
	const total, namespaces = 10_000, 1_000
	for _, local := range []int{1, 10, 100, 1000} {
		store := policy.NewStore()
		for i := range local {
			store.SetMeshRolePolicy(benchPolicy("bench", i))
		}
		for i := range total - local {
			store.SetMeshRolePolicy(benchPolicy(fmt.Sprintf("ns-%d", i%namespaces), i))
		}
		in := policy.Input{Namespace: "bench", NamespaceLabels: labels.Set{"group": "bench"}, PodLabels: labels.Set{"app": "app-0"}}
		b.Run(fmt.Sprintf("namespace=%d", local), func(b *testing.B) { decideLoop(b, store, in, 1) })
	}
}

// BenchmarkDecideClusterPolicies measures a decision with 10, 100, 1,000
// and 5,000 ClusterMeshRolePolicies, none of which select the pod's
// namespace (selecting=0), or half of which do (selecting=n/2). The pod's
// namespace also holds 10 policies. Only the selecting ones can match the
// pod, so only they should cost anything.
func BenchmarkDecideClusterPolicies(b *testing.B) {
	for _, half := range []bool{false, true} {
		for _, n := range []int{10, 100, 1000, 5000} {
			store := policy.NewStore()
			for i := range 10 {
				store.SetMeshRolePolicy(benchPolicy("bench", i))
			}
			selecting := 0
			for i := range n {
				group := "other"
				if half && i%2 == 0 {
					group, selecting = "bench", selecting+1
				}
				store.SetClusterMeshRolePolicy(benchClusterPolicy(i, group))
			}
			// app-0 matches namespaced policy p-00000 and, when it selects the
			// namespace, cluster policy c-00000.
			want := 1
			if half {
				want = 2
			}
			in := policy.Input{Namespace: "bench", NamespaceLabels: labels.Set{"group": "bench", policy.EnabledNamespaceLabel: "true"}, PodLabels: labels.Set{"app": "app-0"}}
			b.Run(fmt.Sprintf("cluster=%d/selecting=%d", n, selecting), func(b *testing.B) { decideLoop(b, store, in, want) })
		}
	}
}
