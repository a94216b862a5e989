package suggest

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// nameIndex finds the Services a piece of configuration names.
type nameIndex struct {
	// services by "<name>.<namespace>"
	services map[string]*indexedService
}

type indexedService struct {
	svc  *corev1.Service
	peer *peerMatch
}

// foundRef is a Reference with what it resolved to.
type foundRef struct {
	ref    Reference
	target *indexedService
	// strong: the name is qualified (has a dot) or written with a port.
	strong bool
}

func newNameIndex() *nameIndex { return &nameIndex{services: map[string]*indexedService{}} }

func (n *nameIndex) add(s *corev1.Service, peer *peerMatch) {
	n.services[s.Name+"."+s.Namespace] = &indexedService{s, peer}
}

// hostPattern is a DNS name, optionally followed by a port.
var hostPattern = regexp.MustCompile(`[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?`)

// find returns the Services t names, for a workload in namespace ns. The
// forms are Kubernetes' DNS names: <svc>.<ns>[.svc[.cluster.local]],
// <pod>.<svc>.<ns>[...] for a headless Service, and, in the same namespace,
// <svc> and <pod>.<svc>. A bare <svc> counts only where it is plainly a
// host: with a port, after "://" or "@", or as the whole value.
func (n *nameIndex) find(t text, ns string) []foundRef {
	var out []foundRef
	for _, loc := range hostPattern.FindAllStringIndex(t.value, -1) {
		token := t.value[loc[0]:loc[1]]
		host, portText, _ := strings.Cut(token, ":")
		var port int32
		if portText != "" {
			p, err := strconv.Atoi(portText)
			if err != nil || p < 1 || p > 65535 {
				continue
			}
			port = int32(p)
		}
		bareAllowed := port != 0 ||
			strings.HasSuffix(t.value[:loc[0]], "://") ||
			strings.HasSuffix(t.value[:loc[0]], "@") ||
			strings.TrimSpace(t.value) == host
		target := n.resolve(strings.ToLower(host), ns, bareAllowed)
		if target == nil {
			continue
		}
		out = append(out, foundRef{
			ref:    Reference{Source: t.source, Host: host, Port: port, Service: target.svc.Namespace + "/" + target.svc.Name},
			target: target,
			strong: port != 0 || strings.Contains(host, "."),
		})
	}
	return out
}

func (n *nameIndex) resolve(host, ns string, bareAllowed bool) *indexedService {
	name := strings.TrimSuffix(strings.TrimSuffix(host, ".cluster.local"), ".svc")
	labels := strings.Split(name, ".")
	// <svc>.<ns>, then <pod>.<svc>.<ns> for headless Services.
	if len(labels) >= 2 {
		if s := n.services[strings.Join(labels[len(labels)-2:], ".")]; s != nil && (len(labels) == 2 || headless(s.svc)) {
			return s
		}
	}
	// <svc> or <pod>.<svc> in the workload's own namespace.
	switch len(labels) {
	case 1:
		if bareAllowed {
			return n.services[labels[0]+"."+ns]
		}
	case 2:
		if s := n.services[labels[1]+"."+ns]; s != nil && headless(s.svc) {
			return s
		}
	}
	return nil
}

// clientMatch is a workload that names the Services of one peer.
type clientMatch struct {
	w    *workload
	peer *peerMatch
	refs []foundRef
}

// dialled are the ports the client dials: the ports written in its
// references, else the Service's client ports (its pod ports for a headless
// Service, which clients reach directly).
func (c *clientMatch) dialled() []int32 {
	var out []int32
	for _, r := range c.refs {
		if r.ref.Port != 0 {
			out = append(out, r.ref.Port)
			continue
		}
		out = append(out, servicePorts(r.target.svc, c.peer.system)...)
	}
	for _, p := range out {
		out = append(out, c.peer.system.alsoDials(p)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func servicePorts(s *corev1.Service, sys *System) []int32 {
	var all, client []int32
	for _, p := range s.Spec.Ports {
		n := p.Port
		if headless(s) && p.TargetPort.IntVal != 0 {
			n = p.TargetPort.IntVal
		}
		all = append(all, n)
		if sys.isClientPort(n) {
			client = append(client, n)
		}
	}
	if len(client) > 0 {
		return client
	}
	return all
}

// recommended is what the client must dial directly, and why. A port is
// excluded when the peers take it without a sidecar (Skip, or one of the
// ports BypassPorts lists), or when the client dials an HTTP or gRPC port
// through a headless Service: Envoy keeps such a client's keep-alive
// connection and pins it to the IP of a member that has been replaced
// (ORIGINAL_DST), the failure meshrole exists for. A TCP client port on
// peers that keep their sidecar stays meshed, keeping mTLS: Envoy closes
// the client's connection when the member goes, and the client reconnects.
func (c *clientMatch) recommended() Treatment {
	sys := c.peer.system
	var exclude []int32
	var why []string
	for _, port := range c.dialled() {
		proto, viaHeadless := c.protocol(port)
		switch {
		case sys.Treatment == v1alpha1.PeerProxySkip:
			exclude = append(exclude, port)
			why = append(why, fmt.Sprintf("%d: the %s members run without a sidecar", port, sys.Name))
		case slices.Contains(c.peer.ports, port):
			exclude = append(exclude, port)
			why = append(why, fmt.Sprintf("%d: a peer port that bypasses the members' sidecar", port))
		case viaHeadless && (proto == "http" || proto == "grpc"):
			exclude = append(exclude, port)
			why = append(why, fmt.Sprintf("%d (%s) through a headless Service: Envoy would pin keep-alive connections to a replaced member's IP", port, proto))
		default:
			why = append(why, fmt.Sprintf("%d (%s) stays meshed, keeping mTLS", port, proto))
		}
	}
	return Treatment{ExcludeOutboundPorts: exclude, Why: strings.Join(why, "; "), Docs: sys.TreatmentDocs}
}

// protocol is the protocol the client speaks on port, and whether it
// reaches the port through a headless Service.
func (c *clientMatch) protocol(port int32) (string, bool) {
	proto := c.peer.system.clientProtocol(port)
	viaHeadless := false
	for _, r := range c.refs {
		s := r.target.svc
		for _, p := range s.Spec.Ports {
			if p.Port != port && p.TargetPort.IntVal != port {
				continue
			}
			viaHeadless = viaHeadless || headless(s)
			if proto == "" {
				proto = istioProtocol(p)
			}
		}
	}
	if proto == "" {
		for _, spec := range c.peer.system.PeerPorts {
			if slices.Contains(spec.Ports, port) {
				proto = spec.Protocol
			}
		}
	}
	if proto == "" {
		proto = "tcp"
	}
	return proto, viaHeadless
}

// istioProtocol is the protocol Istio selects for a Service port: its
// appProtocol, else its name's prefix ("http-web", "grpc").
func istioProtocol(p corev1.ServicePort) string {
	name := strings.ToLower(p.Name)
	if p.AppProtocol != nil {
		name = strings.ToLower(*p.AppProtocol)
	}
	prefix, _, _ := strings.Cut(name, "-")
	switch prefix {
	case "http", "http2", "kubernetes.io/h2c":
		return "http"
	case "grpc", "grpc-web":
		return "grpc"
	}
	return ""
}
