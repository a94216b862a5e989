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

// Shared settings, as the policy cache's transform could share them.
var (
	skip   = &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxySkip}
	inject = &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyInject}
)

// defaultedPolicy is scalePolicy with the settings the schema defaults
// written out.
func defaultedPolicy(namespace string, i int) *v1alpha1.MeshRolePolicy {
	p := scalePolicy(namespace, i)
	p.Spec.Workloads[0].Peer, p.Spec.Workloads[1].Client = skip, inject
	return p
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
//
// Entries with every default written out (defaulted=true) are not copied.
func BenchmarkStoreBytesPerPolicy(b *testing.B) {
	for _, defaulted := range []bool{false, true} {
		b.Run(fmt.Sprintf("defaulted=%v", defaulted), func(b *testing.B) {
			var perPolicy float64
			for b.Loop() {
				perPolicy = storeBytesPerPolicy(defaulted)
			}
			b.ReportMetric(perPolicy, "B/policy")
		})
	}
}

func storeBytesPerPolicy(defaulted bool) float64 {
	const n, namespaces = 10_000, 1_000
	policies := make([]*v1alpha1.MeshRolePolicy, n)
	for i := range policies {
		if defaulted {
			policies[i] = defaultedPolicy(fmt.Sprintf("ns-%04d", i%namespaces), i)
		} else {
			policies[i] = scalePolicy(fmt.Sprintf("ns-%04d", i%namespaces), i)
		}
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
	for defaulted, limit := range map[bool]float64{false: maxStoreBytesPerPolicy, true: maxStoreBytesPerDefaultedPolicy} {
		got := storeBytesPerPolicy(defaulted)
		t.Logf("defaulted=%v: the Store holds %.0f B a policy", defaulted, got)
		if got > limit {
			t.Errorf("defaulted=%v: the Store holds %.0f B a policy, more than %.0f", defaulted, got, limit)
		}
	}
}

// The limits are the figures of docs/performance.md with room for a Go
// release's allocator to differ.
const (
	maxStoreBytesPerPolicy          = 520
	maxStoreBytesPerDefaultedPolicy = 360
)
