package suggest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Policies turns the Peer and Client findings that Suggest placed into one
// MeshRolePolicy per namespace: the peers first, then the clients, each
// sorted by workload. A client of several systems gets one entry that
// excludes the ports of all of them (a pod gets one entry). Entry names say
// what they are: "<workload>[-<system>]-peers", "<workload>-<system>-client"
// or, for a client of several systems, "<workload>-client".
func Policies(findings []Finding) []v1alpha1.MeshRolePolicy {
	type key struct{ namespace, name string }
	type clientEntry struct {
		ref      WorkloadRef
		selector *metav1.LabelSelector
		systems  []string
		ports    []int32
	}
	peers := map[key][]Finding{}
	clients := map[key][]*clientEntry{}
	var keys []key
	seen := func(k key) {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for _, f := range findings {
		if f.Policy == "" || f.Selector == nil {
			continue
		}
		k := key{f.Workload.Namespace, f.Policy}
		switch f.Kind {
		case KindPeer:
			seen(k)
			peers[k] = append(peers[k], f)
		case KindClient:
			seen(k)
			i := slices.IndexFunc(clients[k], func(c *clientEntry) bool { return c.ref == f.Workload })
			if i < 0 {
				clients[k] = append(clients[k], &clientEntry{ref: f.Workload, selector: f.Selector})
				i = len(clients[k]) - 1
			}
			c := clients[k][i]
			c.systems = append(c.systems, f.System)
			c.ports = sortedSet(c.ports, f.Treatment.ExcludeOutboundPorts)
		}
	}
	slices.SortFunc(keys, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	byWorkload := func(a, b WorkloadRef) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind)) }

	var out []v1alpha1.MeshRolePolicy
	for _, k := range keys {
		taken := map[string]bool{}
		var entries []v1alpha1.Workload
		ps := peers[k]
		slices.SortFunc(ps, func(a, b Finding) int { return byWorkload(a.Workload, b.Workload) })
		for _, f := range ps {
			base := f.Workload.Name
			if !strings.Contains(base, f.System) {
				base += "-" + f.System
			}
			peer := &v1alpha1.PeerSettings{Proxy: f.Treatment.Proxy}
			if f.Treatment.Proxy == v1alpha1.PeerProxyBypassPorts {
				peer.Ports = policyPorts(f.Treatment.Ports)
			}
			entries = append(entries, v1alpha1.Workload{
				Name:     entryName(base+"-peers", f.Workload, taken),
				Selector: *f.Selector.DeepCopy(),
				Role:     v1alpha1.RolePeerStateful,
				Peer:     peer,
			})
		}
		cs := clients[k]
		slices.SortFunc(cs, func(a, b *clientEntry) int { return byWorkload(a.ref, b.ref) })
		for _, c := range cs {
			base := c.ref.Name + "-client"
			if systems := slices.Compact(slices.Sorted(slices.Values(c.systems))); len(systems) == 1 {
				base = c.ref.Name + "-" + systems[0] + "-client"
			}
			entries = append(entries, v1alpha1.Workload{
				Name:     entryName(base, c.ref, taken),
				Selector: *c.selector.DeepCopy(),
				Role:     v1alpha1.RoleClientStateless,
				Client:   &v1alpha1.ClientSettings{ExcludeOutboundPorts: policyPorts(c.ports)},
			})
		}
		out = append(out, v1alpha1.MeshRolePolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "MeshRolePolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: k.name, Namespace: k.namespace},
			Spec:       v1alpha1.PolicySpec{Workloads: entries},
		})
	}
	return out
}

func policyPorts(ports []int32) []v1alpha1.Port {
	out := make([]v1alpha1.Port, len(ports))
	for i, p := range ports {
		out[i] = v1alpha1.Port(p)
	}
	return out
}

// entryName makes base a valid, unique entry name: at most 63 characters
// (a hash of the whole name replaces what is cut), and the workload's kind
// appended when two workloads of one name would collide.
func entryName(base string, ref WorkloadRef, taken map[string]bool) string {
	name := dnsLabel(base)
	if taken[name] {
		name = dnsLabel(base + "-" + strings.ToLower(ref.Kind))
	}
	for i := 2; taken[name]; i++ {
		name = dnsLabel(fmt.Sprintf("%s-%d", base, i))
	}
	taken[name] = true
	return name
}

func dnsLabel(s string) string {
	s = strings.ToLower(s)
	if len(s) <= 63 {
		return s
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return fmt.Sprintf("%s-%08x", strings.TrimRight(s[:54], "-."), h.Sum32())
}

// MarshalPolicies writes policies as a YAML stream ready for kubectl apply:
// without the empty status and creationTimestamp a Go object carries.
func MarshalPolicies(policies []v1alpha1.MeshRolePolicy) ([]byte, error) {
	var out []byte
	for i := range policies {
		object, err := applyable(&policies[i])
		if err != nil {
			return nil, err
		}
		b, err := yaml.Marshal(object)
		if err != nil {
			return nil, fmt.Errorf("writing MeshRolePolicy %s/%s: %w", policies[i].Namespace, policies[i].Name, err)
		}
		if i > 0 {
			out = append(out, "---\n"...)
		}
		out = append(out, b...)
	}
	return out, nil
}

func applyable(p *v1alpha1.MeshRolePolicy) (map[string]any, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("writing MeshRolePolicy %s/%s: %w", p.Namespace, p.Name, err)
	}
	var object map[string]any
	if err := json.Unmarshal(b, &object); err != nil {
		return nil, fmt.Errorf("writing MeshRolePolicy %s/%s: %w", p.Namespace, p.Name, err)
	}
	delete(object, "status")
	if meta, ok := object["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	return object, nil
}
