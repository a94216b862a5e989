package suggest

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Signal names, as the evidence lists them.
const (
	signalHeadless  = "headless-service"
	signalPeerPorts = "peer-ports"
	signalImage     = "image"
	signalConfig    = "config"
)

// peerMatch is a workload recognised as a member of a catalogue system.
type peerMatch struct {
	w          *workload
	system     *System
	services   []*corev1.Service
	confidence Confidence
	evidence   Evidence
	// found counts the peer-port purposes the workload declares.
	found int
	// ports are the ports BypassPorts would list.
	ports []int32
}

// matchPeer returns the catalogue system w is most convincingly a member
// of, or nil.
func (o *objects) matchPeer(w *workload, cat *Catalogue) *peerMatch {
	services := o.selecting(w)
	declared := ports(w, services)
	texts := o.texts(w)
	var best *peerMatch
	for i := range cat.Systems {
		m := matchSystem(w, &cat.Systems[i], services, declared, texts)
		if m != nil && (best == nil || m.better(best)) {
			best = m
		}
	}
	return best
}

func (m *peerMatch) better(than *peerMatch) bool {
	if m.confidence != than.confidence {
		return m.confidence.rank() > than.confidence.rank()
	}
	if m.found != than.found {
		return m.found > than.found
	}
	return m.system.Name < than.system.Name
}

func matchSystem(w *workload, sys *System, services []*corev1.Service, declared []declaredPort, texts []text) *peerMatch {
	m := &peerMatch{w: w, system: sys, services: services}
	ev := &m.evidence

	for _, c := range w.spec.Containers {
		for _, hint := range sys.Images {
			if imageMatches(c.Image, hint) {
				ev.Images = append(ev.Images, fmt.Sprintf("%s (container %s, hint %s)", c.Image, c.Name, hint))
				break
			}
		}
	}
	for _, hint := range sys.ConfigHints {
		for _, t := range texts {
			if strings.Contains(t.name, hint) || strings.Contains(t.value, hint) {
				ev.Config = append(ev.Config, fmt.Sprintf("%q in %s", hint, t.source))
				break
			}
		}
	}
	identified := len(ev.Images) > 0 || len(ev.Config) > 0

	byNumber := 0
	for i, spec := range sys.PeerPorts {
		found, number := findPort(spec, declared, identified)
		// Any two ports can differ by the offset: the pair counts only once
		// the image or configuration names the system.
		if i == 0 && len(found) == 0 && sys.BusPortOffset > 0 && identified {
			found, number = findBusPort(spec, declared, sys.BusPortOffset), true
		}
		if len(found) == 0 {
			// Not declared, but the system uses it: BypassPorts lists the
			// default so that the purpose is not left to the sidecar.
			found = []PortEvidence{{Port: spec.Ports[0], Purpose: spec.Purpose, Found: "catalogue default (not declared)"}}
		} else {
			m.found++
			if number {
				byNumber++
			}
		}
		ev.Ports = append(ev.Ports, found...)
		for _, p := range found {
			m.ports = append(m.ports, p.Port)
		}
	}
	slices.Sort(m.ports)
	m.ports = slices.Compact(m.ports)

	// Port numbers alone must show at least two of a system's purposes (one
	// if it has one): a lone 7000 or 4444 is too common to mean anything.
	// Port names only count once the image or configuration names the system.
	portsSeen := byNumber >= min(2, len(sys.PeerPorts)) || (identified && m.found > 0)
	if !portsSeen {
		return nil
	}
	if sys.RequiresPeers {
		ev.Peers = peersOf(w, services, texts)
		if ev.Peers == "" {
			return nil
		}
	}

	if slices.ContainsFunc(services, headless) {
		ev.Signals = append(ev.Signals, signalHeadless)
	}
	ev.Signals = append(ev.Signals, signalPeerPorts)
	if len(ev.Images) > 0 {
		ev.Signals = append(ev.Signals, signalImage)
	}
	if len(ev.Config) > 0 {
		ev.Signals = append(ev.Signals, signalConfig)
	}
	switch n := btoi(slices.ContainsFunc(services, headless)) + btoi(identified); n {
	case 2:
		m.confidence = High
	case 1:
		m.confidence = Medium
	default:
		m.confidence = Low
	}
	for _, s := range services {
		ev.Services = append(ev.Services, ServiceEvidence{Name: s.Name, Headless: headless(s), PublishNotReadyAddresses: s.Spec.PublishNotReadyAddresses})
	}
	return m
}

// findPort finds one purpose among the declared ports: by number, or by
// name when the system is identified otherwise. One entry per port number.
func findPort(spec PortSpec, declared []declaredPort, identified bool) (found []PortEvidence, byNumber bool) {
	seen := map[int32]bool{}
	for _, d := range declared {
		if slices.Contains(spec.Ports, d.number) && !seen[d.number] {
			seen[d.number] = true
			found = append(found, PortEvidence{Port: d.number, Purpose: spec.Purpose, Found: d.where})
		}
	}
	if len(found) > 0 || !identified {
		return found, len(found) > 0
	}
	for _, d := range declared {
		if slices.Contains(spec.Names, d.name) && !seen[d.number] {
			seen[d.number] = true
			found = append(found, PortEvidence{Port: d.number, Purpose: spec.Purpose, Found: d.where + ", by name"})
		}
	}
	return found, false
}

// findBusPort finds ports that are another declared port plus offset.
func findBusPort(spec PortSpec, declared []declaredPort, offset int32) []PortEvidence {
	var found []PortEvidence
	seen := map[int32]bool{}
	for _, bus := range declared {
		for _, data := range declared {
			if bus.number == data.number+offset && !seen[bus.number] {
				seen[bus.number] = true
				found = append(found, PortEvidence{Port: bus.number, Purpose: spec.Purpose, Found: fmt.Sprintf("%s = %d + %d", bus.where, data.number, offset)})
			}
		}
	}
	return found
}

// peersOf says why w has peers: more than one replica, or configuration
// that names one of its own Services. Empty when neither.
func peersOf(w *workload, services []*corev1.Service, texts []text) string {
	if w.replicas > 1 {
		return fmt.Sprintf("%d replicas", w.replicas)
	}
	if w.replicas < 0 {
		return "one replica per node"
	}
	names := newNameIndex()
	for _, s := range services {
		names.add(s, nil)
	}
	for _, t := range texts {
		if refs := names.find(t, w.ref.Namespace); len(refs) > 0 {
			return fmt.Sprintf("names its own Service %s in %s", refs[0].ref.Service, t.source)
		}
	}
	return ""
}

// recommended is the catalogue's treatment of a peer.
func (m *peerMatch) recommended() Treatment {
	t := Treatment{Proxy: m.system.Treatment, Why: m.system.Why, Docs: m.system.TreatmentDocs}
	if t.Proxy == v1alpha1.PeerProxyBypassPorts {
		t.Ports = m.ports
	}
	return t
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
