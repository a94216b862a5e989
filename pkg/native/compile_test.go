package native

import (
	"bytes"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/internal/golden"
	"github.com/meshrole/meshrole/pkg/policy"
)

func loadPlan(t *testing.T, path string) policy.Plan {
	t.Helper()
	store, _, err := policy.LoadFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	return store.Plan()
}

// TestCompileGolden compiles testdata/X.yaml into X.yaml.native (make golden
// rewrites it). The
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
			objs, err := Compile(&plan, Options{ExcludedNamespaces: []string{"kube-system", "meshrole-system"}}, Coverage{})
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			for i := range objs {
				for _, o := range []any{&objs[i].Policy, &objs[i].Binding} {
					b, err := yaml.Marshal(o)
					if err != nil {
						t.Fatal(err)
					}
					got.WriteString("---\n")
					got.Write(b)
				}
			}
			golden.Check(t, in+".native", got.Bytes())
		})
	}
}

// names lists the objects, with the phases of a bucket's namespaces.
func names(objs []Object) []string {
	var out []string
	for i := range objs {
		name := objs[i].Policy.Name
		for _, ns := range slices.Sorted(maps.Keys(objs[i].Phases)) {
			name += " " + ns + "=" + string(objs[i].Phases[ns])
		}
		out = append(out, name)
		if objs[i].Binding.Spec.PolicyName != objs[i].Policy.Name || objs[i].Binding.Name != objs[i].Policy.Name {
			out = append(out, "MISMATCHED BINDING "+objs[i].Binding.Name)
		}
	}
	slices.Sort(out)
	return out
}

func find(t *testing.T, objs []Object, name string) *Object {
	t.Helper()
	for i := range objs {
		if objs[i].Policy.Name == name {
			return &objs[i]
		}
	}
	t.Fatalf("no %s among %v", name, names(objs))
	return nil
}

func variable(o *Object, name string) string {
	for _, v := range o.Policy.Spec.Variables {
		if v.Name == name {
			return v.Expression
		}
	}
	return ""
}

func bucketed(phases ...string) []string {
	var out []string
	byBucket := map[string][]string{}
	for _, p := range phases {
		ns, _, _ := strings.Cut(p, "=")
		byBucket[BucketOf(ns)] = append(byBucket[BucketOf(ns)], p)
	}
	for b, ps := range byBucket {
		slices.Sort(ps)
		out = append(out, b+" "+strings.Join(ps, " "))
	}
	slices.Sort(out)
	return out
}

func TestCompileObjects(t *testing.T) {
	plan := loadPlan(t, "testdata/policies.yaml")
	objs, err := Compile(&plan, Options{ExcludedNamespaces: []string{"zk"}}, Coverage{})
	if err != nil {
		t.Fatal(err)
	}
	// The namespaces with policies in their buckets (not the excluded zk,
	// not hold whose only policy native mode refuses), and the cluster object.
	want := append(bucketed("mixed=Owner", "preview=Owner", "shop=Owner"), ClusterObjectName)
	slices.Sort(want)
	if got := names(objs); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	for _, o := range objs {
		if o.Policy.Labels[ManagedByLabel] != ManagedByValue || o.Binding.Labels[ManagedByLabel] != ManagedByValue {
			t.Errorf("%s: labels %v / %v", o.Policy.Name, o.Policy.Labels, o.Binding.Labels)
		}
	}
	shop := find(t, objs, BucketOf("shop"))
	if got := shop.Binding.Spec.MatchResources.NamespaceSelector.MatchExpressions[0].Values; !slices.Contains(got, "shop") {
		t.Errorf("%s binds %v, not shop", shop.Policy.Name, got)
	}
	cluster := find(t, objs, ClusterObjectName)
	if got := cluster.Policy.Spec.MatchConditions[1].Expression; got != `!(request.namespace in ["mixed", "preview", "shop"])` {
		t.Errorf("the cluster object does not leave the namespaces in buckets alone: %s", got)
	}
	if got := plan.Refused[policy.Ref{Namespace: "hold", Name: "slow-start"}]; len(got) != 1 || !strings.Contains(got[0], "holdApplicationUntilProxyStarts needs webhook mode") {
		t.Errorf("refused = %v, want hold/slow-start refused for holdApplicationUntilProxyStarts", plan.Refused)
	}

	// Handover: an arriving namespace is decided by the cluster object too;
	// a retiring one keeps its bucket entry with the cluster policies'
	// decision, excluded from the cluster object until Released; a withheld
	// one has no entry yet.
	objs, err = Compile(&plan, Options{}, Coverage{
		Arriving: map[string]bool{"shop": true},
		Retiring: map[string]bool{"gone": true},
		Released: map[string]bool{"going": true},
		Withheld: map[string]bool{"mixed": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	want = append(bucketed("gone=Retiring", "going=Released", "preview=Owner", "shop=Arriving", "zk=Owner"), ClusterObjectName)
	slices.Sort(want)
	if got := names(objs); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	cluster = find(t, objs, ClusterObjectName)
	if got := cluster.Policy.Spec.MatchConditions[1].Expression; got != `!(request.namespace in ["gone", "preview", "zk"])` {
		t.Errorf("exclusions during the handover: %s", got)
	}
	if winner := variable(cluster, "winner"); !strings.HasPrefix(winner, `request.namespace == "shop" ? (`) {
		t.Errorf("the cluster object does not decide the arriving namespace shop: winner = %s", winner)
	}
	gone := find(t, objs, BucketOf("gone"))
	if !slices.ContainsFunc(gone.Policy.Spec.Variables, func(v admissionregistrationv1.Variable) bool {
		return strings.Contains(v.Expression, `"cluster/everyone-is-a-client"`)
	}) {
		t.Errorf("the retiring namespace's bucket does not hold the cluster policies' decision")
	}

	// A released namespace that has policies again keeps the cluster
	// policies' decision in its bucket until it leaves it.
	objs, err = Compile(&plan, Options{}, Coverage{Released: map[string]bool{"shop": true}})
	if err != nil {
		t.Fatal(err)
	}
	released := find(t, objs, BucketOf("shop"))
	mentions := func(ref string) bool {
		return slices.ContainsFunc(released.Policy.Spec.Variables, func(v admissionregistrationv1.Variable) bool {
			return strings.Contains(v.Expression, `"`+ref+`"`)
		})
	}
	if mentions("shop/eureka") || !mentions("cluster/everyone-is-a-client") {
		t.Errorf("the released namespace shop's bucket does not decide it with the cluster policies only, as the cluster object does")
	}

	// Without cluster policies there is no cluster object.
	store := policy.NewStore()
	if _, err := store.Add(mustDoc(t, `{apiVersion: meshrole.io/v1alpha1, kind: MeshRolePolicy, metadata: {name: a, namespace: zk},
spec: {workloads: [{name: w, selector: {}, role: peer-stateful}]}}`), ""); err != nil {
		t.Fatal(err)
	}
	plan = store.Plan()
	objs, err = Compile(&plan, Options{}, Coverage{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(objs); !slices.Equal(got, bucketed("zk=Owner")) {
		t.Fatalf("objects %v, want only zk's bucket", got)
	}
	// Nothing to decide, nothing generated.
	empty := policy.NewStore().Plan()
	if objs, _ := Compile(&empty, Options{}, Coverage{}); len(objs) != 0 {
		t.Fatalf("an empty plan compiled to %v", names(objs))
	}
}

// TestCompileSpreadsNamespaces: however many namespaces have policies, the
// objects stay at Buckets + 1, each within the API server's limits.
func TestCompileSpreadsNamespaces(t *testing.T) {
	store := policy.NewStore()
	for n := range 1000 {
		if _, err := store.Add(mustDoc(t, fmt.Sprintf(`{apiVersion: meshrole.io/v1alpha1, kind: MeshRolePolicy, metadata: {name: p, namespace: team-%04d},
spec: {workloads: [{name: w, selector: {matchLabels: {app: a}}, role: peer-stateful}]}}`, n)), ""); err != nil {
			t.Fatal(err)
		}
	}
	plan := store.Plan()
	objs, err := Compile(&plan, Options{}, Coverage{})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != Buckets {
		t.Fatalf("%d objects for 1,000 namespaces, want %d buckets", len(objs), Buckets)
	}
	for _, o := range objs {
		if n := len(o.Phases); n < 1000/Buckets/2 || n > 1000/Buckets*2 {
			t.Errorf("%s holds %d namespaces; the hash spreads them badly", o.Policy.Name, n)
		}
	}
}

func TestCompileRefusesWhatTheAPIServerWould(t *testing.T) {
	store := policy.NewStore()
	for j := range 400 {
		if _, err := store.Add(mustDoc(t, fmt.Sprintf(`{apiVersion: meshrole.io/v1alpha1, kind: MeshRolePolicy, metadata: {name: p%d, namespace: big},
spec: {workloads: [{name: w, selector: {matchLabels: {app: a%d}}, role: client-stateless, client: {excludeOutboundPorts: [8761]}}]}}`, j, j)), ""); err != nil {
			t.Fatal(err)
		}
	}
	plan := store.Plan()
	if _, err := Compile(&plan, Options{}, Coverage{}); err != nil {
		t.Fatalf("400 policies in one namespace: %v", err)
	}
	for j := 400; j < 3000; j++ {
		if _, err := store.Add(mustDoc(t, fmt.Sprintf(`{apiVersion: meshrole.io/v1alpha1, kind: MeshRolePolicy, metadata: {name: p%d, namespace: big},
spec: {workloads: [{name: w, selector: {matchLabels: {app: a%d}}, role: client-stateless}]}}`, j, j)), ""); err != nil {
			t.Fatal(err)
		}
	}
	plan = store.Plan()
	_, err := Compile(&plan, Options{}, Coverage{})
	if err == nil || !strings.Contains(err.Error(), "namespaces big") || !strings.Contains(err.Error(), "use webhook mode") {
		t.Fatalf("3,000 policies in one namespace: err = %v, want a refusal naming the namespace", err)
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
