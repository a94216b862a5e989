package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/suggest"
)

// explained is the part of explain -o json this test reads.
type explained struct {
	Kind, Name, Namespace string
	Role                  string
	Labels, Annotations   []struct {
		Key, After string
	}
}

func (e *explained) value(key string, in []struct{ Key, After string }) string {
	for _, kv := range in {
		if kv.Key == key {
			return kv.After
		}
	}
	return ""
}

// TestSuggestedPoliciesAreWhatExplainConfirms: for every fixture of
// pkg/suggest, suggest -o yaml, fed back with the same manifests into
// explain, skips or bypasses every peer it found and makes every client it
// gave an entry exclude its ports. The manifests are read from stdin, as
// from helm template.
func TestSuggestedPoliciesAreWhatExplainConfirms(t *testing.T) {
	fixtures, err := filepath.Glob("../../pkg/suggest/testdata/*.yaml")
	if err != nil || len(fixtures) < 15 {
		t.Fatalf("fixtures: %v %v", fixtures, err)
	}
	peers, clients := 0, 0
	for _, fixture := range fixtures {
		t.Run(filepath.Base(fixture), func(t *testing.T) {
			r := withStdin(t, fixture, func() result { return runPlugin("", "suggest", "-f", "-", "-o", "json") })
			if r.code != 0 {
				t.Fatalf("suggest -o json: exit %d: %s", r.code, r.stderr)
			}
			var out struct {
				Findings []suggest.Finding `json:"findings"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatal(err)
			}
			r = withStdin(t, fixture, func() result { return runPlugin("", "suggest", "-f", "-", "-o", "yaml") })
			if r.code != 0 {
				t.Fatalf("suggest -o yaml: exit %d: %s", r.code, r.stderr)
			}
			suggested := filepath.Join(t.TempDir(), "suggested.yaml")
			if err := os.WriteFile(suggested, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			r = runPlugin("", "explain", "-f", fixture, "-f", suggested, "-o", "json")
			if r.code != 0 {
				t.Fatalf("explain: exit %d: %s", r.code, r.stderr)
			}
			var explanations []explained
			if err := json.Unmarshal([]byte(r.stdout), &explanations); err != nil {
				t.Fatal(err)
			}
			find := func(ref suggest.WorkloadRef) *explained {
				i := slices.IndexFunc(explanations, func(e explained) bool {
					return e.Kind == ref.Kind && e.Namespace == ref.Namespace && e.Name == ref.Name
				})
				if i < 0 {
					t.Fatalf("explain does not list %s", ref)
				}
				return &explanations[i]
			}
			for _, f := range out.Findings {
				switch {
				case f.Kind == suggest.KindPeer:
					peers++
					e := find(f.Workload)
					if e.Role != string(v1alpha1.RolePeerStateful) {
						t.Errorf("%s: explain says role %q, want peer-stateful", f.Workload, e.Role)
					}
					if f.Treatment.Proxy == v1alpha1.PeerProxyBypassPorts {
						for _, key := range []string{"traffic.sidecar.istio.io/excludeInboundPorts", "traffic.sidecar.istio.io/excludeOutboundPorts"} {
							if got := e.value(key, e.Annotations); !containsPorts(got, f.Treatment.Ports) {
								t.Errorf("%s: %s=%q, want ports %v", f.Workload, key, got, f.Treatment.Ports)
							}
						}
					} else if got := e.value("sidecar.istio.io/inject", e.Labels); got != "false" {
						t.Errorf("%s: label sidecar.istio.io/inject=%q, want false (Skip)", f.Workload, got)
					}
				case f.Kind == suggest.KindClient && len(f.Treatment.ExcludeOutboundPorts) > 0:
					clients++
					e := find(f.Workload)
					key := "traffic.sidecar.istio.io/excludeOutboundPorts"
					if got := e.value(key, e.Annotations); e.Role != string(v1alpha1.RoleClientStateless) || !containsPorts(got, f.Treatment.ExcludeOutboundPorts) {
						t.Errorf("%s: role %q, %s=%q; want client-stateless excluding %v", f.Workload, e.Role, key, got, f.Treatment.ExcludeOutboundPorts)
					}
				}
			}
		})
	}
	if peers < 14 || clients == 0 {
		t.Fatalf("checked %d peers and %d clients with entries: the fixtures must hold every catalogue system", peers, clients)
	}
	t.Logf("explain confirms %d suggested peers and %d clients", peers, clients)
}

// withStdin runs f with os.Stdin reading path: kubectl's resource.Builder
// reads "-f -" from the process's standard input.
func withStdin(t *testing.T, path string, f func() result) result {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Close() }()
	saved := os.Stdin
	os.Stdin = in
	defer func() { os.Stdin = saved }()
	return f()
}

func containsPorts(list string, ports []int32) bool {
	have := strings.Split(list, ",")
	for _, p := range ports {
		if !slices.Contains(have, strconv.Itoa(int(p))) {
			return false
		}
	}
	return len(ports) > 0
}

// TestSuggestTable: the default output names each finding with its evidence.
func TestSuggestTable(t *testing.T) {
	r := runPlugin("", "suggest", "-f", "../../pkg/suggest/testdata/eureka.yaml")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"NAMESPACE  WORKLOAD", "statefulset/eureka-server  Peer", "eureka  high", "peer Skip", "headless-service,peer-ports",
		"deployment/orders", "client excludeOutboundPorts 8761",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := runPlugin("", "suggest", "-f", "../../pkg/suggest/testdata/negatives.yaml"); r.code != 0 || !strings.Contains(r.stdout, "No peer-replicating workload found.") {
		t.Errorf("negatives: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runPlugin("", "suggest", "-f", "x.yaml", "--min-confidence", "sure"); r.code != 2 || !strings.Contains(r.stderr, "use low, medium or high") {
		t.Errorf("bad --min-confidence: exit %d: %s", r.code, r.stderr)
	}
}
