package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// DriftReason names one way a running pod differs from what the current
// policies would give it if it were created now.
type DriftReason string

// Drift reasons.
const (
	// DriftSidecarOnPeer: the verdict keeps the pod out of the sidecar, but
	// Istio's injector has injected it.
	DriftSidecarOnPeer DriftReason = "SidecarOnPeer"
	// DriftNoVerdict: a policy decides the pod now, but the pod carries no
	// verdict: it was admitted before meshrole ran or before the policy
	// reached meshrole's cache.
	DriftNoVerdict DriftReason = "NoVerdict"
	// DriftStaleVerdict: the pod's recorded verdict (policy, workload or
	// role) is not the current winner's: the policy was edited or deleted, or
	// another one now wins.
	DriftStaleVerdict DriftReason = "StaleVerdict"
	// DriftVerdictGone: the pod carries a verdict, but no enforced policy
	// decides it any more.
	DriftVerdictGone DriftReason = "VerdictGone"
	// DriftMissingKeys: Istio keys or ports the current verdict writes are
	// absent from the pod or have other values.
	DriftMissingKeys DriftReason = "MissingKeys"
	// DriftStaleRecord: meshrole's conflict or dry-run record on the pod is
	// not what the current policies would write.
	DriftStaleRecord DriftReason = "StaleRecord"
)

// Drift is one reason a pod has drifted, with what people need to know.
type Drift struct {
	Reason DriftReason
	// Detail says what differs, in words.
	Detail string
}

func (d Drift) String() string { return string(d.Reason) + ": " + d.Detail }

// ReadsAnnotation reports whether DetectDrift reads a pod annotation: every
// key under KeyPrefix (meshrole's record, removed when the verdict does not
// write it), every key an Effect writes or merges into, and Istio's status
// annotation. The engine reads no pod annotation, and all pod labels (a
// selector may name any). A metadata cache that keeps the labels and these
// annotations gives DetectDrift and Decide what the whole pod would.
func ReadsAnnotation(key string) bool {
	if strings.HasPrefix(key, KeyPrefix) {
		return true
	}
	switch key {
	case IstioSidecarStatus, IstioInjectKey, IstioExcludeInboundPorts, IstioExcludeOutboundPorts, IstioProxyConfig:
		return true
	}
	return false
}

// DetectDrift reports how a pod's labels and annotations differ from what the
// decision the current policies give it would write at its admission; nil
// means the pod is what a fresh admission would make it. It reads metadata
// only, so a metadata-only informer's objects are enough: Istio's injector
// leaves its status annotation on every pod it injected.
//
// The test is the webhook's own: Effect.Apply on the pod's metadata changes
// nothing. Keys Istio adds when it injects (its status annotation, its
// labels, its own ports merged into a port list) are no drift: Apply writes
// exact values only for keys that are meshrole's, and merges ports as sets.
func DetectDrift(podLabels, podAnnotations map[string]string, d Decision) []Drift {
	var drift []Drift
	effect := d.Effect()
	_, injected := podAnnotations[IstioSidecarStatus]
	if injected && effect.Labels[IstioInjectKey] == "false" {
		drift = append(drift, Drift{DriftSidecarOnPeer, fmt.Sprintf(
			"%s keeps it out of the sidecar, but Istio injected it (annotation %s)", d.Winner, IstioSidecarStatus)})
	}
	drift = append(drift, verdictDrift(podAnnotations, d)...)

	newLabels, newAnnotations, _ := effect.Apply(podLabels, podAnnotations)
	var istio, records []string
	for _, c := range diffKeys("label", podLabels, newLabels) {
		istio = append(istio, c.text)
	}
	for _, c := range diffKeys("annotation", podAnnotations, newAnnotations) {
		switch c.key {
		case PolicyAnnotation, WorkloadAnnotation, RoleAnnotation:
			// verdictDrift has said it in words.
		case ConflictAnnotation, DryRunAnnotation:
			records = append(records, c.text)
		default:
			istio = append(istio, c.text)
		}
	}
	if len(istio) > 0 {
		drift = append(drift, Drift{DriftMissingKeys, strings.Join(istio, "; ")})
	}
	if len(records) > 0 {
		drift = append(drift, Drift{DriftStaleRecord, strings.Join(records, "; ")})
	}
	return drift
}

// verdictDrift compares the verdict recorded on the pod with the winner.
func verdictDrift(podAnnotations map[string]string, d Decision) []Drift {
	recorded, hasVerdict := podAnnotations[PolicyAnnotation]
	if d.Winner == nil {
		if hasVerdict {
			return []Drift{{DriftVerdictGone, fmt.Sprintf("it records policy %s, but no enforced policy decides it now", recorded)}}
		}
		return nil
	}
	if !hasVerdict {
		return []Drift{{DriftNoVerdict, fmt.Sprintf("%s decides it now, but it carries no verdict: it was admitted before meshrole or before that policy reached meshrole's cache", d.Winner)}}
	}
	want := map[string]string{
		PolicyAnnotation:   d.Winner.Policy.String(),
		WorkloadAnnotation: d.Winner.Workload.Name,
		RoleAnnotation:     string(d.Winner.Role()),
	}
	var stale []string
	for _, key := range []string{PolicyAnnotation, WorkloadAnnotation, RoleAnnotation} {
		if podAnnotations[key] != want[key] {
			stale = append(stale, fmt.Sprintf("%s=%q", key, podAnnotations[key]))
		}
	}
	if len(stale) == 0 {
		return nil
	}
	return []Drift{{DriftStaleVerdict, fmt.Sprintf("it records %s, but %s decides it now", strings.Join(stale, ", "), d.Winner)}}
}

type keyChange struct {
	key, text string
}

// diffKeys lists, in key order, the keys whose values differ between before
// and after.
func diffKeys(kind string, before, after map[string]string) []keyChange {
	keys := slices.Sorted(maps.Keys(after))
	for k := range before {
		if _, ok := after[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var changes []keyChange
	for _, k := range keys {
		old, had := before[k]
		v, has := after[k]
		switch {
		case had && has && old == v:
		case !had:
			changes = append(changes, keyChange{k, fmt.Sprintf("%s %s=%q missing", kind, k, v)})
		case !has:
			changes = append(changes, keyChange{k, fmt.Sprintf("%s %s=%q not written by the verdict", kind, k, old)})
		default:
			changes = append(changes, keyChange{k, fmt.Sprintf("%s %s is %q, the verdict writes %q", kind, k, old, v)})
		}
	}
	return changes
}
