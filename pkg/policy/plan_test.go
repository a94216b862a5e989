package policy_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// evalPlan answers for one pod the way native mode's generated CEL does
// (pkg/native): the first matching entry of each policy, the winner as the
// first Enforce match in the scope's order, the winner's precomputed
// conflicts, and the first match when it is a DryRun one. It is the oracle
// that proves a Plan holds the same decisions as Store.Decide.
func evalPlan(plan *policy.Plan, in policy.Input) policy.Effect {
	var scope *policy.Scope
	for i, sc := range plan.Scopes {
		if sc.Namespace == in.Namespace || (sc.Namespace == "" && scope == nil) {
			scope = &plan.Scopes[i]
		}
	}
	if scope == nil {
		return policy.Effect{} // no policy decides in this namespace
	}
	first := map[int]int{}
	for _, i := range scope.Policies {
		p := &plan.Policies[i]
		first[i] = -1
		if p.NamespaceSelector != nil && !p.NamespaceSelector.Matches(in.NamespaceLabels) {
			continue
		}
		for k := range p.Entries {
			if p.Entries[k].Selector.Matches(in.PodLabels) {
				first[i] = k
				break
			}
		}
	}
	writes := func(e *policy.PlannedEntry) *policy.EntryWrites {
		if e.Ambient != nil && policy.IsAmbient(in.NamespaceLabels) {
			return e.Ambient
		}
		return &e.EntryWrites
	}
	var e policy.Effect
	e.Annotations = map[string]string{}
	for _, i := range scope.Policies {
		if k := first[i]; k >= 0 && plan.Policies[i].Mode != v1alpha1.ModeDryRun {
			w := writes(&plan.Policies[i].Entries[k])
			e = w.Effect
			e.Annotations = maps.Clone(w.Effect.Annotations)
			var conflicts []string
			for _, c := range w.Conflicts {
				if first[c.Policy] == c.Entry {
					conflicts = append(conflicts, plan.Policies[c.Policy].Entries[c.Entry].ConflictText)
				}
			}
			if len(conflicts) > 0 {
				e.Annotations[policy.ConflictAnnotation] = strings.Join(conflicts, ",")
			}
			break
		}
	}
	for _, i := range scope.Policies {
		if k := first[i]; k >= 0 {
			if plan.Policies[i].Mode == v1alpha1.ModeDryRun {
				e.Annotations[policy.DryRunAnnotation] = writes(&plan.Policies[i].Entries[k]).DryRunReport
			}
			break
		}
	}
	return e
}

// TestPlanDecidesLikeTheStore compares, over random policies and pods, what
// the Plan says with what Decide says.
func TestPlanDecidesLikeTheStore(t *testing.T) {
	apps := []string{"a", "b", "c"}
	namespaces := []string{"alpha", "beta", "gamma", "delta"}
	nsLabels := map[string]labels.Set{"alpha": {"tier": "apps"}, "beta": {"tier": "db"}, "gamma": {},
		"delta": {"tier": "apps", "istio.io/dataplane-mode": "ambient"}}
	randomSelector := func(r *rand.Rand) metav1.LabelSelector {
		switch r.IntN(4) {
		case 0:
			return metav1.LabelSelector{}
		case 1:
			return sel("app", apps[r.IntN(len(apps))])
		case 2:
			return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "track", Operator: metav1.LabelSelectorOpExists}}}
		default:
			return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{apps[r.IntN(len(apps))]}}}}
		}
	}
	randomSpec := func(r *rand.Rand) v1alpha1.PolicySpec {
		spec := v1alpha1.PolicySpec{Priority: int32(r.IntN(3))}
		if r.IntN(4) == 0 {
			spec.Mode = v1alpha1.ModeDryRun
		}
		for k := range 1 + r.IntN(3) {
			w := peer(fmt.Sprintf("w%d", k), randomSelector(r))
			if r.IntN(2) == 0 {
				w = client(w.Name, w.Selector)
				proxies := []v1alpha1.ClientProxy{"", v1alpha1.ClientProxyInject, v1alpha1.ClientProxySidecar, v1alpha1.ClientProxyUnchanged}
				w.Client = &v1alpha1.ClientSettings{Proxy: proxies[r.IntN(len(proxies))], ExcludeOutboundPorts: []v1alpha1.Port{8761}}
			}
			spec.Workloads = append(spec.Workloads, w)
		}
		return spec
	}
	decisions, conflicts, dryRuns, ambient := 0, 0, 0, 0
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		s := policy.NewStore()
		for _, ns := range namespaces {
			for j := range r.IntN(3) {
				s.SetMeshRolePolicy(&v1alpha1.MeshRolePolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", j)}, Spec: randomSpec(r)})
			}
		}
		for j := range r.IntN(3) {
			s.SetClusterMeshRolePolicy(&v1alpha1.ClusterMeshRolePolicy{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%d", j)},
				Spec:       v1alpha1.ClusterMeshRolePolicySpec{PolicySpec: randomSpec(r), NamespaceSelector: sel("tier", "apps")}})
		}
		plan := s.Plan()
		for _, ns := range append(namespaces, "other") {
			for _, app := range append(apps, "") {
				for _, track := range []string{"", "stable"} {
					pod := labels.Set{}
					if app != "" {
						pod["app"] = app
					}
					if track != "" {
						pod["track"] = track
					}
					in := policy.Input{Namespace: ns, NamespaceLabels: nsLabels[ns], PodLabels: pod}
					want := s.Decide(in).Effect()
					got := evalPlan(&plan, in)
					if len(want.Annotations) == 0 {
						want.Annotations = map[string]string{}
					}
					if !reflect.DeepEqual(normalize(got), normalize(want)) {
						t.Fatalf("seed %d, namespace %s, pod %v:\nplan:   %+v\ndecide: %+v", seed, ns, pod, got, want)
					}
					decisions++
					if policy.IsAmbient(in.NamespaceLabels) && want.Annotations[policy.RoleAnnotation] == "client-stateless" {
						ambient++
					}
					if want.Annotations[policy.ConflictAnnotation] != "" {
						conflicts++
					}
					if want.Annotations[policy.DryRunAnnotation] != "" {
						dryRuns++
					}
				}
			}
		}
	}
	if conflicts == 0 || dryRuns == 0 || ambient == 0 {
		t.Fatalf("%d decisions compared, %d with conflicts, %d with DryRun reports, %d clients in an ambient namespace: the corpus must have all three",
			decisions, conflicts, dryRuns, ambient)
	}
	t.Logf("%d decisions compared (%d with conflicts, %d with DryRun reports, %d clients in an ambient namespace)", decisions, conflicts, dryRuns, ambient)
}

// normalize treats empty and missing maps alike.
func normalize(e policy.Effect) policy.Effect {
	if len(e.Labels) == 0 {
		e.Labels = nil
	}
	if len(e.Annotations) == 0 {
		e.Annotations = nil
	}
	if len(e.Ports) == 0 {
		e.Ports = nil
	}
	return e
}

func TestPlanRefusesWhatNativeModeCannotHonour(t *testing.T) {
	s := policy.NewStore()
	hold := client("web", sel("app", "web"))
	hold.Client = &v1alpha1.ClientSettings{HoldApplicationUntilProxyStarts: true}
	s.SetMeshRolePolicy(mrp("shop", "slow", 5, "", hold))
	s.SetMeshRolePolicy(mrp("shop", "fine", 0, "", peer("web", sel("app", "web"))))
	plan := s.Plan()
	if got := plan.Refused[policy.Ref{Namespace: "shop", Name: "slow"}]; len(got) != 1 {
		t.Fatalf("refused = %v", plan.Refused)
	}
	if len(plan.Policies) != 1 || plan.Policies[0].Ref.Name != "fine" {
		t.Fatalf("planned %+v, want only shop/fine", plan.Policies)
	}
	// Native mode then decides as if the refused policy did not exist.
	e := evalPlan(&plan, policy.Input{Namespace: "shop", PodLabels: labels.Set{"app": "web"}})
	if e.Annotations[policy.PolicyAnnotation] != "shop/fine" {
		t.Fatalf("winner %q, want shop/fine", e.Annotations[policy.PolicyAnnotation])
	}
}
