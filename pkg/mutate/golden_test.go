package mutate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	jsonpatchv2 "gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/internal/golden"
	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy"
)

// Golden pairs, as in Istio's pkg/kube/inject: testdata/X.json is a real
// AdmissionReview, testdata/X.json.mutated what meshrole answers (the patch,
// and the labels and annotations the pod ends up with), decided against the
// policies and namespaces of testdata/policies.yaml. make golden rewrites
// the .mutated files.

// newMutator is the handler over testdata/policies.yaml: its policies, and
// its Namespaces' labels in place of the namespace cache.
func newMutator(t testing.TB) *mutate.PodMutator {
	t.Helper()
	store, namespaces, err := policy.LoadFile("testdata/policies.yaml", "default")
	if err != nil {
		t.Fatal(err)
	}
	return &mutate.PodMutator{
		Policies: store,
		NamespaceLabels: func(_ context.Context, ns string) (map[string]string, error) {
			labels, ok := namespaces[ns]
			if !ok {
				return nil, fmt.Errorf("namespace %q not found", ns)
			}
			return labels, nil
		},
		Ready: func() bool { return true },
	}
}

// post sends body to the handler over HTTP, as the API server would.
func post(t testing.TB, h http.Handler, body []byte) *admissionv1.AdmissionReview {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, mutate.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, rec.Body.String())
	}
	return &review
}

// result is what a golden file records.
type result struct {
	Allowed     bool              `json:"allowed"`
	Warnings    []string          `json:"warnings,omitempty"`
	Patch       []map[string]any  `json:"patch,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// opsOf is Handle's patch in sortedOps' form.
func opsOf(t *testing.T, ops []jsonpatchv2.JsonPatchOperation) string {
	t.Helper()
	if ops == nil {
		ops = []jsonpatchv2.JsonPatchOperation{}
	}
	return sortedOps(t, marshal(t, ops))
}

func orEmpty(patch []byte) []byte {
	if len(patch) == 0 {
		return []byte("[]")
	}
	return patch
}

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	handler := newMutator(t)
	for _, input := range inputs {
		name := strings.TrimSuffix(filepath.Base(input), ".json")
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(input)
			if err != nil {
				t.Fatal(err)
			}
			var in admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &in); err != nil {
				t.Fatal(err)
			}
			review := post(t, handler, body)
			resp := review.Response
			if resp.UID != in.Request.UID {
				t.Fatalf("response uid %q, request uid %q", resp.UID, in.Request.UID)
			}
			if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
				t.Fatalf("response is %s %s", review.APIVersion, review.Kind)
			}

			got := result{Allowed: resp.Allowed, Warnings: resp.Warnings}
			mutated := in.Request.Object.Raw
			if len(resp.Patch) > 0 {
				if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
					t.Fatalf("patch type %v", resp.PatchType)
				}
				if err := json.Unmarshal(resp.Patch, &got.Patch); err != nil {
					t.Fatal(err)
				}
				// The diff walks maps, so its order varies; ops on distinct keys commute.
				sort.Slice(got.Patch, func(i, j int) bool {
					return fmt.Sprint(got.Patch[i]["path"]) < fmt.Sprint(got.Patch[j]["path"])
				})
				p, err := jsonpatch.DecodePatch(resp.Patch)
				if err != nil {
					t.Fatalf("invalid JSON patch: %v", err)
				}
				if mutated, err = p.Apply(in.Request.Object.Raw); err != nil {
					t.Fatalf("patch does not apply: %v", err)
				}
			}
			var pod corev1.Pod
			if err := json.Unmarshal(mutated, &pod); err != nil {
				t.Fatal(err)
			}
			got.Labels, got.Annotations = pod.Labels, pod.Annotations

			out, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, input+".mutated", out)

			// The plugin's path (Handle, controller-runtime's handler
			// contract) answers exactly what the server's (ServeHTTP) does.
			viaHandle := handler.Handle(context.Background(), admission.Request{AdmissionRequest: *in.Request})
			if viaHandle.Allowed != resp.Allowed || !slices.Equal(viaHandle.Warnings, resp.Warnings) ||
				opsOf(t, viaHandle.Patches) != sortedOps(t, orEmpty(resp.Patch)) {
				t.Fatalf("Handle and ServeHTTP differ:\nHandle:    allowed=%v warnings=%q patch=%s\nServeHTTP: allowed=%v warnings=%q patch=%s",
					viaHandle.Allowed, viaHandle.Warnings, opsOf(t, viaHandle.Patches), resp.Allowed, resp.Warnings, resp.Patch)
			}

			// Idempotent: the handler run on its own output changes nothing more.
			in.Request.Object.Raw = mutated
			again, _ := json.Marshal(in)
			if second := post(t, handler, again).Response; len(second.Patch) > 0 {
				t.Fatalf("second pass patched again: %s", second.Patch)
			}
		})
	}
}
