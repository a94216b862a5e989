package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Mode says whether a policy changes pods or only reports what it would do.
// +kubebuilder:validation:Enum=Enforce;DryRun
type Mode string

const (
	// ModeEnforce writes the role's Istio keys on matched pods.
	ModeEnforce Mode = "Enforce"
	// ModeDryRun writes no Istio key; matched pods get a meshrole.io/dry-run
	// annotation describing what Enforce would have written.
	ModeDryRun Mode = "DryRun"
)

// Role is what a workload is to its own replicas.
// +kubebuilder:validation:Enum=peer-stateful;client-stateless
type Role string

const (
	// RolePeerStateful members replicate state among themselves (Eureka
	// servers, ZooKeeper, Kafka brokers, ...); the sidecar must not sit
	// between them.
	RolePeerStateful Role = "peer-stateful"
	// RoleClientStateless workloads only call the peers; they keep the sidecar.
	RoleClientStateless Role = "client-stateless"
)

// PeerProxy says how a peer-stateful workload meets the proxy.
// +kubebuilder:validation:Enum=Skip;BypassPorts
type PeerProxy string

const (
	// PeerProxySkip runs the peers without a sidecar (and out of ambient mode).
	PeerProxySkip PeerProxy = "Skip"
	// PeerProxyBypassPorts keeps the sidecar but lets the peer ports bypass it
	// inbound and outbound.
	PeerProxyBypassPorts PeerProxy = "BypassPorts"
)

// ClientProxy says how a client-stateless workload meets the proxy.
// +kubebuilder:validation:Enum=Inject;Sidecar;Unchanged
type ClientProxy string

const (
	// ClientProxyInject puts the client in the mesh the way its namespace is:
	// the sidecar on, whatever the pod template says, except in a namespace
	// in Istio's ambient data plane (istio.io/dataplane-mode=ambient), where
	// the client stays in ambient.
	ClientProxyInject ClientProxy = "Inject"
	// ClientProxySidecar turns the sidecar on everywhere, moving the client
	// out of ambient in an ambient namespace.
	ClientProxySidecar ClientProxy = "Sidecar"
	// ClientProxyUnchanged leaves the pod's own injection choice alone.
	ClientProxyUnchanged ClientProxy = "Unchanged"
)

// Port is a TCP port that may bypass the sidecar. Istio's own ports
// (15000-15099) cannot: excluding them breaks the proxy itself.
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=65535
// +kubebuilder:validation:XValidation:rule="self < 15000 || self > 15099",message="ports 15000-15099 are reserved for Istio's proxy and cannot bypass it; pick the application's own port"
type Port int32

// PeerSettings applies to role peer-stateful.
// +kubebuilder:validation:XValidation:rule="self.proxy != 'BypassPorts' || (has(self.ports) && size(self.ports) > 0)",message="peer.ports is required when peer.proxy is BypassPorts: list the ports the peers replicate on, e.g. [2888, 3888]"
type PeerSettings struct {
	// Proxy is Skip (no sidecar, the default) or BypassPorts (keep the
	// sidecar; the peer ports bypass it inbound and outbound).
	// +kubebuilder:default=Skip
	// +optional
	Proxy PeerProxy `json:"proxy,omitempty"`

	// Ports the peers replicate on. Required with BypassPorts.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Ports []Port `json:"ports,omitempty"`
}

// ClientSettings applies to role client-stateless.
type ClientSettings struct {
	// Proxy is Inject (the default: sidecar on, but an ambient namespace's
	// pods stay in ambient), Sidecar (sidecar on, also in an ambient
	// namespace) or Unchanged (the pod's own choice).
	// +kubebuilder:default=Inject
	// +optional
	Proxy ClientProxy `json:"proxy,omitempty"`

	// ExcludeOutboundPorts are dialled directly, not through the sidecar:
	// the fix for a sidecar pinning connections to a dead peer's IP.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +optional
	ExcludeOutboundPorts []Port `json:"excludeOutboundPorts,omitempty"`

	// HoldApplicationUntilProxyStarts delays the application's containers
	// until the sidecar is ready.
	// +optional
	HoldApplicationUntilProxyStarts bool `json:"holdApplicationUntilProxyStarts,omitempty"`
}

// Workload maps the pods a selector picks to a role.
// +kubebuilder:validation:XValidation:rule="!has(self.peer) || self.role == 'peer-stateful'",message="peer settings are only valid with role peer-stateful; for role client-stateless use client"
// +kubebuilder:validation:XValidation:rule="!has(self.client) || self.role == 'client-stateless'",message="client settings are only valid with role client-stateless; for role peer-stateful use peer"
type Workload struct {
	// Name identifies the entry; it is written to matched pods as
	// meshrole.io/workload and shows in status.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`

	// Selector picks pods by their labels. An empty selector ({}) picks every
	// pod the policy applies to. A selector the API server cannot check (a
	// matchExpressions operator other than In, NotIn, Exists, DoesNotExist)
	// matches nothing and turns the policy's Ready condition False.
	// +required
	Selector metav1.LabelSelector `json:"selector"`

	// Role of the selected pods: peer-stateful or client-stateless.
	// +required
	Role Role `json:"role"`

	// Peer settings, for role peer-stateful.
	// +optional
	Peer *PeerSettings `json:"peer,omitempty"`

	// Client settings, for role client-stateless.
	// +optional
	Client *ClientSettings `json:"client,omitempty"`
}

// Rollout says who restarts the running pods that disagree with a policy.
// +kubebuilder:validation:Enum=Manual;Automatic
type Rollout string

const (
	// RolloutManual reports drifted pods (status, events, audit) and leaves
	// restarting them to an operator (kubectl meshrole rollout).
	RolloutManual Rollout = "Manual"
	// RolloutAutomatic lets meshrole's leader restart drifted pods itself,
	// the way kubectl meshrole rollout does: through the Eviction API, one
	// pod per owner at a time, stopping at a replacement that is not Ready.
	RolloutAutomatic Rollout = "Automatic"
)

// PolicySpec is what both policy kinds declare.
type PolicySpec struct {
	// Mode is Enforce (the default) or DryRun.
	// +kubebuilder:default=Enforce
	// +optional
	Mode Mode `json:"mode,omitempty"`

	// Priority orders policies that match one pod: the highest wins.
	// +kubebuilder:default=0
	// +optional
	Priority int32 `json:"priority,omitempty"`

	// Rollout is Manual (the default: drifted pods are reported, an operator
	// restarts them) or Automatic (meshrole restarts them, quorum-safely).
	// +kubebuilder:default=Manual
	// +optional
	Rollout Rollout `json:"rollout,omitempty"`

	// Workloads are tried in order; within one policy the first entry whose
	// selector matches a pod wins.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(w, self.exists_one(x, x.name == w.name))",message="workload names must be unique within a policy"
	// +listType=atomic
	// +required
	Workloads []Workload `json:"workloads"`
}

// WorkloadStatus reports one workload entry.
type WorkloadStatus struct {
	// Name of the workload entry.
	Name string `json:"name"`
	// MatchedPods counts the pods that now carry this policy and entry.
	MatchedPods int32 `json:"matchedPods"`
	// DriftedPods counts the running pods this entry should reach that carry
	// something else than its verdict; they converge when restarted.
	// +optional
	DriftedPods int32 `json:"driftedPods,omitempty"`
}

// PolicyStatus is the observed state of a policy.
type PolicyStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready; Conflict when another policy ties with a
	// different role for some pod; Drifted when running pods it reaches
	// carry something else than its verdict.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Workloads reports each entry.
	// +listType=map
	// +listMapKey=name
	// +optional
	Workloads []WorkloadStatus `json:"workloads,omitempty"`
}

// MeshRolePolicy maps workloads in its own namespace to mesh roles.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=mrp,categories=meshrole
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Workloads",type=string,JSONPath=`.spec.workloads[*].name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.status.conditions[?(@.type=="Conflict")].status`
// +kubebuilder:printcolumn:name="Drifted",type=string,JSONPath=`.status.conditions[?(@.type=="Drifted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshRolePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec PolicySpec `json:"spec"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// MeshRolePolicyList is a list of MeshRolePolicy.
// +kubebuilder:object:root=true
type MeshRolePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshRolePolicy `json:"items"`
}

// ClusterMeshRolePolicySpec is a PolicySpec for the namespaces a selector picks.
type ClusterMeshRolePolicySpec struct {
	PolicySpec `json:",inline"`

	// NamespaceSelector picks the namespaces, by their labels, whose pods the
	// policy applies to. {} picks every namespace where meshrole is enabled.
	// +required
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`
}

// ClusterMeshRolePolicy maps workloads in the namespaces it selects to mesh
// roles. Only cluster administrators should be able to write it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cmrp,categories=meshrole
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Workloads",type=string,JSONPath=`.spec.workloads[*].name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Conflict",type=string,JSONPath=`.status.conditions[?(@.type=="Conflict")].status`
// +kubebuilder:printcolumn:name="Drifted",type=string,JSONPath=`.status.conditions[?(@.type=="Drifted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterMeshRolePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ClusterMeshRolePolicySpec `json:"spec"`
	// +optional
	Status PolicyStatus `json:"status,omitempty"`
}

// ClusterMeshRolePolicyList is a list of ClusterMeshRolePolicy.
// +kubebuilder:object:root=true
type ClusterMeshRolePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterMeshRolePolicy `json:"items"`
}
