package mutate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrole/meshrole/pkg/mutate"
)

func seedReview(t *testing.T) map[string]any {
	t.Helper()
	body, err := os.ReadFile("testdata/eureka-server-from-statefulset.json")
	if err != nil {
		t.Fatal(err)
	}
	var review map[string]any
	if err := json.Unmarshal(body, &review); err != nil {
		t.Fatal(err)
	}
	return review
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMalformedRequestsGet4xx: a request that is not an AdmissionReview from
// an API server is answered with an HTTP error status and the reason.
func TestMalformedRequestsGet4xx(t *testing.T) {
	handler := newMutator(t)
	v1beta1 := seedReview(t)
	v1beta1["apiVersion"] = "admission.k8s.io/v1beta1"
	noRequest := seedReview(t)
	delete(noRequest, "request")
	noUID := seedReview(t)
	delete(noUID["request"].(map[string]any), "uid")
	badPod := seedReview(t)
	badPod["request"].(map[string]any)["object"] = map[string]any{"kind": "Pod", "metadata": "not an object"}

	tests := []struct {
		name        string
		method      string
		contentType string
		body        []byte
		wantStatus  int
		wantReason  string
	}{
		{"GET", http.MethodGet, "application/json", nil, http.StatusMethodNotAllowed, "POSTed"},
		{"wrong content type", http.MethodPost, "text/plain", []byte("{}"), http.StatusUnsupportedMediaType, "expected application/json"},
		{"empty body", http.MethodPost, "application/json", nil, http.StatusBadRequest, "empty"},
		{"not JSON", http.MethodPost, "application/json", []byte("<xml/>"), http.StatusBadRequest, "not an AdmissionReview"},
		{"v1beta1 review", http.MethodPost, "application/json", marshal(t, v1beta1), http.StatusBadRequest, "admission.k8s.io/v1 AdmissionReview only"},
		{"no request", http.MethodPost, "application/json", marshal(t, noRequest), http.StatusBadRequest, "no request"},
		{"no uid", http.MethodPost, "application/json", marshal(t, noUID), http.StatusBadRequest, "no uid"},
		{"object is not a pod", http.MethodPost, "application/json", marshal(t, badPod), http.StatusBadRequest, "not an AdmissionReview of a pod"},
		{"body over the limit", http.MethodPost, "application/json", bytes.Repeat([]byte(" "), mutate.MaxRequestBytes+1), http.StatusRequestEntityTooLarge, "exceeds"},
		{"10 MB body", http.MethodPost, "application/json", bytes.Repeat([]byte("x"), 10<<20), http.StatusRequestEntityTooLarge, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, mutate.Path, bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.contentType)
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus || !strings.Contains(rec.Body.String(), tt.wantReason) {
				t.Fatalf("HTTP %d %q, want %d containing %q", rec.Code, rec.Body.String(), tt.wantStatus, tt.wantReason)
			}
		})
	}
}

// TestRefusedInsideTheReview: well-formed reviews that meshrole cannot
// answer with a verdict get allowed=false and a status code, as the API
// server expects; failurePolicy then decides.
func TestRefusedInsideTheReview(t *testing.T) {
	notPod := seedReview(t)
	notPod["request"].(map[string]any)["kind"] = map[string]any{"group": "apps", "version": "v1", "kind": "Deployment"}
	noObject := seedReview(t)
	delete(noObject["request"].(map[string]any), "object")
	noMetadata := seedReview(t)
	noMetadata["request"].(map[string]any)["object"] = map[string]any{"kind": "Pod", "metadata": nil}

	tests := []struct {
		name     string
		review   map[string]any
		mutator  func(*mutate.PodMutator)
		wantCode int32
		wantMsg  string
	}{
		{"kind other than Pod", notPod, nil, http.StatusBadRequest, "only mutates Pods"},
		{"no object", noObject, nil, http.StatusBadRequest, "carries no object"},
		{"pod without metadata", noMetadata, nil, http.StatusBadRequest, "the pod has no metadata"},
		{"cache not synced", seedReview(t), func(m *mutate.PodMutator) { m.Ready = func() bool { return false } }, http.StatusServiceUnavailable, "not synced"},
		{"namespace unknown to the cache", seedReview(t), func(m *mutate.PodMutator) {
			m.NamespaceLabels = func(context.Context, string) (map[string]string, error) { return nil, os.ErrNotExist }
		}, http.StatusInternalServerError, "reading namespace"},
		{"handler panics", seedReview(t), func(m *mutate.PodMutator) {
			m.NamespaceLabels = func(context.Context, string) (map[string]string, error) { panic("boom") }
		}, http.StatusInternalServerError, "failed internally"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMutator(t)
			if tt.mutator != nil {
				tt.mutator(m)
			}
			resp := post(t, m, marshal(t, tt.review)).Response
			if resp.Allowed || resp.Result == nil || resp.Result.Code != tt.wantCode || !strings.Contains(resp.Result.Message, tt.wantMsg) {
				t.Fatalf("got allowed=%v result=%+v, want refused with %d %q", resp.Allowed, resp.Result, tt.wantCode, tt.wantMsg)
			}
			if resp.UID == "" {
				t.Fatal("response has no uid")
			}
		})
	}
}

func TestOnlyCreateIsMutated(t *testing.T) {
	for _, op := range []string{"UPDATE", "DELETE", "CONNECT"} {
		review := seedReview(t)
		review["request"].(map[string]any)["operation"] = op
		resp := post(t, newMutator(t), marshal(t, review)).Response
		if !resp.Allowed || len(resp.Patch) > 0 {
			t.Errorf("%s: allowed=%v patch=%s, want allowed without patch", op, resp.Allowed, resp.Patch)
		}
	}
}

// TestDryRunRequestsAreAnsweredLikeAnyOther: kubectl apply --dry-run=server
// must show exactly what a real create would get, and is not counted as a
// pod admission.
func TestDryRunRequestsAreAnsweredLikeAnyOther(t *testing.T) {
	registry := prometheus.NewRegistry()
	m := newMutator(t)
	m.Metrics = mutate.NewMetrics(registry)

	review := seedReview(t)
	normal := post(t, newMutator(t), marshal(t, review)).Response
	review["request"].(map[string]any)["dryRun"] = true
	dryRun := post(t, m, marshal(t, review)).Response
	if !dryRun.Allowed || len(normal.Patch) == 0 || sortedOps(t, dryRun.Patch) != sortedOps(t, normal.Patch) ||
		!slices.Equal(dryRun.Warnings, normal.Warnings) {
		t.Fatalf("dry run: allowed=%v patch=%s warnings=%q\nwant the normal answer: patch=%s warnings=%q",
			dryRun.Allowed, dryRun.Patch, dryRun.Warnings, normal.Patch, normal.Warnings)
	}
	if n := testutil.CollectAndCount(registry, "meshrole_admissions_total"); n != 0 {
		t.Fatalf("a dry-run request was counted in meshrole_admissions_total (%d series)", n)
	}
}

// sortedOps is a JSON patch with its operations in path order: the diff
// walks maps, so the order varies, and ops on distinct keys commute.
func sortedOps(t *testing.T, patch []byte) string {
	t.Helper()
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ops, func(a, b map[string]any) int { return strings.Compare(fmt.Sprint(a["path"]), fmt.Sprint(b["path"])) })
	return string(marshal(t, ops))
}

func TestMetricsCountOutcomes(t *testing.T) {
	registry := prometheus.NewRegistry()
	m := newMutator(t)
	m.Metrics = mutate.NewMetrics(registry)
	handler := m
	for _, fixture := range []string{"eureka-server-from-statefulset", "unmatched", "forged-meshrole-keys-unmatched", "already-injected", "dry-run-policy"} {
		body, err := os.ReadFile("testdata/" + fixture + ".json")
		if err != nil {
			t.Fatal(err)
		}
		post(t, handler, body)
	}
	want := `
# HELP meshrole_admissions_total Pod admissions answered by meshrole, by outcome (patched, unchanged, unmatched, dry-run, already-injected, error) and role; server-side dry-run requests are not counted.
# TYPE meshrole_admissions_total counter
meshrole_admissions_total{outcome="already-injected",role="peer-stateful"} 1
meshrole_admissions_total{outcome="dry-run",role=""} 1
meshrole_admissions_total{outcome="patched",role="peer-stateful"} 1
meshrole_admissions_total{outcome="unmatched",role=""} 2
`
	if err := testutil.GatherAndCompare(registry, strings.NewReader(want), "meshrole_admissions_total"); err != nil {
		t.Fatal(err)
	}
}

var _ admission.Handler = &mutate.PodMutator{}

func TestHandleDecodesTheObject(t *testing.T) {
	m := newMutator(t)
	req := admission.Request{}
	req.UID, req.Namespace = "u", "shop"
	req.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	req.Operation = "CREATE"
	req.Object.Raw = []byte(`{"metadata": "not an object"}`)
	if resp := m.Handle(context.Background(), req); resp.Allowed || resp.Result.Code != http.StatusBadRequest || !strings.Contains(resp.Result.Message, "decoding the pod") {
		t.Errorf("invalid object: %+v", resp.Result)
	}
	req.Object.Raw = []byte(`{"metadata": {"labels": {"app": "eureka-server"}}}`)
	if resp := m.Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) == 0 {
		t.Errorf("eureka-server pod: allowed=%v patches=%v", resp.Allowed, resp.Patches)
	}
}
