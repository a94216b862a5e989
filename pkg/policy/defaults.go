package policy

import "github.com/meshrole/meshrole/pkg/policy/v1alpha1"

// ShareDefaults writes out the defaults the CRD schema declares for the
// workload entries of spec that lack them (a peer entry's proxy Skip, a
// client entry's proxy Inject), the way the Store sees them. An entry with no
// settings at all gets settings shared by every such entry, read-only; an
// entry with settings but no proxy gets the proxy written into its own.
//
// It is for the policy cache's transform: a cached policy whose defaults are
// written out is stored by the Store without a copy of any entry (the Store
// copies an entry only to default it), which is 160 bytes a policy of the
// bench's shape. What the policy means does not change: every reader of a
// policy defaults it the same way. spec must belong to the caller, as an
// object does inside a cache transform.
func ShareDefaults(spec *v1alpha1.PolicySpec) {
	for i := range spec.Workloads {
		w := &spec.Workloads[i]
		switch w.Role {
		case v1alpha1.RolePeerStateful:
			switch {
			case w.Peer == nil:
				w.Peer = &defaultPeer
			case w.Peer.Proxy == "":
				w.Peer.Proxy = v1alpha1.PeerProxySkip
			}
		case v1alpha1.RoleClientStateless:
			switch {
			case w.Client == nil:
				w.Client = &defaultClient
			case w.Client.Proxy == "":
				w.Client.Proxy = v1alpha1.ClientProxyInject
			}
		}
	}
}
