// Package suggest finds the peer-replicating workloads and their clients in a
// set of Kubernetes objects, by the signature the catalogue describes (a
// headless Service, peer ports, an image or configuration of a known system),
// and turns what it finds into MeshRolePolicies. Whether an existing policy
// already covers a workload is asked of pkg/policy's decision engine, the one
// the webhook uses. Suggest is pure: the kubectl plugin calls it with the
// objects it reads; the publisher (SetupPublisher), off unless set up, calls
// it in the cluster and writes the findings as Events on the workloads.
package suggest

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Kind says what a finding is.
type Kind string

const (
	// KindPeer is a member of a peer-replicating system that no policy covers.
	KindPeer Kind = "Peer"
	// KindClient is a workload that dials such a system and that no policy covers.
	KindClient Kind = "Client"
	// KindCovered is a peer or client that an existing policy already treats
	// as the catalogue recommends (or more strictly); nothing is suggested.
	KindCovered Kind = "Covered"
	// KindDisagrees is a peer or client that an existing policy treats
	// differently from the catalogue; nothing is suggested, the operator decides.
	KindDisagrees Kind = "Disagrees"
)

// Confidence is how strong the signature is.
type Confidence string

const (
	// High: a headless Service selects the workload, it declares the
	// system's peer ports, and its image or configuration names the system.
	High Confidence = "high"
	// Medium: the peer ports and one of the other two signals.
	Medium Confidence = "medium"
	// Low: the peer ports alone. Reported only when asked for.
	Low Confidence = "low"
)

func (c Confidence) rank() int {
	switch c {
	case High:
		return 3
	case Medium:
		return 2
	case Low:
		return 1
	}
	return 0
}

// AtLeast reports whether c is as strong as min.
func (c Confidence) AtLeast(min Confidence) bool { return c.rank() >= min.rank() }

// WorkloadRef names a workload.
type WorkloadRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r WorkloadRef) String() string { return fmt.Sprintf("%s %s/%s", r.Kind, r.Namespace, r.Name) }

// Finding is one workload suggest has something to say about.
type Finding struct {
	Kind     Kind        `json:"kind"`
	Workload WorkloadRef `json:"workload"`
	// Role is what the catalogue makes of the workload.
	Role v1alpha1.Role `json:"role"`
	// System is the catalogue entry: the system the workload is a member of,
	// or, for a client, the system it dials.
	System     string     `json:"system"`
	Confidence Confidence `json:"confidence"`
	Evidence   Evidence   `json:"evidence"`
	// Treatment is what the catalogue recommends.
	Treatment Treatment `json:"treatment"`
	// Existing is the verdict an existing Enforce policy gives the workload
	// (Covered, Disagrees).
	Existing *Verdict `json:"existing,omitempty"`
	// Note says why a finding is Covered or Disagrees, or why a client needs
	// no policy entry.
	Note string `json:"note,omitempty"`
	// Policy and Selector place a Peer or Client finding in a suggested
	// MeshRolePolicy of the workload's namespace; empty when nothing is
	// suggested for it.
	Policy   string                `json:"policy,omitempty"`
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// Treatment is the catalogue's recommendation for one workload.
type Treatment struct {
	// Proxy and Ports are for peers: Skip, or BypassPorts with these ports.
	Proxy v1alpha1.PeerProxy `json:"proxy,omitempty"`
	Ports []int32            `json:"ports,omitempty"`
	// ExcludeOutboundPorts is for clients: the ports they must dial directly.
	ExcludeOutboundPorts []int32  `json:"excludeOutboundPorts,omitempty"`
	Why                  string   `json:"why"`
	Docs                 []string `json:"docs,omitempty"`
}

// Verdict is what an existing policy does with a workload.
type Verdict struct {
	Policy               string        `json:"policy"`
	Workload             string        `json:"workload"`
	Role                 v1alpha1.Role `json:"role"`
	Proxy                string        `json:"proxy,omitempty"`
	Ports                []int32       `json:"ports,omitempty"`
	ExcludeOutboundPorts []int32       `json:"excludeOutboundPorts,omitempty"`
}

// Evidence is what the finding rests on.
type Evidence struct {
	// Signals are the signature's parts that were seen: headless-service,
	// peer-ports, image, config (the confidence counts them).
	Signals []string `json:"signals"`
	// Services select the peer's pods.
	Services []ServiceEvidence `json:"services,omitempty"`
	// Ports are the peer ports, and where each was found.
	Ports []PortEvidence `json:"ports,omitempty"`
	// Images are the containers' images that match an image hint.
	Images []string `json:"images,omitempty"`
	// Config are the configuration hints found.
	Config []string `json:"config,omitempty"`
	// Peers says why a system that requires peers has them.
	Peers string `json:"peers,omitempty"`

	// Dials is, for a client, the peer workload it dials.
	Dials *WorkloadRef `json:"dials,omitempty"`
	// References are where the client names the peers' Service.
	References []Reference `json:"references,omitempty"`
	// DialledPorts are the ports the client dials on the peers.
	DialledPorts []int32 `json:"dialledPorts,omitempty"`
}

// ServiceEvidence is a Service that selects a peer's pods.
type ServiceEvidence struct {
	Name                     string `json:"name"`
	Headless                 bool   `json:"headless"`
	PublishNotReadyAddresses bool   `json:"publishNotReadyAddresses,omitempty"`
}

// PortEvidence is one peer port.
type PortEvidence struct {
	Port    int32  `json:"port"`
	Purpose string `json:"purpose"`
	// Found is where: "container zookeeper port follower", "Service
	// zk-headless port tcp-follower", or "catalogue default (not declared)".
	Found string `json:"found"`
}

// Reference is one place a client names a peer Service.
type Reference struct {
	// Source is where: "env ZK_CONNECT of container app", "ConfigMap
	// shop/app-config key application.yml (volume config)".
	Source string `json:"source"`
	// Host is the name as written; Port is the port written next to it, or 0.
	Host    string `json:"host"`
	Port    int32  `json:"port,omitempty"`
	Service string `json:"service"`
}
