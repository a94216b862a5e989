package policy

import (
	"maps"
	"sync"

	"k8s.io/apimachinery/pkg/labels"
)

// maxResolvedNamespaces bounds a clusterResolver's memory: namespaces come and
// go, and a resolution nobody asks for again would otherwise stay forever.
// Past the bound the resolver starts over, which costs one scan per namespace.
const maxResolvedNamespaces = 10_000

// clusterResolver answers which cluster policies select a namespace. Each
// answer is computed once per namespace label set, on the first decision that
// needs it, instead of evaluating every cluster policy's namespaceSelector on
// every admission: with thousands of cluster policies, that scan was most of
// a decision's cost. A resolver belongs to one list of cluster policies; the
// Store replaces it whenever a cluster policy changes, which invalidates every
// answer. A namespace whose labels change is resolved again the next time its
// labels are seen: answers are kept with the labels they were computed for.
type clusterResolver struct {
	cluster []*compiledPolicy

	mu sync.RWMutex
	// byNamespace is the answer last given for a namespace, checked against
	// the namespace's current labels without building a key.
	byNamespace map[string]resolved
	// byLabels shares one answer between namespaces with the same labels
	// (keyed by labels.Set.String, which is canonical), so that memory grows
	// with the distinct label sets, not with namespaces × cluster policies.
	byLabels map[string][]*compiledPolicy
}

type resolved struct {
	labels labels.Set
	// selecting is a subsequence of cluster: still in precedence order.
	selecting []*compiledPolicy
}

func newClusterResolver(cluster []*compiledPolicy) *clusterResolver {
	return &clusterResolver{cluster: cluster, byNamespace: map[string]resolved{}, byLabels: map[string][]*compiledPolicy{}}
}

// selecting returns the cluster policies whose namespaceSelector matches
// nsLabels, in precedence order. The slice is shared: read-only.
func (r *clusterResolver) selecting(namespace string, nsLabels labels.Labels) []*compiledPolicy {
	if len(r.cluster) == 0 {
		return nil
	}
	set, ok := nsLabels.(labels.Set)
	if !ok {
		// Only a Set can be compared and keyed; other Labels are rare
		// (no caller in this repository passes one) and simply scanned.
		return filterSelecting(r.cluster, nsLabels)
	}
	r.mu.RLock()
	answer, found := r.byNamespace[namespace]
	r.mu.RUnlock()
	if found && labels.Equals(answer.labels, set) {
		return answer.selecting
	}

	key := set.String()
	r.mu.RLock()
	selecting, found := r.byLabels[key]
	r.mu.RUnlock()
	if !found {
		// Computed outside the lock: two admissions may both compute the
		// same answer, and either is right.
		selecting = filterSelecting(r.cluster, set)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byNamespace) >= maxResolvedNamespaces {
		clear(r.byNamespace)
		clear(r.byLabels)
	}
	if shared, ok := r.byLabels[key]; ok {
		selecting = shared
	} else {
		r.byLabels[key] = selecting
	}
	// A copy: the caller's map may be changed after the decision.
	r.byNamespace[namespace] = resolved{labels: maps.Clone(set), selecting: selecting}
	return selecting
}

// filterSelecting returns the policies of cluster whose namespaceSelector
// matches nsLabels, keeping their order.
func filterSelecting(cluster []*compiledPolicy, nsLabels labels.Labels) []*compiledPolicy {
	var out []*compiledPolicy
	for _, p := range cluster {
		if p.namespaceSelector == nil || p.namespaceSelector.Matches(nsLabels) {
			out = append(out, p)
		}
	}
	return out
}
