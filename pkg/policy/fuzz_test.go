package policy_test

import (
	"slices"
	"strconv"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy"
)

// FuzzMergePortList: a merge either refuses (and returns the value
// untouched) or returns a list Istio accepts that holds every port asked
// for and every entry the pod had, in the pod's order.
func FuzzMergePortList(f *testing.F) {
	for _, seed := range []string{"", "9000", "9000, 8761", "80,", "8761,http", " 1 , 2 ", "65535,0", "-1"} {
		f.Add(seed, uint16(8761), uint16(2888))
	}
	f.Fuzz(func(t *testing.T, existing string, a, b uint16) {
		ports := []int32{int32(a), int32(b)}
		merged, err := policy.MergePortList(existing, ports)
		if err != nil {
			if merged != existing {
				t.Fatalf("refused merge changed the value: %q -> %q", existing, merged)
			}
			return
		}
		got, err := policy.ParsePortList(merged)
		if err != nil {
			t.Fatalf("merged %q into %q, which Istio would reject: %v", existing, merged, err)
		}
		for _, p := range ports {
			if !slices.Contains(got, strconv.Itoa(int(p))) && !slices.ContainsFunc(got, func(s string) bool { n, _ := strconv.Atoi(s); return n == int(p) }) {
				t.Fatalf("port %d missing from %q", p, merged)
			}
		}
		had, _ := policy.ParsePortList(existing)
		if !slices.Equal(got[:len(had)], had) {
			t.Fatalf("existing entries reordered: %q -> %q", existing, merged)
		}
	})
}

// FuzzMergeHoldApplication: a merge either refuses (value untouched) or
// returns YAML whose holdApplicationUntilProxyStarts is true.
func FuzzMergeHoldApplication(f *testing.F) {
	for _, seed := range []string{"", "concurrency: 2", `{"concurrency": 2}`, "holdApplicationUntilProxyStarts: false", "- a", "concurrency: [2", "null", "# c"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, existing string) {
		merged, err := policy.MergeHoldApplication(existing)
		if err != nil {
			if merged != existing {
				t.Fatalf("refused merge changed the value: %q -> %q", existing, merged)
			}
			return
		}
		var config map[string]any
		if err := yaml.Unmarshal([]byte(merged), &config); err != nil {
			t.Fatalf("merged %q into invalid YAML %q: %v", existing, merged, err)
		}
		if v, _ := config[policy.HoldApplicationUntilProxyStarts].(bool); !v {
			t.Fatalf("merged %q into %q without holdApplicationUntilProxyStarts: true", existing, merged)
		}
	})
}
