package mutate_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy"
)

// FuzzReview sends arbitrary bodies to the webhook, seeded with the golden
// AdmissionReviews. Whatever arrives, meshrole must not panic, must answer
// either a 4xx or an AdmissionReview for the same uid, and any patch it
// returns must apply to the object and leave valid Istio port lists.
func FuzzReview(f *testing.F) {
	fixtures, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range fixtures {
		body, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE","object":{"metadata":{"annotations":{"traffic.sidecar.istio.io/excludeOutboundPorts":"1,,2"}}}}}`))
	handler := newMutator(f)

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, mutate.Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 400 && rec.Code < 500 {
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
		}
		var in, out admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("a body that is not a review was answered 200: %v", err)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("response is not an AdmissionReview: %v\n%s", err, rec.Body.String())
		}
		if out.Response.UID != in.Request.UID {
			t.Fatalf("uid %q answered as %q", in.Request.UID, out.Response.UID)
		}
		if len(out.Response.Patch) == 0 {
			return
		}
		patch, err := jsonpatch.DecodePatch(out.Response.Patch)
		if err != nil {
			t.Fatalf("invalid patch: %v", err)
		}
		patched, err := patch.Apply(in.Request.Object.Raw)
		if err != nil {
			t.Fatalf("patch does not apply to the object: %v\npatch %s\nobject %s", err, out.Response.Patch, in.Request.Object.Raw)
		}
		var pod struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(patched, &pod); err != nil {
			t.Fatal(err)
		}
		var original struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(in.Request.Object.Raw, &original)
		for _, key := range []string{policy.IstioExcludeInboundPorts, policy.IstioExcludeOutboundPorts} {
			v, ok := pod.Metadata.Annotations[key]
			if !ok || v == original.Metadata.Annotations[key] {
				continue
			}
			if _, err := policy.ParsePortList(v); err != nil {
				t.Fatalf("meshrole wrote an invalid %s=%q: %v", key, v, err)
			}
		}
	})
}
