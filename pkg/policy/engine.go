// Package policy is meshrole's decision engine: which policy and workload
// entry a pod matches, which role it gets, and which labels and annotations
// that role writes. It is pure: the webhook, the kubectl plugin and native
// mode all call it, and none re-implements a rule.
package policy

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Ref names a policy. An empty Namespace means a ClusterMeshRolePolicy.
type Ref struct {
	Namespace string
	Name      string
}

// Cluster reports whether r names a ClusterMeshRolePolicy.
func (r Ref) Cluster() bool { return r.Namespace == "" }

// String is the form written to meshrole.io/policy: "<namespace>/<name>" or "cluster/<name>".
func (r Ref) String() string {
	if r.Cluster() {
		return "cluster/" + r.Name
	}
	return r.Namespace + "/" + r.Name
}

// Match is one policy's matching workload entry for a pod.
type Match struct {
	Policy     Ref
	Generation int64
	Priority   int32
	Mode       v1alpha1.Mode
	// Workload is shared with the Store; treat it as read-only.
	Workload *v1alpha1.Workload
}

// Role is the matched entry's role.
func (m *Match) Role() v1alpha1.Role { return m.Workload.Role }

// String describes the match for people: "shop/eureka (workload eureka-peers, peer-stateful)".
func (m *Match) String() string {
	return fmt.Sprintf("%s (workload %s, %s)", m.Policy, m.Workload.Name, m.Workload.Role)
}

// Decision is the verdict for one pod.
type Decision struct {
	// Winner is the enforced verdict: the highest-ranked match of an Enforce
	// policy. Nil when no Enforce policy matches.
	Winner *Match
	// Conflicts are Enforce matches that tie with Winner on priority but
	// would write other keys.
	Conflicts []Match
	// DryRun is the match of a DryRun policy that outranks Winner: what would
	// be enforced if that policy were switched to Enforce. DryRun policies never
	// change what is enforced.
	DryRun *Match
	// Matches are all matching entries, one per policy, in precedence order.
	Matches []Match
	// Ambient: the pod's namespace runs Istio's ambient data plane, which
	// changes what a client entry writes (see IstioEffect).
	Ambient bool
}

// Matched reports whether any policy matched the pod.
func (d Decision) Matched() bool { return len(d.Matches) > 0 }

// Input is what a decision depends on.
type Input struct {
	// Namespace of the pod; for pods made by controllers this comes from the
	// admission request, not the (empty) object namespace.
	Namespace       string
	NamespaceLabels labels.Labels
	PodLabels       labels.Labels
}

// compiledPolicy is a policy with its selectors parsed once, when it is stored.
type compiledPolicy struct {
	ref               Ref
	generation        int64
	priority          int32
	mode              v1alpha1.Mode
	namespaceSelector labels.Selector // cluster policies only
	// workloads point into the policy object, except for the entries that
	// lacked a default (see defaultWorkload): those are defaulted copies.
	workloads      []*v1alpha1.Workload
	selectors      []labels.Selector
	problems       []string
	nativeProblems []string
}

// firstMatch returns the index of the first workload entry whose selector
// matches, or -1.
func (p *compiledPolicy) firstMatch(podLabels labels.Labels) int {
	for i, s := range p.selectors {
		if s.Matches(podLabels) {
			return i
		}
	}
	return -1
}

// match is the Match of entry k.
func (p *compiledPolicy) match(k int) Match {
	return Match{Policy: p.ref, Generation: p.generation, Priority: p.priority, Mode: p.mode, Workload: p.workloads[k]}
}

// outranks is the precedence of docs/design.md, "Precedence": higher priority, then a
// MeshRolePolicy over a ClusterMeshRolePolicy, then name.
func outranks(a, b *compiledPolicy) bool {
	if a.priority != b.priority {
		return a.priority > b.priority
	}
	if a.ref.Cluster() != b.ref.Cluster() {
		return !a.ref.Cluster()
	}
	return a.ref.Name < b.ref.Name
}

func comparePolicies(a, b *compiledPolicy) int {
	switch {
	case outranks(a, b):
		return -1
	case outranks(b, a):
		return 1
	default:
		return 0
	}
}

func compile(ref Ref, generation int64, spec *v1alpha1.PolicySpec, namespaceSelector *metav1.LabelSelector) *compiledPolicy {
	p := &compiledPolicy{
		ref:        ref,
		generation: generation,
		priority:   spec.Priority,
		mode:       cmp.Or(spec.Mode, v1alpha1.ModeEnforce),
		workloads:  make([]*v1alpha1.Workload, len(spec.Workloads)),
		selectors:  make([]labels.Selector, len(spec.Workloads)),
		// Kept with the policy so that native mode leaves out exactly the
		// policies whose status says it refuses them.
		nativeProblems: NativeProblems(spec),
	}
	for i := range spec.Workloads {
		// The entry itself, not a copy: nobody modifies a policy object once
		// it is stored (informer objects are read-only), and a second copy
		// of every entry was most of the Store's memory. An entry that lacks
		// a default gets a shallow copy that has it, sharing the selector's
		// maps and slices.
		w := &spec.Workloads[i]
		if !isDefaulted(w) {
			defaulted := *w
			defaultWorkload(&defaulted)
			w = &defaulted
		}
		p.workloads[i] = w
		s, err := compileSelector(&w.Selector)
		if err != nil {
			// The API server's schema should have refused this; match nothing
			// rather than guess, and say so in status.
			p.problems = append(p.problems, fmt.Sprintf("workload %s: invalid selector: %v", w.Name, err))
			s = labels.Nothing()
		}
		p.selectors[i] = s
	}
	if namespaceSelector != nil {
		s, err := compileSelector(namespaceSelector)
		if err != nil {
			p.problems = append(p.problems, fmt.Sprintf("invalid namespaceSelector: %v", err))
			s = labels.Nothing()
		}
		p.namespaceSelector = s
	}
	return p
}

// isDefaulted reports whether w has every default defaultWorkload fills in.
func isDefaulted(w *v1alpha1.Workload) bool {
	switch w.Role {
	case v1alpha1.RolePeerStateful:
		return w.Peer != nil && w.Peer.Proxy != ""
	case v1alpha1.RoleClientStateless:
		return w.Client != nil && w.Client.Proxy != ""
	}
	return true
}

// defaultWorkload fills in the defaults the CRD schema declares, so that a
// policy built in Go (tests, the kubectl plugin reading a file) behaves like
// one read back from the API server. w is a shallow copy: the settings it
// points to belong to the policy object, so they are copied before a change.
func defaultWorkload(w *v1alpha1.Workload) {
	switch w.Role {
	case v1alpha1.RolePeerStateful:
		switch {
		case w.Peer == nil:
			w.Peer = &defaultPeer
		case w.Peer.Proxy == "":
			peer := *w.Peer
			peer.Proxy = v1alpha1.PeerProxySkip
			w.Peer = &peer
		}
	case v1alpha1.RoleClientStateless:
		switch {
		case w.Client == nil:
			w.Client = &defaultClient
		case w.Client.Proxy == "":
			client := *w.Client
			client.Proxy = v1alpha1.ClientProxyInject
			w.Client = &client
		}
	}
}

// The defaults, shared by every workload that has no settings; read-only.
var (
	defaultPeer   = v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxySkip}
	defaultClient = v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyInject}
)

// Store holds the current policies, indexed by namespace so that a decision
// costs the same however many policies other namespaces have, and with the
// cluster policies resolved per namespace label set so that a decision costs
// nothing for the cluster policies that do not select the pod's namespace.
// It is safe for concurrent use: informer handlers write, admissions read.
type Store struct {
	mu sync.RWMutex
	// namespaced and cluster slices are sorted by precedence and never
	// modified in place: writers replace them, so readers may keep them.
	namespaced map[string][]*compiledPolicy
	cluster    []*compiledPolicy
	// clusterFor resolves cluster; it is replaced with it.
	clusterFor *clusterResolver
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{namespaced: map[string][]*compiledPolicy{}, clusterFor: newClusterResolver(nil)}
}

// SetMeshRolePolicy adds or replaces a MeshRolePolicy. The Store keeps
// references into p (its workload entries and selectors): p must not change
// afterwards, as an informer's objects never do.
func (s *Store) SetMeshRolePolicy(p *v1alpha1.MeshRolePolicy) {
	ref := Ref{Namespace: p.Namespace, Name: p.Name}
	c := compile(ref, p.Generation, &p.Spec, nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.namespaced[ref.Namespace] = upsert(s.namespaced[ref.Namespace], c)
}

// DeleteMeshRolePolicy removes a MeshRolePolicy.
func (s *Store) DeleteMeshRolePolicy(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := remove(s.namespaced[namespace], name)
	if len(left) == 0 {
		delete(s.namespaced, namespace)
		return
	}
	s.namespaced[namespace] = left
}

// SetClusterMeshRolePolicy adds or replaces a ClusterMeshRolePolicy; like
// SetMeshRolePolicy, it keeps references into p.
func (s *Store) SetClusterMeshRolePolicy(p *v1alpha1.ClusterMeshRolePolicy) {
	c := compile(Ref{Name: p.Name}, p.Generation, &p.Spec.PolicySpec, &p.Spec.NamespaceSelector)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setCluster(upsert(s.cluster, c))
}

// DeleteClusterMeshRolePolicy removes a ClusterMeshRolePolicy.
func (s *Store) DeleteClusterMeshRolePolicy(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setCluster(remove(s.cluster, name))
}

// setCluster replaces the cluster policies, and with them every namespace's
// resolution of them. The caller holds s.mu.
func (s *Store) setCluster(cluster []*compiledPolicy) {
	s.cluster = cluster
	s.clusterFor = newClusterResolver(cluster)
}

// Problems lists what in a policy cannot be compiled (and so matches
// nothing), for its status. The API server's schema refuses most of it; this
// catches what a schema cannot, such as a malformed label value in a selector.
func Problems(spec *v1alpha1.PolicySpec, namespaceSelector *metav1.LabelSelector) []string {
	return compile(Ref{}, 0, spec, namespaceSelector).problems
}

func upsert(list []*compiledPolicy, c *compiledPolicy) []*compiledPolicy {
	out := make([]*compiledPolicy, 0, len(list)+1)
	for _, p := range list {
		if p.ref.Name != c.ref.Name {
			out = append(out, p)
		}
	}
	out = append(out, c)
	slices.SortFunc(out, comparePolicies)
	return out
}

func remove(list []*compiledPolicy, name string) []*compiledPolicy {
	i := slices.IndexFunc(list, func(p *compiledPolicy) bool { return p.ref.Name == name })
	if i < 0 {
		return list
	}
	return slices.Delete(slices.Clone(list), i, i+1)
}

// byPrecedence visits the policies of one namespace and the cluster policies
// in precedence order. Both lists are sorted by precedence, and outranks puts
// a namespaced policy before a cluster one of equal priority, so a merge walk
// visits every policy in order.
func byPrecedence(namespaced, cluster []*compiledPolicy, visit func(*compiledPolicy)) {
	i, j := 0, 0
	for i < len(namespaced) || j < len(cluster) {
		if j >= len(cluster) || (i < len(namespaced) && outranks(namespaced[i], cluster[j])) {
			visit(namespaced[i])
			i++
		} else {
			visit(cluster[j])
			j++
		}
	}
}

// conflictsWith reports whether an Enforce match m, ranked below the winner,
// is a conflict (docs/design.md, "Conflicts"): it ties on priority and would write other keys.
// Entries that tie and write the same keys agree, whatever their names; a
// tie that changes what the pod gets is decided by kind and name alone, and
// that is what people must hear about.
func conflictsWith(winner, m *Match, ambient bool) bool {
	if m.Mode == v1alpha1.ModeDryRun || m.Priority != winner.Priority {
		return false
	}
	a, b := IstioEffect(winner.Workload, ambient), IstioEffect(m.Workload, ambient)
	return !a.Equal(&b)
}

// IsAmbient reports whether namespace labels put the namespace in Istio's
// ambient data plane.
func IsAmbient(namespaceLabels labels.Labels) bool {
	return namespaceLabels.Get(IstioDataplaneModeLabel) == IstioDataplaneModeAmbient
}

// Decide returns the verdict for a pod.
func (s *Store) Decide(in Input) Decision {
	s.mu.RLock()
	namespaced, clusterFor := s.namespaced[in.Namespace], s.clusterFor
	s.mu.RUnlock()

	podLabels := in.PodLabels
	if podLabels == nil {
		podLabels = labels.Set{}
	}
	nsLabels := in.NamespaceLabels
	if nsLabels == nil {
		nsLabels = labels.Set{}
	}
	d := Decision{Ambient: IsAmbient(nsLabels)}
	// Only the cluster policies that select the namespace, in precedence order.
	cluster := clusterFor.selecting(in.Namespace, nsLabels)
	byPrecedence(namespaced, cluster, func(p *compiledPolicy) {
		k := p.firstMatch(podLabels)
		if k < 0 {
			return
		}
		d.Matches = append(d.Matches, p.match(k))
	})

	for i := range d.Matches {
		m := &d.Matches[i]
		if m.Mode == v1alpha1.ModeDryRun {
			if d.Winner == nil && d.DryRun == nil {
				d.DryRun = m
			}
			continue
		}
		switch {
		case d.Winner == nil:
			d.Winner = m
		case conflictsWith(d.Winner, m, d.Ambient):
			d.Conflicts = append(d.Conflicts, *m)
		}
	}
	return d
}
