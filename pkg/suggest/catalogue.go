package suggest

import (
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

//go:embed catalogue.yaml
var catalogueYAML []byte

// Catalogue lists the peer-replicating systems suggest recognises.
type Catalogue struct {
	Systems []System `json:"systems"`
}

// System is one peer-replicating system: how to recognise its members, which
// ports they replicate on, which ports their clients dial, and how the
// members should meet the sidecar.
type System struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Images are image hints (see catalogue.yaml for how they match).
	Images []string `json:"images"`
	// ConfigHints are strings only a member carries in its env names, args
	// or mounted ConfigMaps.
	ConfigHints []string `json:"configHints,omitempty"`
	// RequiresPeers: the peer port alone does not show replication; the
	// workload must run more than one replica or name its own Service.
	RequiresPeers bool               `json:"requiresPeers,omitempty"`
	Treatment     v1alpha1.PeerProxy `json:"treatment"`
	Why           string             `json:"why"`
	TreatmentDocs []string           `json:"treatmentDocs"`
	PeerPorts     []PortSpec         `json:"peerPorts"`
	ClientPorts   []PortSpec         `json:"clientPorts"`
	// BusPortOffset: a declared port that is another declared port plus this
	// offset is a peer port (Redis Cluster's bus port).
	BusPortOffset int32 `json:"busPortOffset,omitempty"`
}

// PortSpec is one purpose a system uses a port for.
type PortSpec struct {
	Purpose string `json:"purpose"`
	// Ports are the known numbers; the first is the system's default.
	Ports []int32 `json:"ports"`
	// Names are container or Service port names that mean this purpose.
	Names []string `json:"names,omitempty"`
	// Protocol is tcp (empty), http or grpc.
	Protocol string `json:"protocol,omitempty"`
	// AlsoDials are ports a client dials on its own once it dials this one
	// (Nacos 2 clients open gRPC on the main port + 1000).
	AlsoDials []int32  `json:"alsoDials,omitempty"`
	Docs      []string `json:"docs"`
}

// LoadCatalogue parses and checks a catalogue in the format of catalogue.yaml.
func LoadCatalogue(data []byte) (*Catalogue, error) {
	var c Catalogue
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("reading the catalogue: %w", err)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

var defaultCatalogue = sync.OnceValues(func() (*Catalogue, error) { return LoadCatalogue(catalogueYAML) })

// DefaultCatalogue is the catalogue built into meshrole (catalogue.yaml).
func DefaultCatalogue() (*Catalogue, error) { return defaultCatalogue() }

// System returns the entry with the given name, or nil.
func (c *Catalogue) System(name string) *System {
	for i := range c.Systems {
		if c.Systems[i].Name == name {
			return &c.Systems[i]
		}
	}
	return nil
}

func (c *Catalogue) check() error {
	var problems []error
	seen := map[string]bool{}
	for i := range c.Systems {
		s := &c.Systems[i]
		where := fmt.Sprintf("catalogue entry %d (%s)", i+1, s.Name)
		if s.Name == "" || seen[s.Name] {
			problems = append(problems, fmt.Errorf("%s: a unique name is required", where))
		}
		seen[s.Name] = true
		if s.Treatment != v1alpha1.PeerProxySkip && s.Treatment != v1alpha1.PeerProxyBypassPorts {
			problems = append(problems, fmt.Errorf("%s: treatment %q: use Skip or BypassPorts", where, s.Treatment))
		}
		if len(s.Images) == 0 && len(s.ConfigHints) == 0 {
			problems = append(problems, fmt.Errorf("%s: needs image hints or config hints", where))
		}
		if s.Why == "" || len(s.TreatmentDocs) == 0 {
			problems = append(problems, fmt.Errorf("%s: the treatment needs a why and a public document", where))
		}
		if len(s.PeerPorts) == 0 {
			problems = append(problems, fmt.Errorf("%s: needs at least one peer port", where))
		}
		for _, p := range slices.Concat(s.PeerPorts, s.ClientPorts) {
			problems = append(problems, p.check(where)...)
		}
	}
	return errors.Join(problems...)
}

func (p PortSpec) check(where string) []error {
	var problems []error
	where = fmt.Sprintf("%s, port %q", where, p.Purpose)
	if len(p.Ports) == 0 {
		problems = append(problems, fmt.Errorf("%s: needs a port number", where))
	}
	for _, n := range p.Ports {
		// The same bounds the policy API enforces on peer ports.
		if n < 1 || n > 65535 || (n >= 15000 && n <= 15099) {
			problems = append(problems, fmt.Errorf("%s: port %d cannot be listed in a policy", where, n))
		}
	}
	switch p.Protocol {
	case "", "tcp", "http", "grpc":
	default:
		problems = append(problems, fmt.Errorf("%s: protocol %q: use tcp, http or grpc", where, p.Protocol))
	}
	if len(p.Docs) == 0 {
		problems = append(problems, fmt.Errorf("%s: cite the public documentation of the port", where))
	}
	for _, d := range p.Docs {
		if !strings.HasPrefix(d, "https://") {
			problems = append(problems, fmt.Errorf("%s: %q is not an https address", where, d))
		}
	}
	return problems
}

// clientProtocol is the catalogue's protocol for a client port of s, or "".
func (s *System) clientProtocol(port int32) string {
	for _, p := range s.ClientPorts {
		if slices.Contains(p.Ports, port) {
			return cmp.Or(p.Protocol, "tcp")
		}
	}
	return ""
}

func (s *System) isClientPort(port int32) bool { return s.clientProtocol(port) != "" }

// alsoDials are the ports a client dials on its own once it dials port.
func (s *System) alsoDials(port int32) []int32 {
	for _, p := range s.ClientPorts {
		if slices.Contains(p.Ports, port) {
			return p.AlsoDials
		}
	}
	return nil
}
