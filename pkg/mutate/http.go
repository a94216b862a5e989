package mutate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"
)

// MaxRequestBytes bounds an admission request body. The API server caps
// objects at 3 MiB; a review wraps one object (twice for UPDATE), so anything
// larger is not from an API server.
const MaxRequestBytes = 7 << 20

// podReview is an AdmissionReview whose object is decoded straight into the
// part of the pod meshrole reads: one pass over the request body, where
// decoding the review and then its raw object would take two.
type podReview struct {
	metav1.TypeMeta `json:",inline"`
	Request         *struct {
		admissionv1.AdmissionRequest
		// Shadows AdmissionRequest.Object, which stays empty.
		Object *podView `json:"object"`
	} `json:"request"`
}

var _ http.Handler = &PodMutator{}

// httpError is a request meshrole refuses before it reaches the Handler.
type httpError struct {
	status int
	reason string
}

// ServeHTTP serves admission.k8s.io/v1 AdmissionReviews. Unlike
// controller-runtime's admission.Webhook, which answers a malformed request
// with HTTP 200 and an error inside the review, it answers with a 4xx status
// and the reason: such a request did not come from an API server, and its
// sender should see plainly what is wrong.
func (m *PodMutator) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	review, herr := readReview(w, req)
	if herr != nil {
		log.FromContext(req.Context()).Info("refused a malformed admission request", "status", herr.status, "reason", herr.reason, "remote", req.RemoteAddr)
		http.Error(w, herr.reason, herr.status)
		return
	}
	areq := admission.Request{AdmissionRequest: review.Request.AdmissionRequest}
	resp := m.serve(req, areq, review.Request.Object)
	if err := resp.Complete(areq); err != nil {
		resp = admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the patch: %w", err))
		_ = resp.Complete(areq)
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: &resp.AdmissionResponse}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		log.FromContext(req.Context()).Error(err, "writing the admission response", "uid", areq.UID)
	}
}

// serve admits one pod, turning a panic into an error response: a webhook
// with failurePolicy Fail must answer, not drop the connection.
func (m *PodMutator) serve(req *http.Request, areq admission.Request, pod *podView) (resp admission.Response) {
	defer func() {
		if p := recover(); p != nil {
			log.FromContext(req.Context()).Error(fmt.Errorf("%v", p), "admission handler panicked", "uid", areq.UID)
			resp = admission.Errored(http.StatusInternalServerError, errors.New("meshrole failed internally; see its log"))
			m.count(areq, OutcomeError, "")
		}
	}()
	resp, outcome, role := m.admit(req.Context(), areq, pod)
	m.count(areq, outcome, role)
	return resp
}

func readReview(w http.ResponseWriter, req *http.Request) (*podReview, *httpError) {
	if req.Method != http.MethodPost {
		return nil, &httpError{http.StatusMethodNotAllowed, "admission reviews are POSTed"}
	}
	if mediaType, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mediaType != "application/json" {
		return nil, &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: expected application/json", req.Header.Get("Content-Type"))}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxRequestBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", MaxRequestBytes)}
		}
		return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("reading the request body: %v", err)}
	}
	if len(body) == 0 {
		return nil, &httpError{http.StatusBadRequest, "request body is empty: expected an AdmissionReview"}
	}
	review := &podReview{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, review); err != nil {
		return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("request body is not an AdmissionReview of a pod: %v", err)}
	}
	if gvk := review.GroupVersionKind(); gvk != admissionv1.SchemeGroupVersion.WithKind("AdmissionReview") {
		return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("got %q %q: meshrole serves admission.k8s.io/v1 AdmissionReview only (set admissionReviewVersions: [v1])", review.APIVersion, review.Kind)}
	}
	if review.Request == nil {
		return nil, &httpError{http.StatusBadRequest, "AdmissionReview has no request"}
	}
	if review.Request.UID == "" {
		return nil, &httpError{http.StatusBadRequest, "AdmissionReview request has no uid"}
	}
	return review, nil
}
