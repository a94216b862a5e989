package suggest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/internal/golden"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// expectKey annotates a fixture's workloads with what suggest must find:
// "peer <system>", "client <system>[,<system>...]" or "none". The library
// never reads annotations; only this test does.
const expectKey = "test.suggest.meshrole.io/expect"

type fixture struct {
	name string
	inv  *Inventory
	// expect maps "<Kind> <namespace>/<name>" to the expectation.
	expect map[string]string
}

func loadFixtures(t *testing.T) []fixture {
	t.Helper()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var out []fixture
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := policy.ReadDocuments(f)
		_ = f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		fx := fixture{name: filepath.Base(file), inv: &Inventory{}, expect: map[string]string{}}
		for _, doc := range docs {
			used, err := fx.inv.AddDocument(doc, "default")
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if !used {
				t.Fatalf("%s: %s %s is not something suggest reads", file, doc.APIVersion, doc.Kind)
			}
			var meta struct {
				Metadata struct {
					Name        string            `json:"name"`
					Namespace   string            `json:"namespace"`
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(doc.Raw, &meta); err != nil {
				t.Fatal(err)
			}
			if e, ok := meta.Metadata.Annotations[expectKey]; ok {
				fx.expect[doc.Kind+" "+meta.Metadata.Namespace+"/"+meta.Metadata.Name] = e
			}
		}
		out = append(out, fx)
	}
	return out
}

func key(r WorkloadRef) string { return r.Kind + " " + r.Namespace + "/" + r.Name }

func run(t *testing.T, fx fixture) ([]Finding, []v1alpha1.MeshRolePolicy) {
	t.Helper()
	findings, err := Suggest(fx.inv, Options{})
	if err != nil {
		t.Fatalf("%s: %v", fx.name, err)
	}
	return findings, Policies(findings)
}

func TestGolden(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			findings, policies := run(t, fx)
			var rendered []map[string]any
			for i := range policies {
				p, err := applyable(&policies[i])
				if err != nil {
					t.Fatal(err)
				}
				rendered = append(rendered, p)
			}
			got, err := yaml.Marshal(map[string]any{"findings": findings, "policies": rendered})
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", fx.name+".suggested"), got)
		})
	}
}

// TestExplainConfirms feeds the suggested policies, as the YAML a user
// would apply, into the decision engine together with the existing policies
// of the same manifests, and asks it about every workload: each peer must
// be skipped or bypass exactly the recommended ports, each client must
// exclude the ports it dials, and nothing else may change.
func TestExplainConfirms(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			findings, policies := run(t, fx)
			applied, err := MarshalPolicies(policies)
			if err != nil {
				t.Fatal(err)
			}
			docs, err := policy.ReadDocuments(bytes.NewReader(applied))
			if err != nil {
				t.Fatalf("the suggested YAML does not read back: %v\n%s", err, applied)
			}
			if len(docs) != len(policies) {
				t.Fatalf("%d policies written, %d read back", len(policies), len(docs))
			}
			store := fx.inv.store()
			for _, doc := range docs {
				if ok, err := store.Add(doc, "default"); !ok || err != nil {
					t.Fatalf("not a policy (%v): %s", err, doc.Raw)
				}
			}
			suggested := map[policy.Ref]bool{}
			for _, p := range policies {
				suggested[policy.Ref{Namespace: p.Namespace, Name: p.Name}] = true
			}
			nsLabels := fx.inv.namespaceLabels()
			byRef := map[WorkloadRef][]Finding{}
			for _, f := range findings {
				byRef[f.Workload] = append(byRef[f.Workload], f)
			}
			checked := 0
			for _, w := range fx.inv.workloads() {
				d := store.Decide(policy.Input{Namespace: w.ref.Namespace, NamespaceLabels: labels.Set(nsLabels(w.ref.Namespace)), PodLabels: labels.Set(w.labels)})
				fs := byRef[w.ref]
				if len(fs) == 0 || fs[0].Policy == "" {
					if d.Winner != nil && suggested[d.Winner.Policy] {
						t.Errorf("%s: no suggestion for it, yet the suggested %s picks it", w.ref, d.Winner)
					}
					for _, f := range fs {
						if f.Existing != nil && (d.Winner == nil || d.Winner.Policy.String() != f.Existing.Policy) {
							t.Errorf("%s: was decided by %s, now by %v", w.ref, f.Existing.Policy, d.Winner)
						}
					}
					continue
				}
				checked++
				if d.Winner == nil || !suggested[d.Winner.Policy] {
					t.Errorf("%s: the suggested policy does not decide it; winner %v", w.ref, d.Winner)
					continue
				}
				effect := d.Effect()
				switch f := fs[0]; f.Kind {
				case KindPeer:
					confirmPeer(t, w.ref, f, d.Winner.Workload, effect)
				case KindClient:
					var want []int32
					for _, f := range fs {
						want = sortedSet(want, f.Treatment.ExcludeOutboundPorts)
					}
					confirmClient(t, w.ref, want, d.Winner.Workload, effect)
				default:
					t.Errorf("%s: a %s finding was placed in a policy", w.ref, f.Kind)
				}
			}
			wantChecked := 0
			for ref, fs := range byRef {
				if fs[0].Policy != "" {
					wantChecked++
				} else if fs[0].Kind == KindPeer {
					t.Errorf("%s: a peer without a suggested entry (%s)", ref, fs[0].Note)
				}
			}
			if checked != wantChecked {
				t.Errorf("confirmed %d workloads, %d have suggestions", checked, wantChecked)
			}
		})
	}
}

func confirmPeer(t *testing.T, ref WorkloadRef, f Finding, w *v1alpha1.Workload, effect policy.Effect) {
	t.Helper()
	if w.Role != v1alpha1.RolePeerStateful || w.Peer.Proxy != f.Treatment.Proxy {
		t.Errorf("%s: got %s/%s, the catalogue recommends peer-stateful/%s", ref, w.Role, w.Peer.Proxy, f.Treatment.Proxy)
		return
	}
	switch f.Treatment.Proxy {
	case v1alpha1.PeerProxySkip:
		if effect.Labels[policy.IstioInjectKey] != "false" || effect.Annotations[policy.IstioInjectKey] != "false" {
			t.Errorf("%s: Skip does not turn the sidecar off: %+v", ref, effect)
		}
	case v1alpha1.PeerProxyBypassPorts:
		want := f.Treatment.Ports
		if len(want) == 0 {
			t.Errorf("%s: BypassPorts without ports", ref)
		}
		for _, k := range []string{policy.IstioExcludeInboundPorts, policy.IstioExcludeOutboundPorts} {
			if !slices.Equal(effect.Ports[k], want) {
				t.Errorf("%s: %s = %v, want exactly %v", ref, k, effect.Ports[k], want)
			}
		}
	}
}

func confirmClient(t *testing.T, ref WorkloadRef, want []int32, w *v1alpha1.Workload, effect policy.Effect) {
	t.Helper()
	if w.Role != v1alpha1.RoleClientStateless {
		t.Errorf("%s: got %s, want client-stateless", ref, w.Role)
		return
	}
	if len(want) == 0 {
		t.Errorf("%s: a client entry with nothing to exclude", ref)
	}
	got := effect.Ports[policy.IstioExcludeOutboundPorts]
	if missing := without(want, got); len(missing) > 0 {
		t.Errorf("%s: excludeOutboundPorts %v misses %v", ref, got, missing)
	}
	if effect.Labels[policy.IstioInjectKey] != "true" {
		t.Errorf("%s: a client loses its sidecar: %+v", ref, effect)
	}
}

// TestPrecisionRecall compares what suggest finds with what the fixtures
// say is there, over every fixture: each (workload, role, system) is one
// item, and a workload annotated "none" must yield nothing.
func TestPrecisionRecall(t *testing.T) {
	var truePositive, falsePositive, falseNegative, positives, negatives int
	systems := map[string]bool{}
	for _, fx := range loadFixtures(t) {
		findings, _ := run(t, fx)
		want := map[string]bool{}
		for ref, e := range fx.expect {
			if e == "none" {
				negatives++
				continue
			}
			positives++
			role, list, ok := strings.Cut(e, " ")
			if !ok || (role != "peer" && role != "client") {
				t.Fatalf("%s: %s: bad expectation %q", fx.name, ref, e)
			}
			for _, s := range strings.Split(list, ",") {
				want[ref+" "+role+" "+s] = true
				if role == "peer" {
					systems[s] = true
				}
			}
		}
		got := map[string]bool{}
		for _, f := range findings {
			role := "peer"
			if f.Role == v1alpha1.RoleClientStateless {
				role = "client"
			}
			got[key(f.Workload)+" "+role+" "+f.System] = true
		}
		for item := range got {
			if want[item] {
				truePositive++
			} else {
				falsePositive++
				t.Errorf("%s: false positive: %s", fx.name, item)
			}
		}
		for item := range want {
			if !got[item] {
				falseNegative++
				t.Errorf("%s: missed: %s", fx.name, item)
			}
		}
	}
	precision := float64(truePositive) / float64(max(1, truePositive+falsePositive))
	recall := float64(truePositive) / float64(max(1, truePositive+falseNegative))
	t.Logf("workloads annotated: %d positive, %d negative; findings: %d true, %d false positives, %d missed; precision %.3f, recall %.3f",
		positives, negatives, truePositive, falsePositive, falseNegative, precision, recall)

	cat, err := DefaultCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	var notInFixtures []string
	for _, s := range cat.Systems {
		if !systems[s.Name] {
			notInFixtures = append(notInFixtures, s.Name)
		}
	}
	sort.Strings(notInFixtures)
	if len(notInFixtures) > 0 {
		t.Errorf("catalogue systems without a peer in the fixtures: %v", notInFixtures)
	}
	if negatives == 0 {
		t.Error("no negative fixtures")
	}
}
