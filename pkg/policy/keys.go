package policy

import "strings"

// Istio's keys, as its injector (pkg/kube/inject) and istio-init / istio-cni read them.
const (
	// IstioInjectKey is read as a label first, then as an annotation.
	IstioInjectKey = "sidecar.istio.io/inject"
	// IstioDataplaneModeLabel opts a pod out of ambient mode with the value
	// "none"; on a namespace, the value "ambient" puts its pods in ambient mode.
	IstioDataplaneModeLabel = "istio.io/dataplane-mode"
	// IstioDataplaneModeAmbient is IstioDataplaneModeLabel's ambient value.
	IstioDataplaneModeAmbient = "ambient"
	// IstioExcludeInboundPorts is a comma-separated port list.
	IstioExcludeInboundPorts = "traffic.sidecar.istio.io/excludeInboundPorts"
	// IstioExcludeOutboundPorts is a comma-separated port list.
	IstioExcludeOutboundPorts = "traffic.sidecar.istio.io/excludeOutboundPorts"
	// IstioProxyConfig holds a ProxyConfig as YAML or JSON.
	IstioProxyConfig = "proxy.istio.io/config"
	// IstioSidecarStatus is written by Istio's injector on the pods it injected.
	IstioSidecarStatus = "sidecar.istio.io/status"
	// IstioProxyContainer is the sidecar's container name.
	IstioProxyContainer = "istio-proxy"
	// HoldApplicationUntilProxyStarts is the ProxyConfig field meshrole sets.
	HoldApplicationUntilProxyStarts = "holdApplicationUntilProxyStarts"
)

// meshrole's own keys. Every annotation under KeyPrefix is meshrole's record
// of its verdict, which status, audit and conflict detection trust: the
// webhook removes any that the verdict does not write, so a pod author
// cannot forge one.
const (
	// KeyPrefix is the prefix of meshrole's annotations.
	KeyPrefix = "meshrole.io/"
	// EnabledNamespaceLabel turns meshrole on for a namespace (value "true").
	EnabledNamespaceLabel = "meshrole.io/enabled"
	// RoleAnnotation records the role a pod was given.
	RoleAnnotation = "meshrole.io/role"
	// PolicyAnnotation records the winning policy: "<namespace>/<name>" or "cluster/<name>".
	PolicyAnnotation = "meshrole.io/policy"
	// WorkloadAnnotation records the winning workload entry's name.
	WorkloadAnnotation = "meshrole.io/workload"
	// ConflictAnnotation describes entries of another role that tied with the winner.
	ConflictAnnotation = "meshrole.io/conflict"
	// DryRunAnnotation describes what a DryRun policy would have written.
	DryRunAnnotation = "meshrole.io/dry-run"
)

// KeyPointerToken writes a label or annotation key as one JSON Pointer token
// (RFC 6901), as a JSON patch path into metadata.labels or .annotations
// needs it: every Istio and meshrole key holds a "/". The webhook's patches
// and native mode's both build their paths with it.
func KeyPointerToken(key string) string {
	return pointerTokenEscaper.Replace(key)
}

var pointerTokenEscaper = strings.NewReplacer("~", "~0", "/", "~1")
