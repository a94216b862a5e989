package policy

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// A Plan is every decision the Store can make, resolved in Go down to what
// depends only on which entry of each policy a pod's labels match (and, for
// cluster policies, whether its namespace's labels match). Native mode
// compiles it into MutatingAdmissionPolicies: the CEL it generates evaluates
// selectors and looks up the answers precomputed here, so the rules of
// docs/design.md, "Precedence", "Conflicts" and "DryRun never enforces" (first entry, priority, namespaced over cluster, name order,
// conflicts, DryRun) live only in this package.
type Plan struct {
	// Policies are those native mode compiles: the MeshRolePolicies by
	// namespace, then the cluster policies, each in precedence order.
	Policies []PlannedPolicy
	// Scopes are the namespaces that have MeshRolePolicies, sorted by name,
	// then the default scope (Namespace "") that decides for every other
	// namespace with the cluster policies alone.
	Scopes []Scope
	// Refused are the policies native mode cannot honour, with the reasons;
	// they take no part in any decision (see NativeProblems).
	Refused map[Ref][]string
}

// A Scope is the ordered list of policies that decide for the pods of one
// namespace.
type Scope struct {
	// Namespace is empty for the default scope.
	Namespace string
	// Policies index Plan.Policies, in precedence order.
	Policies []int
}

// PlannedPolicy is one policy as native mode needs it.
type PlannedPolicy struct {
	Ref      Ref
	Mode     v1alpha1.Mode
	Priority int32
	// NamespaceSelector selects the namespaces of a cluster policy; nil for
	// a MeshRolePolicy.
	NamespaceSelector labels.Selector
	Entries           []PlannedEntry
}

// PlannedEntry is one workload entry and everything it can write.
type PlannedEntry struct {
	Name     string
	Role     v1alpha1.Role
	Selector labels.Selector
	// EntryWrites are what the entry writes in a namespace outside Istio's
	// ambient data plane.
	EntryWrites
	// Ambient is what it writes in an ambient namespace, when that differs
	// (a client entry with proxy Inject writes no sidecar keys there); nil
	// when it is the same. See IstioEffect.
	Ambient *EntryWrites
	// ConflictText is this entry's part of meshrole.io/conflict when it ties
	// with a winner that writes other keys.
	ConflictText string
	// workload is the compiled entry, for the engine's rules; read-only.
	workload *v1alpha1.Workload
	// ambient is filled in while planning, and becomes Ambient if it differs.
	ambient EntryWrites
}

// EntryWrites are what an entry writes in namespaces of one data-plane mode.
type EntryWrites struct {
	// Effect is what a pod gets when this entry wins, meshrole's own
	// annotations included; meshrole.io/conflict is added from Conflicts.
	Effect Effect
	// DryRunReport is the value of meshrole.io/dry-run when this entry is
	// the DryRun match a decision reports.
	DryRunReport string
	// Conflicts are the entries that, when they match, tie with this entry
	// as the winner; in precedence order.
	Conflicts []EntryRef
}

func (w *EntryWrites) equal(o *EntryWrites) bool {
	return w.Effect.Equal(&o.Effect) && w.DryRunReport == o.DryRunReport && slices.Equal(w.Conflicts, o.Conflicts)
}

// EntryRef names a workload entry of a planned policy.
type EntryRef struct {
	Policy, Entry int
}

// NativeProblems lists what in a policy native mode cannot honour. A
// MutatingAdmissionPolicy has no YAML parser, so it cannot merge
// holdApplicationUntilProxyStarts into an existing proxy.istio.io/config
// without losing the pod's other settings; rather than half-apply such a
// policy, native mode refuses it.
func NativeProblems(spec *v1alpha1.PolicySpec) []string {
	var problems []string
	for i := range spec.Workloads {
		w := &spec.Workloads[i]
		if w.Client != nil && w.Client.HoldApplicationUntilProxyStarts {
			problems = append(problems, fmt.Sprintf(
				"workload %s: holdApplicationUntilProxyStarts needs webhook mode (a MutatingAdmissionPolicy cannot merge it into an existing %s); remove it or run meshrole with mode: webhook",
				w.Name, IstioProxyConfig))
		}
	}
	return problems
}

// Plan resolves the Store's current policies for native mode.
func (s *Store) Plan() Plan {
	s.mu.RLock()
	namespaced := make(map[string][]*compiledPolicy, len(s.namespaced))
	for ns, list := range s.namespaced {
		namespaced[ns] = list
	}
	cluster := s.cluster
	s.mu.RUnlock()

	plan := Plan{Refused: map[Ref][]string{}}
	index := map[*compiledPolicy]int{}
	keep := func(list []*compiledPolicy) []*compiledPolicy {
		var out []*compiledPolicy
		for _, p := range list {
			if len(p.nativeProblems) > 0 {
				plan.Refused[p.ref] = p.nativeProblems
				continue
			}
			out = append(out, p)
		}
		return out
	}
	cluster = keep(cluster)
	namespaces := slices.Sorted(func(yield func(string) bool) {
		for ns := range namespaced {
			if !yield(ns) {
				return
			}
		}
	})
	var all []*compiledPolicy
	for _, ns := range namespaces {
		namespaced[ns] = keep(namespaced[ns])
		all = append(all, namespaced[ns]...)
	}
	all = append(all, cluster...)
	for i, p := range all {
		index[p] = i
		plan.Policies = append(plan.Policies, plannedPolicy(p))
	}

	scope := func(namespace string, list []*compiledPolicy) {
		sc := Scope{Namespace: namespace}
		byPrecedence(list, cluster, func(p *compiledPolicy) {
			sc.Policies = append(sc.Policies, index[p])
		})
		if len(sc.Policies) > 0 {
			plan.Scopes = append(plan.Scopes, sc)
			plan.addConflicts(sc)
		}
	}
	for _, ns := range namespaces {
		// A namespace whose policies were all refused is decided by the
		// default scope, like any namespace without policies.
		if len(namespaced[ns]) > 0 {
			scope(ns, namespaced[ns])
		}
	}
	scope("", nil)
	for i := range plan.Policies {
		for k := range plan.Policies[i].Entries {
			e := &plan.Policies[i].Entries[k]
			if !e.equal(&e.ambient) {
				e.Ambient = &e.ambient
			}
		}
	}
	return plan
}

func plannedPolicy(p *compiledPolicy) PlannedPolicy {
	pp := PlannedPolicy{Ref: p.ref, Mode: p.mode, Priority: p.priority, NamespaceSelector: p.namespaceSelector}
	for k := range p.workloads {
		m := p.match(k)
		writes := func(ambient bool) EntryWrites {
			winner := Decision{Winner: &m, Ambient: ambient}
			dryRun := Decision{DryRun: &m, Ambient: ambient}
			return EntryWrites{Effect: winner.Effect(), DryRunReport: dryRun.Effect().Annotations[DryRunAnnotation]}
		}
		pp.Entries = append(pp.Entries, PlannedEntry{
			Name:         p.workloads[k].Name,
			Role:         p.workloads[k].Role,
			Selector:     p.selectors[k],
			EntryWrites:  writes(false),
			ambient:      writes(true),
			ConflictText: conflictText(&m),
			workload:     m.Workload,
		})
	}
	return pp
}

// addConflicts records, for every entry that can win in the scope, the
// entries ranked below it that would tie with it. The same pair shows up in
// every scope that holds both policies; it is recorded once.
func (plan *Plan) addConflicts(sc Scope) {
	for a, pi := range sc.Policies {
		winner := &plan.Policies[pi]
		if winner.Mode == v1alpha1.ModeDryRun {
			continue
		}
		for k := range winner.Entries {
			w := winner.match(k)
			e := &winner.Entries[k]
			for _, qi := range sc.Policies[a+1:] {
				other := &plan.Policies[qi]
				for j := range other.Entries {
					m := other.match(j)
					ref := EntryRef{Policy: qi, Entry: j}
					if conflictsWith(&w, &m, false) && !slices.Contains(e.Conflicts, ref) {
						e.Conflicts = append(e.Conflicts, ref)
					}
					if conflictsWith(&w, &m, true) && !slices.Contains(e.ambient.Conflicts, ref) {
						e.ambient.Conflicts = append(e.ambient.Conflicts, ref)
					}
				}
			}
		}
	}
}

// match is the Match of entry k, for the engine's rules.
func (p *PlannedPolicy) match(k int) Match {
	return Match{Policy: p.Ref, Priority: p.Priority, Mode: p.Mode, Workload: p.Entries[k].workload}
}
