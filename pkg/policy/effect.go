package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Effect is what a verdict writes on a pod, as data: the webhook applies it
// to a pod, the kubectl plugin prints it, and native mode compiles it.
type Effect struct {
	// Labels and Annotations are set to exactly these values.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Ports are merged, as sets, into the comma-separated port-list annotation
	// named by the key.
	Ports map[string][]int32 `json:"ports,omitempty"`
	// HoldApplicationUntilProxyStarts is merged into proxy.istio.io/config.
	HoldApplicationUntilProxyStarts bool `json:"holdApplicationUntilProxyStarts,omitempty"`
}

// IstioEffect is what a workload entry's role writes among Istio's keys
// (docs/design.md, "What a verdict writes"), without meshrole's own annotations, for a pod in a namespace
// that is (ambient) or is not in Istio's ambient data plane.
func IstioEffect(w *v1alpha1.Workload, ambient bool) Effect {
	e := Effect{Labels: map[string]string{}, Annotations: map[string]string{}, Ports: map[string][]int32{}}
	switch w.Role {
	case v1alpha1.RolePeerStateful:
		peer := w.Peer
		if peer == nil {
			peer = &v1alpha1.PeerSettings{}
		}
		switch peer.Proxy {
		case v1alpha1.PeerProxyBypassPorts:
			ports := portNumbers(peer.Ports)
			e.Ports[IstioExcludeInboundPorts] = ports
			e.Ports[IstioExcludeOutboundPorts] = ports
		default: // Skip
			e.Labels[IstioInjectKey] = "false"
			e.Labels[IstioDataplaneModeLabel] = "none"
			e.Annotations[IstioInjectKey] = "false"
		}
	case v1alpha1.RoleClientStateless:
		client := w.Client
		if client == nil {
			client = &v1alpha1.ClientSettings{}
		}
		if clientGetsSidecar(client.Proxy, ambient) {
			e.Labels[IstioInjectKey] = "true"
			e.Annotations[IstioInjectKey] = "true"
		}
		if len(client.ExcludeOutboundPorts) > 0 {
			e.Ports[IstioExcludeOutboundPorts] = portNumbers(client.ExcludeOutboundPorts)
		}
		e.HoldApplicationUntilProxyStarts = client.HoldApplicationUntilProxyStarts
	}
	return e
}

// clientGetsSidecar: Inject (the default) puts a client in the mesh the way
// its namespace is in it, so in an ambient namespace it stays in ambient;
// Istio honours a pod's sidecar.istio.io/inject label even there, so writing
// it would quietly move the client to a sidecar. Only Sidecar asks for that.
func clientGetsSidecar(proxy v1alpha1.ClientProxy, ambient bool) bool {
	switch proxy {
	case v1alpha1.ClientProxyUnchanged:
		return false
	case v1alpha1.ClientProxySidecar:
		return true
	default: // Inject
		return !ambient
	}
}

// Equal reports whether e and o write the same keys and values.
func (e *Effect) Equal(o *Effect) bool {
	return maps.Equal(e.Labels, o.Labels) && maps.Equal(e.Annotations, o.Annotations) &&
		maps.EqualFunc(e.Ports, o.Ports, slices.Equal[[]int32]) &&
		e.HoldApplicationUntilProxyStarts == o.HoldApplicationUntilProxyStarts
}

func portNumbers(ports []v1alpha1.Port) []int32 {
	out := make([]int32, len(ports))
	for i, p := range ports {
		out[i] = int32(p)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// DryRunReport is the value of meshrole.io/dry-run: what a DryRun policy
// would have written had it been enforced.
type DryRunReport struct {
	Policy   string        `json:"policy"`
	Workload string        `json:"workload"`
	Role     v1alpha1.Role `json:"role"`
	Effect
}

// Effect is everything the decision writes on a pod: the winner's Istio keys
// and meshrole's traceability, conflict and dry-run annotations.
func (d Decision) Effect() Effect {
	var e Effect
	if d.Winner != nil {
		e = IstioEffect(d.Winner.Workload, d.Ambient)
		e.Annotations[RoleAnnotation] = string(d.Winner.Role())
		e.Annotations[PolicyAnnotation] = d.Winner.Policy.String()
		e.Annotations[WorkloadAnnotation] = d.Winner.Workload.Name
		if len(d.Conflicts) > 0 {
			e.Annotations[ConflictAnnotation] = d.conflictSummary()
		}
	}
	if d.DryRun != nil {
		if e.Annotations == nil {
			e.Annotations = map[string]string{}
		}
		report := DryRunReport{
			Policy:   d.DryRun.Policy.String(),
			Workload: d.DryRun.Workload.Name,
			Role:     d.DryRun.Role(),
			Effect:   IstioEffect(d.DryRun.Workload, d.Ambient),
		}
		// Marshalling maps, strings and ints cannot fail; json sorts map keys,
		// so the value is stable across admissions.
		b, _ := json.Marshal(report)
		e.Annotations[DryRunAnnotation] = string(b)
	}
	return e
}

func (d Decision) conflictSummary() string {
	parts := make([]string, len(d.Conflicts))
	for i := range d.Conflicts {
		parts[i] = conflictText(&d.Conflicts[i])
	}
	return strings.Join(parts, ",")
}

// conflictText is one conflicting entry's part of meshrole.io/conflict.
func conflictText(c *Match) string {
	return fmt.Sprintf("%s/%s=%s", c.Policy, c.Workload.Name, c.Role())
}

// Warnings are the admission warnings the decision itself calls for.
func (d Decision) Warnings() []string {
	var w []string
	for i := range d.Conflicts {
		c := &d.Conflicts[i]
		w = append(w, fmt.Sprintf("meshrole: conflicting policies at priority %d: %s wins over %s, which would write other keys; give one policy a higher priority",
			d.Winner.Priority, d.Winner, c))
	}
	if d.DryRun != nil {
		w = append(w, fmt.Sprintf("meshrole: DryRun policy %s would make this pod %s; nothing was changed for it (see annotation %s)",
			d.DryRun.Policy, d.DryRun.Role(), DryRunAnnotation))
	}
	return w
}

// Apply writes e onto a pod's labels and annotations. It returns new maps
// (the inputs are not modified) and warnings for existing values it had to
// leave alone. Annotations under KeyPrefix that e does not write are removed:
// they are meshrole's record, and one the verdict does not write is stale or
// forged. Existing values that Istio would reject are never merged into:
// an invalid annotation makes Istio's injector refuse the pod, and meshrole
// must not turn a pod Istio would admit into one it refuses, or guess what a
// broken value meant.
func (e *Effect) Apply(podLabels, podAnnotations map[string]string) (outLabels, outAnnotations map[string]string, warnings []string) {
	outLabels = maps.Clone(podLabels)
	outAnnotations = maps.Clone(podAnnotations)
	if len(e.Labels) > 0 && outLabels == nil {
		outLabels = map[string]string{}
	}
	if (len(e.Annotations) > 0 || len(e.Ports) > 0 || e.HoldApplicationUntilProxyStarts) && outAnnotations == nil {
		outAnnotations = map[string]string{}
	}
	maps.DeleteFunc(outAnnotations, func(k, _ string) bool {
		_, written := e.Annotations[k]
		return strings.HasPrefix(k, KeyPrefix) && !written
	})
	maps.Copy(outLabels, e.Labels)
	maps.Copy(outAnnotations, e.Annotations)

	for _, key := range slices.Sorted(maps.Keys(e.Ports)) {
		merged, err := MergePortList(outAnnotations[key], e.Ports[key])
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("meshrole: annotation %s=%q is not a valid port list (%v); left as it is, so ports %v are NOT excluded: fix the annotation",
				key, outAnnotations[key], err, e.Ports[key]))
			continue
		}
		outAnnotations[key] = merged
	}

	if e.HoldApplicationUntilProxyStarts {
		merged, err := MergeHoldApplication(outAnnotations[IstioProxyConfig])
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("meshrole: annotation %s cannot be merged (%v); left as it is, so %s is NOT set: fix the annotation",
				IstioProxyConfig, err, HoldApplicationUntilProxyStarts))
		} else {
			outAnnotations[IstioProxyConfig] = merged
		}
	}
	return outLabels, outAnnotations, warnings
}

// ParsePortList reads a port-list annotation the way Istio does
// (pkg/kube/inject parsePorts): comma-separated, blanks trimmed, each a
// 16-bit unsigned integer; an empty value is an empty list.
func ParsePortList(value string) ([]string, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, nil
	}
	parts := strings.Split(value, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
		if _, err := strconv.ParseUint(parts[i], 10, 16); err != nil {
			return nil, fmt.Errorf("%q is not a port", p)
		}
	}
	return parts, nil
}

// MergePortList adds ports to an existing port-list value as a set: the
// existing entries keep their order and spelling, new ports follow in
// ascending order. The value is returned unchanged when nothing is added.
func MergePortList(existing string, ports []int32) (string, error) {
	have, err := ParsePortList(existing)
	if err != nil {
		return existing, err
	}
	seen := make(map[uint64]bool, len(have))
	for _, h := range have {
		n, _ := strconv.ParseUint(h, 10, 16)
		seen[n] = true
	}
	added := false
	for _, p := range ports {
		if !seen[uint64(p)] {
			seen[uint64(p)] = true
			have = append(have, strconv.Itoa(int(p)))
			added = true
		}
	}
	if !added {
		return existing, nil
	}
	return strings.Join(have, ","), nil
}

// MergeHoldApplication sets holdApplicationUntilProxyStarts: true in a
// proxy.istio.io/config value (YAML or JSON), keeping its other keys. The
// value is returned unchanged when it already says so, and refused when
// writing it back would change what its other keys mean (a quoted "<<"
// key, for one, is written back as YAML's merge key).
func MergeHoldApplication(existing string) (string, error) {
	config := map[string]any{}
	if strings.TrimSpace(existing) != "" {
		if err := yaml.Unmarshal([]byte(existing), &config); err != nil {
			return existing, err
		}
		if config == nil { // a document of only comments or "null"
			config = map[string]any{}
		}
	}
	if v, ok := config[HoldApplicationUntilProxyStarts].(bool); ok && v {
		return existing, nil
	}
	config[HoldApplicationUntilProxyStarts] = true
	out, err := yaml.Marshal(config)
	if err != nil {
		return existing, err
	}
	var reread map[string]any
	if err := yaml.Unmarshal(out, &reread); err != nil || !reflect.DeepEqual(reread, config) {
		return existing, fmt.Errorf("its keys cannot be written back as YAML with the same meaning")
	}
	return string(out), nil
}

// ConflictingPolicies reads a meshrole.io/conflict value back into the
// policies it names ("<namespace>/<name>" or "cluster/<name>").
func ConflictingPolicies(value string) []string {
	var refs []string
	for _, part := range strings.Split(value, ",") {
		entry, _, _ := strings.Cut(part, "=")
		// entry is "<policy ref>/<workload>"; the workload name has no "/".
		if i := strings.LastIndex(entry, "/"); i > 0 {
			refs = append(refs, entry[:i])
		}
	}
	return refs
}

// ParseRef reads the form written to meshrole.io/policy back into a Ref.
func ParseRef(s string) (Ref, bool) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return Ref{}, false
	}
	if ns == "cluster" {
		return Ref{Name: name}, true
	}
	return Ref{Namespace: ns, Name: name}, true
}
