package mutate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// MaxRequestBytes bounds an admission request body. The API server caps
// objects at 3 MiB; a review wraps one object (twice for UPDATE), so anything
// larger is not from an API server.
const MaxRequestBytes = 7 << 20

// Review serves admission.k8s.io/v1 AdmissionReviews over HTTP for a
// Handler. Unlike controller-runtime's admission.Webhook, which answers a
// malformed request with HTTP 200 and an error inside the review, it answers
// with a 4xx status and the reason: such a request did not come from an API
// server, and its sender should see plainly what is wrong.
type Review struct {
	Handler admission.Handler
}

var _ http.Handler = &Review{}

// httpError is a request meshrole refuses before it reaches the Handler.
type httpError struct {
	status int
	reason string
}

func (r *Review) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	review, herr := readReview(w, req)
	if herr != nil {
		log.FromContext(req.Context()).Info("refused a malformed admission request", "status", herr.status, "reason", herr.reason, "remote", req.RemoteAddr)
		http.Error(w, herr.reason, herr.status)
		return
	}
	areq := admission.Request{AdmissionRequest: *review.Request}
	resp := r.handle(req, areq)
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

// handle calls the Handler, turning a panic into an error response: a
// webhook with failurePolicy Fail must answer, not drop the connection.
func (r *Review) handle(req *http.Request, areq admission.Request) (resp admission.Response) {
	defer func() {
		if p := recover(); p != nil {
			log.FromContext(req.Context()).Error(fmt.Errorf("%v", p), "admission handler panicked", "uid", areq.UID)
			resp = admission.Errored(http.StatusInternalServerError, errors.New("meshrole failed internally; see its log"))
		}
	}()
	ctx := log.IntoContext(req.Context(), log.FromContext(req.Context()).WithValues("uid", areq.UID, "namespace", areq.Namespace))
	return r.Handler.Handle(ctx, areq)
}

func readReview(w http.ResponseWriter, req *http.Request) (*admissionv1.AdmissionReview, *httpError) {
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
	review := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(body, review); err != nil {
		return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("request body is not an AdmissionReview: %v", err)}
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
