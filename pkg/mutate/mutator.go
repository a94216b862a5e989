// Package mutate is meshrole's admission handler: it turns the decision
// engine's verdict for a pod into a JSON patch.
package mutate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrole/meshrole/pkg/policy"
)

// Path is where the API server sends pod admissions.
const Path = "/mutate-v1-pod"

// Outcomes counted in meshrole_admissions_total.
const (
	OutcomePatched         = "patched"
	OutcomeUnchanged       = "unchanged"
	OutcomeUnmatched       = "unmatched"
	OutcomeDryRun          = "dry-run"
	OutcomeAlreadyInjected = "already-injected"
	OutcomeError           = "error"
)

// Decider is the policy engine as the handler sees it.
type Decider interface {
	Decide(policy.Input) policy.Decision
}

// NamespaceLabels returns a namespace's labels from a cache. It must not call
// the API server: it runs on every admission.
type NamespaceLabels func(ctx context.Context, namespace string) (map[string]string, error)

// Recorder counts admissions; see metrics.go.
type Recorder interface {
	Admission(outcome string, role string)
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
	Metrics Recorder
}

var _ admission.Handler = &PodMutator{}

// Handle answers one pod admission.
func (m *PodMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	resp, outcome, role := m.handle(ctx, req)
	if m.Metrics != nil {
		m.Metrics.Admission(outcome, role)
	}
	return resp
}

func (m *PodMutator) handle(ctx context.Context, req admission.Request) (admission.Response, string, string) {
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
	if len(req.Object.Raw) == 0 {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("admission request %s carries no object", req.UID)), OutcomeError, ""
	}

	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err)), OutcomeError, ""
	}
	namespace := pod.Namespace
	if namespace == "" {
		// Pods made by controllers (generateName) arrive without one.
		namespace = req.Namespace
	}

	nsLabels, err := m.NamespaceLabels(ctx, namespace)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading namespace %q from the cache: %w", namespace, err)), OutcomeError, ""
	}
	decision := m.Policies.Decide(policy.Input{
		Namespace:       namespace,
		NamespaceLabels: labels.Set(nsLabels),
		PodLabels:       labels.Set(pod.Labels),
	})
	if !decision.Matched() {
		return admission.Allowed(""), OutcomeUnmatched, ""
	}
	role := ""
	if decision.Winner != nil {
		role = string(decision.Winner.Role())
	}

	if AlreadyInjected(&pod) {
		return withWarnings(admission.Allowed("pod already injected by Istio"), fmt.Sprintf(
				"meshrole: pod already has Istio's sidecar, so Istio's injector ran before meshrole and meshrole changed nothing; "+
					"its MutatingWebhookConfiguration must sort before every istio-* one (policy %s)", decision.Matches[0].Policy)),
			OutcomeAlreadyInjected, role
	}

	effect := decision.Effect()
	newLabels, newAnnotations, warnings := effect.Apply(pod.Labels, pod.Annotations)
	warnings = append(decision.Warnings(), warnings...)

	outcome := OutcomePatched
	if decision.Winner == nil {
		outcome = OutcomeDryRun
	}
	resp, changed, err := patch(req.Object.Raw, newLabels, newAnnotations)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err), OutcomeError, role
	}
	if !changed && outcome == OutcomePatched {
		outcome = OutcomeUnchanged
	}
	return withWarnings(resp, warnings...), outcome, role
}

// AlreadyInjected reports whether Istio's injector has already processed the
// pod: its proxy is among the containers (or the init containers, where Istio
// runs it as a native sidecar), or it left its status annotation.
func AlreadyInjected(pod *corev1.Pod) bool {
	isProxy := func(c corev1.Container) bool { return c.Name == policy.IstioProxyContainer }
	if slices.ContainsFunc(pod.Spec.Containers, isProxy) || slices.ContainsFunc(pod.Spec.InitContainers, isProxy) {
		return true
	}
	_, ok := pod.Annotations[policy.IstioSidecarStatus]
	return ok
}

// patch is the one place JSON patches are built: the raw object with new
// labels and annotations, diffed against the original by controller-runtime.
// Working on the raw object, not a re-encoded typed Pod, keeps the patch to
// exactly the keys meshrole changed.
func patch(raw []byte, newLabels, newAnnotations map[string]string) (admission.Response, bool, error) {
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return admission.Response{}, false, fmt.Errorf("decoding the pod: %w", err)
	}
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	if newLabels != nil {
		meta["labels"] = newLabels
	}
	if newAnnotations != nil {
		meta["annotations"] = newAnnotations
	}
	mutated, err := json.Marshal(obj)
	if err != nil {
		return admission.Response{}, false, fmt.Errorf("encoding the mutated pod: %w", err)
	}
	resp := admission.PatchResponseFromRaw(raw, mutated)
	return resp, len(resp.Patches) > 0, nil
}

func withWarnings(resp admission.Response, warnings ...string) admission.Response {
	resp.Warnings = append(resp.Warnings, warnings...)
	return resp
}
