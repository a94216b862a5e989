package suggest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Options tune Suggest.
type Options struct {
	// Catalogue defaults to DefaultCatalogue().
	Catalogue *Catalogue
	// MinConfidence drops weaker findings; the default is Medium, which
	// leaves out peers seen by their ports alone.
	MinConfidence Confidence
}

// PolicyName is the name of the MeshRolePolicy suggested in each namespace;
// when the namespace already has a policy of that name, "-2", "-3", ... is
// appended, so that applying a suggestion never replaces an existing policy.
const PolicyName = "meshrole-suggested"

// Suggest finds the peers and clients in inv. Findings come sorted by
// namespace and workload; Policies turns them into MeshRolePolicies.
func Suggest(inv *Inventory, opts Options) ([]Finding, error) {
	cat := opts.Catalogue
	if cat == nil {
		c, err := DefaultCatalogue()
		if err != nil {
			return nil, err
		}
		cat = c
	}
	minConfidence := cmp.Or(opts.MinConfidence, Medium)
	if minConfidence.rank() == 0 {
		return nil, fmt.Errorf("confidence %q: use high, medium or low", minConfidence)
	}

	o := index(inv)
	workloads := inv.workloads()
	judge := &judge{store: inv.store(), namespaceLabels: inv.namespaceLabels()}

	var findings []Finding
	peers := map[*workload]bool{}
	names := newNameIndex()
	for _, w := range workloads {
		m := o.matchPeer(w, cat)
		if m == nil || !m.confidence.AtLeast(minConfidence) {
			continue
		}
		peers[w] = true
		for _, s := range m.services {
			names.add(s, m)
		}
		findings = append(findings, judge.classify(peerFinding(m), w))
	}

	// A peer's own configuration names its peers, and a pod gets one role:
	// peers are not reported as clients (of their own or another system).
	for _, w := range workloads {
		if peers[w] {
			continue
		}
		for _, c := range o.clientsOf(w, names) {
			f := clientFinding(c)
			if f.Confidence.AtLeast(minConfidence) {
				findings = append(findings, judge.classify(f, w))
			}
		}
	}

	place(findings, workloads, inv.MeshRolePolicies, inv.namespaceLabels())
	slices.SortStableFunc(findings, compareFindings)
	return findings, nil
}

func compareFindings(a, b Finding) int {
	return cmp.Or(
		cmp.Compare(a.Workload.Namespace, b.Workload.Namespace),
		cmp.Compare(a.Workload.Name, b.Workload.Name),
		cmp.Compare(a.Workload.Kind, b.Workload.Kind),
		cmp.Compare(a.System, b.System),
	)
}

func peerFinding(m *peerMatch) Finding {
	return Finding{
		Kind:       KindPeer,
		Workload:   m.w.ref,
		Role:       v1alpha1.RolePeerStateful,
		System:     m.system.Name,
		Confidence: m.confidence,
		Evidence:   m.evidence,
		Treatment:  m.recommended(),
	}
}

// clientsOf returns, per peer, what w's configuration says about its Services.
func (o *objects) clientsOf(w *workload, names *nameIndex) []*clientMatch {
	var out []*clientMatch
	byPeer := map[*peerMatch]*clientMatch{}
	for _, t := range o.texts(w) {
		for _, r := range names.find(t, w.ref.Namespace) {
			c := byPeer[r.target.peer]
			if c == nil {
				c = &clientMatch{w: w, peer: r.target.peer}
				byPeer[r.target.peer] = c
				out = append(out, c)
			}
			c.refs = append(c.refs, r)
		}
	}
	return out
}

func clientFinding(c *clientMatch) Finding {
	peer := c.peer.w.ref
	f := Finding{
		Kind:       KindClient,
		Workload:   c.w.ref,
		Role:       v1alpha1.RoleClientStateless,
		System:     c.peer.system.Name,
		Confidence: Medium,
		Evidence:   Evidence{Signals: []string{"names-peer-service"}, Dials: &peer, DialledPorts: c.dialled()},
		Treatment:  c.recommended(),
	}
	for _, r := range c.refs {
		f.Evidence.References = append(f.Evidence.References, r.ref)
		if r.strong {
			f.Confidence = High
		}
	}
	return f
}

// judge asks the decision engine what the existing policies do with a
// workload, and compares it with the catalogue.
type judge struct {
	store           *policy.Store
	namespaceLabels func(string) map[string]string
}

func (j *judge) classify(f Finding, w *workload) Finding {
	d := j.store.Decide(policy.Input{
		Namespace:       w.ref.Namespace,
		NamespaceLabels: labels.Set(j.namespaceLabels(w.ref.Namespace)),
		PodLabels:       labels.Set(w.labels),
	})
	if d.Winner == nil {
		if d.DryRun != nil {
			f.Note = fmt.Sprintf("only a DryRun policy matches: %s", d.DryRun)
		}
		return f
	}
	f.Existing = verdictOf(d.Winner)
	agrees, note := agreement(f, d.Winner.Workload)
	f.Kind = KindDisagrees
	if agrees {
		f.Kind = KindCovered
	}
	f.Note = fmt.Sprintf("%s: %s", d.Winner, note)
	return f
}

func verdictOf(m *policy.Match) *Verdict {
	v := &Verdict{Policy: m.Policy.String(), Workload: m.Workload.Name, Role: m.Role()}
	if p := m.Workload.Peer; p != nil {
		v.Proxy = string(p.Proxy)
		v.Ports = portNumbers(p.Ports)
	}
	if c := m.Workload.Client; c != nil {
		v.Proxy = string(c.Proxy)
		v.ExcludeOutboundPorts = portNumbers(c.ExcludeOutboundPorts)
	}
	return v
}

// agreement compares an existing entry (defaulted by the Store) with the
// catalogue's treatment. Skip where BypassPorts is recommended agrees: it
// keeps every peer port off the sidecar, and more.
func agreement(f Finding, w *v1alpha1.Workload) (bool, string) {
	rec := f.Treatment
	if w.Role != f.Role {
		return false, fmt.Sprintf("the catalogue makes it %s (%s)", f.Role, f.System)
	}
	if f.Role == v1alpha1.RoleClientStateless {
		if missing := without(rec.ExcludeOutboundPorts, portNumbers(w.Client.ExcludeOutboundPorts)); len(missing) > 0 {
			return false, fmt.Sprintf("does not exclude %s, which the client dials on %s", portList(missing), f.System)
		}
		return true, "excludes every port the catalogue recommends"
	}
	switch {
	case w.Peer.Proxy == v1alpha1.PeerProxySkip && rec.Proxy == v1alpha1.PeerProxyBypassPorts:
		return true, fmt.Sprintf("Skip, stricter than the catalogue's BypassPorts %s: safe, but the client ports lose the sidecar too", portList(rec.Ports))
	case w.Peer.Proxy == v1alpha1.PeerProxySkip:
		return true, "Skip, as the catalogue recommends"
	case rec.Proxy == v1alpha1.PeerProxySkip:
		return false, fmt.Sprintf("BypassPorts %s where the catalogue recommends Skip: %s", portList(portNumbers(w.Peer.Ports)), rec.Why)
	}
	if missing := without(rec.Ports, portNumbers(w.Peer.Ports)); len(missing) > 0 {
		return false, fmt.Sprintf("BypassPorts does not list the peer ports %s", portList(missing))
	}
	return true, "BypassPorts with every peer port the catalogue lists"
}

// place puts every Peer finding, and every Client finding with ports to
// exclude, in its namespace's suggested policy, with a selector for the
// workload's pods that picks no other workload there.
func place(findings []Finding, workloads []*workload, existing []v1alpha1.MeshRolePolicy, namespaceLabels func(string) map[string]string) {
	byRef := map[WorkloadRef]*workload{}
	byNamespace := map[string][]*workload{}
	for _, w := range workloads {
		byRef[w.ref] = w
		byNamespace[w.ref.Namespace] = append(byNamespace[w.ref.Namespace], w)
	}
	taken := map[string]map[string]bool{}
	for _, p := range existing {
		if taken[p.Namespace] == nil {
			taken[p.Namespace] = map[string]bool{}
		}
		taken[p.Namespace][p.Name] = true
	}
	policyName := func(ns string) string {
		name := PolicyName
		for i := 2; taken[ns][name]; i++ {
			name = fmt.Sprintf("%s-%d", PolicyName, i)
		}
		return name
	}
	for i := range findings {
		f := &findings[i]
		switch {
		case f.Kind == KindClient && len(f.Treatment.ExcludeOutboundPorts) == 0:
			f.addNote("no entry needed: every port it dials stays meshed")
			continue
		case f.Kind != KindPeer && f.Kind != KindClient:
			continue
		}
		w := byRef[f.Workload]
		selector, note := selectorFor(w, byNamespace[w.ref.Namespace])
		f.addNote(note)
		if selector == nil {
			continue
		}
		f.Selector, f.Policy = selector, policyName(w.ref.Namespace)
		if namespaceLabels(w.ref.Namespace)[policy.EnabledNamespaceLabel] != "true" {
			f.addNote(fmt.Sprintf("namespace %s is not labelled %s=true: the webhook leaves its pods alone until it is", w.ref.Namespace, policy.EnabledNamespaceLabel))
		}
	}
}

func (f *Finding) addNote(note string) {
	switch {
	case note == "":
	case f.Note == "":
		f.Note = note
	default:
		f.Note += "; " + note
	}
}

// Labels that say nothing stable about a workload: per-pod or per-revision
// values, and the keys meshrole and Istio write.
var unstableLabel = []string{"pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index"}

func stableLabels(l map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		if slices.Contains(unstableLabel, k) || strings.HasPrefix(k, "meshrole.io/") || strings.Contains(k, "istio.io/") {
			continue
		}
		out[k] = v
	}
	return out
}

// selectorFor prefers the workload's own selector, then all its stable pod
// labels, whichever picks no other workload of the namespace.
func selectorFor(w *workload, namespace []*workload) (*metav1.LabelSelector, string) {
	var candidates []*metav1.LabelSelector
	if w.selector != nil && (len(w.selector.MatchLabels) > 0 || len(w.selector.MatchExpressions) > 0) {
		candidates = append(candidates, w.selector.DeepCopy())
	}
	if stable := stableLabels(w.labels); len(stable) > 0 {
		candidates = append(candidates, &metav1.LabelSelector{MatchLabels: stable})
	}
	var fallback *metav1.LabelSelector
	var overlap string
	for _, c := range candidates {
		s, err := metav1.LabelSelectorAsSelector(c)
		if err != nil || !s.Matches(labels.Set(w.labels)) {
			continue
		}
		i := slices.IndexFunc(namespace, func(o *workload) bool { return o != w && s.Matches(labels.Set(o.labels)) })
		if i < 0 {
			return c, ""
		}
		fallback, overlap = c, namespace[i].ref.String()
	}
	if fallback == nil {
		return nil, "no entry suggested: its pods carry no labels to select them by"
	}
	return fallback, fmt.Sprintf("its pods' labels also match %s: check the suggested selector", overlap)
}

func portNumbers(ports []v1alpha1.Port) []int32 {
	out := make([]int32, 0, len(ports))
	for _, p := range ports {
		out = append(out, int32(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// without returns the ports of want that have does not hold.
func without(want, have []int32) []int32 {
	var out []int32
	for _, p := range want {
		if !slices.Contains(have, p) {
			out = append(out, p)
		}
	}
	return out
}

func portList(ports []int32) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprint(p)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// sortedSet is the sorted union of port lists.
func sortedSet(lists ...[]int32) []int32 {
	out := slices.Concat(lists...)
	slices.Sort(out)
	return slices.Compact(out)
}
