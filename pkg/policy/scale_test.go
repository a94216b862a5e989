package policy_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// scalePolicy is policy i of a namespace shaped like the bench's (test/bench):
// a peer entry for app-<i> and a client entry for tier web-<i>.
func scalePolicy(namespace string, i int) *v1alpha1.MeshRolePolicy {
	return mrp(namespace, fmt.Sprintf("p-%05d", i), 0, "",
		peer("peers", sel("app", fmt.Sprintf("app-%d", i))),
		client("clients", sel("tier", fmt.Sprintf("web-%d", i))))
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkStoreBytesPerPolicy reports what the Store holds per policy, on
// top of the policy objects themselves (which the informer cache holds
// anyway): the live heap after a forced collection with 10,000 policies
// over 1,000 namespaces stored, less the same without the Store.
//
//	go test -run '^$' -bench StoreBytesPerPolicy ./pkg/policy
func BenchmarkStoreBytesPerPolicy(b *testing.B) {
	var perPolicy float64
	for b.Loop() {
		perPolicy = storeBytesPerPolicy()
	}
	b.ReportMetric(perPolicy, "B/policy")
}

func storeBytesPerPolicy() float64 {
	const n, namespaces = 10_000, 1_000
	policies := make([]*v1alpha1.MeshRolePolicy, n)
	for i := range policies {
		policies[i] = scalePolicy(fmt.Sprintf("ns-%04d", i%namespaces), i)
	}
	before := liveHeap()
	s := policy.NewStore()
	for _, p := range policies {
		s.SetMeshRolePolicy(p)
	}
	after := liveHeap()
	runtime.KeepAlive(s)
	runtime.KeepAlive(policies)
	return float64(after-before) / n
}

// TestStoreIsSmall keeps the Store's own memory per policy from creeping
// back: it is most of what the webhook holds besides the informer cache.
func TestStoreIsSmall(t *testing.T) {
	got := storeBytesPerPolicy()
	t.Logf("the Store holds %.0f B a policy", got)
	if got > maxStoreBytesPerPolicy {
		t.Errorf("the Store holds %.0f B a policy, more than %d", got, maxStoreBytesPerPolicy)
	}
}

// maxStoreBytesPerPolicy is the figure of docs/performance.md (450 B) with room
// for a Go release's allocator to differ.
const maxStoreBytesPerPolicy = 520
