package native

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy"
)

// go test ./pkg/native -update
var update = flag.Bool("update", false, "rewrite the .native golden files")

func loadPlan(t *testing.T, path string) policy.Plan {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	docs, err := policy.ReadDocuments(f)
	if err != nil {
		t.Fatal(err)
	}
	store := policy.NewStore()
	for _, d := range docs {
		if _, err := store.Add(d, ""); err != nil {
			t.Fatal(err)
		}
	}
	return store.Plan()
}

// TestCompileGolden compiles testdata/X.yaml into X.yaml.native. The
// generated CEL is proven against the webhook on a real API server by the
// differential test in test/e2e; this golden pins what is generated.
func TestCompileGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			plan := loadPlan(t, in)
			objs, err := Compile(&plan, Options{ExcludedNamespaces: []string{"kube-system", "meshrole-system"}})
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			for i := range objs.Policies {
				for _, o := range []any{&objs.Policies[i], &objs.Bindings[i]} {
					b, err := yaml.Marshal(o)
					if err != nil {
						t.Fatal(err)
					}
					got.WriteString("---\n")
					got.Write(b)
				}
			}
			golden := in + ".native"
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/native -update)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("compiled objects differ from %s (run go test ./pkg/native -update and review the diff)", golden)
			}
		})
	}
}

func TestCompileShards(t *testing.T) {
	plan := loadPlan(t, "testdata/policies.yaml")
	objs, err := Compile(&plan, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A cluster policy decides in every namespace, so every shard exists.
	if len(objs.Policies) != 36 || len(objs.Bindings) != 36 {
		t.Fatalf("got %d policies and %d bindings, want 36 of each", len(objs.Policies), len(objs.Bindings))
	}
	for i := range objs.Policies {
		p, b := &objs.Policies[i], &objs.Bindings[i]
		if b.Spec.PolicyName != p.Name || p.Labels[ManagedByLabel] != ManagedByValue || b.Labels[ManagedByLabel] != ManagedByValue {
			t.Errorf("%s: binding %s names %q, labels %v / %v", p.Name, b.Name, b.Spec.PolicyName, p.Labels, b.Labels)
		}
	}
	if got := plan.Refused[policy.Ref{Namespace: "hold", Name: "slow-start"}]; len(got) != 1 || !strings.Contains(got[0], "holdApplicationUntilProxyStarts needs webhook mode") {
		t.Errorf("refused = %v, want hold/slow-start refused for holdApplicationUntilProxyStarts", plan.Refused)
	}
	for _, p := range objs.Policies {
		for _, v := range p.Spec.Variables {
			if strings.Contains(v.Expression, `"hold"`) {
				t.Errorf("%s: refused policy compiled into variable %s", p.Name, v.Name)
			}
		}
	}

	// Without cluster policies only the shards of namespaces with policies exist.
	store := policy.NewStore()
	if _, err := store.Add(mustDoc(t, `{apiVersion: meshrole.io/v1alpha1, kind: MeshRolePolicy, metadata: {name: a, namespace: zk},
spec: {workloads: [{name: w, selector: {}, role: peer-stateful}]}}`), ""); err != nil {
		t.Fatal(err)
	}
	plan = store.Plan()
	objs, err = Compile(&plan, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Policies) != 1 || objs.Policies[0].Name != "meshrole-shard-z" {
		t.Fatalf("got %d policies, want only meshrole-shard-z", len(objs.Policies))
	}
	// Nothing to decide, nothing generated.
	empty := policy.NewStore().Plan()
	if objs, _ := Compile(&empty, Options{}); len(objs.Policies)+len(objs.Bindings) != 0 {
		t.Fatalf("an empty plan compiled to %d objects", len(objs.Policies)+len(objs.Bindings))
	}
}

func mustDoc(t *testing.T, y string) policy.Document {
	t.Helper()
	docs, err := policy.ReadDocuments(strings.NewReader(y))
	if err != nil || len(docs) != 1 {
		t.Fatalf("reading %s: %v", y, err)
	}
	return docs[0]
}

func TestSelectorCEL(t *testing.T) {
	for _, tc := range []struct {
		name     string
		selector metav1.LabelSelector
		want     string
	}{
		{"empty selects everything", metav1.LabelSelector{}, "true"},
		{"matchLabels", metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka"}},
			`"app" in m && m["app"] == "eureka"`},
		{"In", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "In", Values: []string{"users", "orders"}}}},
			`"app" in m && m["app"] in ["orders", "users"]`},
		{"NotIn matches an absent key", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "NotIn", Values: []string{"db"}}}},
			`(!("tier" in m) || !(m["tier"] == "db"))`},
		{"Exists", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a/b", Operator: "Exists"}}},
			`"a/b" in m`},
		{"DoesNotExist", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "DoesNotExist"}}},
			`!("x" in m)`},
		{"requirements are ANDed in key order", metav1.LabelSelector{
			MatchLabels:      map[string]string{"b": "2"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Exists"}}},
			`"a" in m && "b" in m && m["b"] == "2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := metav1.LabelSelectorAsSelector(&tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			got, err := selectorCEL(sel, "m")
			if err != nil || got != tc.want {
				t.Errorf("selectorCEL = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if got, _ := selectorCEL(labels.Nothing(), "m"); got != "false" {
		t.Errorf("Nothing() = %q, want false", got)
	}
}
