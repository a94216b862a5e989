// Package mutate is meshrole's admission handler: it turns the decision
// engine's verdict for a pod into a JSON patch.
package mutate

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"github.com/meshrole/meshrole/pkg/policy"
)

// Path is where the API server sends pod admissions.
const Path = "/mutate-v1-pod"

// Outcome is how an admission ended, as counted in meshrole_admissions_total.
type Outcome string

// Outcomes.
const (
	OutcomePatched         Outcome = "patched"
	OutcomeUnchanged       Outcome = "unchanged"
	OutcomeUnmatched       Outcome = "unmatched"
	OutcomeDryRun          Outcome = "dry-run"
	OutcomeAlreadyInjected Outcome = "already-injected"
	OutcomeError           Outcome = "error"
)

// Decider is the policy engine as the handler sees it.
type Decider interface {
	Decide(policy.Input) policy.Decision
}

// NamespaceLabels returns a namespace's labels. It runs on every admission,
// so it reads a cache; see NamespaceReader.
type NamespaceLabels func(ctx context.Context, namespace string) (map[string]string, error)

// AdmissionMetrics counts admissions; see metrics.go.
type AdmissionMetrics interface {
	Admission(outcome Outcome, role string)
}

// PodMutator stamps Istio's injection and interception keys on new pods
// according to meshrole's policies.
type PodMutator struct {
	Policies        Decider
	NamespaceLabels NamespaceLabels
	// Ready reports whether the policy caches have synced. Until then every
	// admission is refused: allowing a pod before the policies are known
	// could admit a peer with a sidecar.
	Ready   func() bool
	Metrics AdmissionMetrics
}

var _ admission.Handler = &PodMutator{}

// Handle answers one pod admission: controller-runtime's handler contract,
// used by kubectl-meshrole explain. The webhook's HTTP path (ServeHTTP)
// decodes the pod in the same pass as the review and goes straight to admit.
func (m *PodMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	var pod *podView
	if len(req.Object.Raw) > 0 {
		pod = &podView{}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, pod); err != nil {
			m.count(req, OutcomeError, "")
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err))
		}
	}
	resp, outcome, role := m.admit(ctx, req, pod)
	m.count(req, outcome, role)
	return resp
}

// count records an admission, except a server-side dry run (kubectl apply
// --dry-run=server): it creates no pod, and meshrole_admissions_total counts
// what pods were created with. Dry runs are still answered exactly like
// other requests, and controller-runtime's request metrics include them.
func (m *PodMutator) count(req admission.Request, outcome Outcome, role string) {
	if m.Metrics == nil || (req.DryRun != nil && *req.DryRun) {
		return
	}
	m.Metrics.Admission(outcome, role)
}

// admit decides for pod, the object of req (nil when the request carries none).
func (m *PodMutator) admit(ctx context.Context, req admission.Request, pod *podView) (admission.Response, Outcome, string) {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("meshrole only mutates Pods, got %s; check the webhook configuration's rules", req.Kind.String())), OutcomeError, ""
	}
	if req.Operation != admissionv1.Create {
		// The webhook configuration only sends CREATE; anything else is a
		// misconfiguration, and changing a running pod's injection keys
		// would do nothing but confuse.
		return admission.Allowed("meshrole only acts on pod creation"), OutcomeUnmatched, ""
	}
	if m.Ready != nil && !m.Ready() {
		return admission.Errored(http.StatusServiceUnavailable, fmt.Errorf("meshrole's policy cache has not synced yet; retry shortly")), OutcomeError, ""
	}
	if pod == nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("admission request %s carries no object", req.UID)), OutcomeError, ""
	}
	if pod.ObjectMeta == nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("admission request %s: the pod has no metadata", req.UID)), OutcomeError, ""
	}
	// The request's namespace is the API server's word; the object's own
	// field may be empty (generateName) or, in a review built by hand, wrong.
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.ObjectMeta.Namespace
	}

	nsLabels, err := m.NamespaceLabels(ctx, namespace)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading namespace %q: %w", namespace, err)), OutcomeError, ""
	}
	decision := m.Policies.Decide(policy.Input{
		Namespace:       namespace,
		NamespaceLabels: labels.Set(nsLabels),
		PodLabels:       labels.Set(pod.ObjectMeta.Labels),
	})
	role := ""
	if decision.Winner != nil {
		role = string(decision.Winner.Role())
	}

	if pod.alreadyInjected() {
		// Istio's injector has run: whatever meshrole wrote now would not
		// change what the pod got, so the pod is left exactly as it is.
		if !decision.Matched() {
			return admission.Allowed(""), OutcomeUnmatched, ""
		}
		return withWarnings(admission.Allowed("pod already injected by Istio"), fmt.Sprintf(
				"meshrole: pod already has Istio's sidecar, so Istio's injector ran before meshrole and meshrole changed nothing; "+
					"its MutatingWebhookConfiguration must sort before every istio-* one (policy %s)", decision.Matches[0].Policy)),
			OutcomeAlreadyInjected, role
	}

	// Unmatched pods go through Apply too: it removes meshrole.io/*
	// annotations that no verdict wrote.
	effect := decision.Effect()
	newLabels, newAnnotations, warnings := effect.Apply(pod.ObjectMeta.Labels, pod.ObjectMeta.Annotations)
	warnings = append(decision.Warnings(), warnings...)

	outcome := OutcomePatched
	switch {
	case !decision.Matched():
		outcome = OutcomeUnmatched
	case decision.Winner == nil:
		outcome = OutcomeDryRun
	}
	resp := patch(pod.ObjectMeta.Labels, pod.ObjectMeta.Annotations, newLabels, newAnnotations)
	if len(resp.Patches) == 0 && outcome == OutcomePatched {
		outcome = OutcomeUnchanged
	}
	return withWarnings(resp, warnings...), outcome, role
}

// podView is the part of a pod meshrole reads. Decoding only this, not a
// whole corev1.Pod, keeps the admission close to the cost of reading the
// review at all.
type podView struct {
	// A pointer, so that an object without metadata is told apart: the
	// patch adds keys under /metadata, which must exist.
	ObjectMeta *struct {
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers     []namedContainer `json:"containers"`
		InitContainers []namedContainer `json:"initContainers"`
	} `json:"spec"`
}

type namedContainer struct {
	Name string `json:"name"`
}

// alreadyInjected reports whether Istio's injector has already processed the
// pod: its proxy is among the containers (or the init containers, where Istio
// runs it as a native sidecar), or it left its status annotation.
func (p *podView) alreadyInjected() bool {
	isProxy := func(c namedContainer) bool { return c.Name == policy.IstioProxyContainer }
	if slices.ContainsFunc(p.Spec.Containers, isProxy) || slices.ContainsFunc(p.Spec.InitContainers, isProxy) {
		return true
	}
	_, ok := p.ObjectMeta.Annotations[policy.IstioSidecarStatus]
	return ok
}

// patch is the one place JSON patches are built. meshrole only ever changes
// metadata.labels and metadata.annotations and holds both maps before and
// after, so it writes the operations from them directly: marshalling the
// maps and diffing the JSON (admission.PatchResponseFromRaw) found the same
// operations at about an eighth of the handler's CPU. Operations come in
// path order, so a verdict always answers with the same patch.
func patch(oldLabels, oldAnnotations, newLabels, newAnnotations map[string]string) admission.Response {
	ops := mapOps(nil, "/metadata/annotations", oldAnnotations, newAnnotations)
	ops = mapOps(ops, "/metadata/labels", oldLabels, newLabels)
	resp := admission.Response{Patches: ops, AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true}}
	if len(ops) > 0 {
		patchType := admissionv1.PatchTypeJSONPatch
		resp.PatchType = &patchType
	}
	return resp
}

// mapOps appends the operations that turn the string map at path from
// before into after. An absent, null and empty map are the same to a pod,
// so a map that gains its first key is added whole, and one that loses its
// last is removed whole.
func mapOps(ops []jsonpatch.JsonPatchOperation, path string, before, after map[string]string) []jsonpatch.JsonPatchOperation {
	switch {
	case len(after) == 0 && len(before) == 0:
		return ops
	case len(after) == 0:
		return append(ops, jsonpatch.NewOperation("remove", path, nil))
	case len(before) == 0:
		return append(ops, jsonpatch.NewOperation("add", path, after))
	}
	keys := make([]string, 0, len(before)+len(after))
	for k := range before {
		keys = append(keys, k)
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		was, had := before[k]
		is, has := after[k]
		switch {
		case !has:
			ops = append(ops, jsonpatch.NewOperation("remove", path+"/"+policy.KeyPointerToken(k), nil))
		case !had:
			ops = append(ops, jsonpatch.NewOperation("add", path+"/"+policy.KeyPointerToken(k), is))
		case was != is:
			ops = append(ops, jsonpatch.NewOperation("replace", path+"/"+policy.KeyPointerToken(k), is))
		}
	}
	return ops
}

func withWarnings(resp admission.Response, warnings ...string) admission.Response {
	resp.Warnings = append(resp.Warnings, warnings...)
	return resp
}
