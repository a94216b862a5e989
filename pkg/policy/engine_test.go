package policy_test

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

func sel(kv ...string) metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return metav1.LabelSelector{MatchLabels: m}
}

func peer(name string, s metav1.LabelSelector) v1alpha1.Workload {
	return v1alpha1.Workload{Name: name, Selector: s, Role: v1alpha1.RolePeerStateful}
}

func client(name string, s metav1.LabelSelector) v1alpha1.Workload {
	return v1alpha1.Workload{Name: name, Selector: s, Role: v1alpha1.RoleClientStateless}
}

func bypass(name string, s metav1.LabelSelector, ports ...v1alpha1.Port) v1alpha1.Workload {
	w := peer(name, s)
	w.Peer = &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: ports}
	return w
}

func withClient(w v1alpha1.Workload, c v1alpha1.ClientSettings) v1alpha1.Workload {
	w.Client = &c
	return w
}

func mrp(ns, name string, priority int32, mode v1alpha1.Mode, w ...v1alpha1.Workload) *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec:       v1alpha1.PolicySpec{Mode: mode, Priority: priority, Workloads: w},
	}
}

func cmrp(name string, priority int32, mode v1alpha1.Mode, ns metav1.LabelSelector, w ...v1alpha1.Workload) *v1alpha1.ClusterMeshRolePolicy {
	return &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{
			PolicySpec:        v1alpha1.PolicySpec{Mode: mode, Priority: priority, Workloads: w},
			NamespaceSelector: ns,
		},
	}
}

// verdict is a decision reduced to what the tests compare.
type verdict struct {
	winner    string // "<policy ref>/<workload>" or ""
	conflicts []string
	dryRun    string
	matches   int
}

func summarize(d policy.Decision) verdict {
	name := func(m *policy.Match) string {
		if m == nil {
			return ""
		}
		return m.Policy.String() + "/" + m.Workload.Name
	}
	v := verdict{winner: name(d.Winner), dryRun: name(d.DryRun), matches: len(d.Matches)}
	for i := range d.Conflicts {
		v.conflicts = append(v.conflicts, name(&d.Conflicts[i]))
	}
	return v
}

func TestDecide(t *testing.T) {
	enabled := labels.Set{"meshrole.io/enabled": "true", "team": "shop"}
	tests := []struct {
		name       string
		namespaced []*v1alpha1.MeshRolePolicy
		cluster    []*v1alpha1.ClusterMeshRolePolicy
		namespace  string
		nsLabels   labels.Set
		pod        labels.Set
		want       verdict
	}{
		{
			name:      "no policy: no match",
			namespace: "shop", pod: labels.Set{"app": "eureka-server"},
			want: verdict{},
		},
		{
			name:       "first matching entry within a policy wins",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "p", 0, "", client("all", metav1.LabelSelector{}), peer("eureka", sel("app", "eureka-server")))},
			namespace:  "shop", pod: labels.Set{"app": "eureka-server"},
			want: verdict{winner: "shop/p/all", matches: 1},
		},
		{
			name:       "later entry matches when earlier ones do not",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "p", 0, "", client("orders", sel("app", "orders")), peer("eureka", sel("app", "eureka-server")))},
			namespace:  "shop", pod: labels.Set{"app": "eureka-server"},
			want: verdict{winner: "shop/p/eureka", matches: 1},
		},
		{
			name:       "a policy in another namespace never applies",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("other", "p", 0, "", peer("eureka", sel("app", "eureka-server")))},
			namespace:  "shop", pod: labels.Set{"app": "eureka-server"},
			want: verdict{},
		},
		{
			name:       "empty selector matches every pod, including one with no labels",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "p", 0, "", client("all", metav1.LabelSelector{}))},
			namespace:  "shop", pod: nil,
			want: verdict{winner: "shop/p/all", matches: 1},
		},
		{
			name: "matchExpressions In",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "p", 0, "", client("clients", metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"orders", "users"}}},
			}))},
			namespace: "shop", pod: labels.Set{"app": "users"},
			want: verdict{winner: "shop/p/clients", matches: 1},
		},
		{
			name: "matchExpressions NotIn and DoesNotExist exclude",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "p", 0, "", client("clients", metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"eureka-server"}},
					{Key: "canary", Operator: metav1.LabelSelectorOpDoesNotExist},
				},
			}))},
			namespace: "shop", pod: labels.Set{"app": "orders", "canary": "yes"},
			want: verdict{},
		},
		{
			name: "higher priority wins over name order and kind",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", client("c", sel("app", "x"))),
			},
			cluster:   []*v1alpha1.ClusterMeshRolePolicy{cmrp("z", 10, "", metav1.LabelSelector{}, client("c", sel("app", "x")))},
			namespace: "shop", nsLabels: enabled, pod: labels.Set{"app": "x"},
			want: verdict{winner: "cluster/z/c", matches: 2},
		},
		{
			name:       "namespaced policy beats a cluster policy of equal priority",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "zz", 5, "", peer("p", sel("app", "x")))},
			cluster:    []*v1alpha1.ClusterMeshRolePolicy{cmrp("aa", 5, "", metav1.LabelSelector{}, peer("p", sel("app", "x")))},
			namespace:  "shop", nsLabels: enabled, pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/zz/p", matches: 2},
		},
		{
			name: "name order breaks a tie between policies of one kind",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "b", 0, "", peer("p", sel("app", "x"))),
				mrp("shop", "a", 0, "", peer("p", sel("app", "x"))),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/p", matches: 2},
		},
		{
			name:       "conflicting roles at equal priority: winner by precedence, conflict reported",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "peers", 0, "", peer("p", sel("app", "x")))},
			cluster:    []*v1alpha1.ClusterMeshRolePolicy{cmrp("clients", 0, "", metav1.LabelSelector{}, client("c", metav1.LabelSelector{}))},
			namespace:  "shop", nsLabels: enabled, pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/peers/p", conflicts: []string{"cluster/clients/c"}, matches: 2},
		},
		{
			name: "different roles at different priorities are no conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "peers", 1, "", peer("p", sel("app", "x"))),
				mrp("shop", "clients", 0, "", client("c", metav1.LabelSelector{})),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/peers/p", matches: 2},
		},
		{
			name: "same role at equal priority is no conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", peer("p", sel("app", "x"))),
				mrp("shop", "b", 0, "", peer("q", metav1.LabelSelector{})),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/p", matches: 2},
		},
		{
			name: "same role, other treatment at equal priority: Skip vs BypassPorts is a conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", peer("p", sel("app", "x"))),
				mrp("shop", "b", 0, "", bypass("q", metav1.LabelSelector{}, 2888, 3888)),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/p", conflicts: []string{"shop/b/q"}, matches: 2},
		},
		{
			name: "BypassPorts with other ports is a conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", bypass("p", sel("app", "x"), 2888)),
				mrp("shop", "b", 0, "", bypass("q", metav1.LabelSelector{}, 2888, 3888)),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/p", conflicts: []string{"shop/b/q"}, matches: 2},
		},
		{
			name: "BypassPorts with the same ports in another order is no conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", bypass("p", sel("app", "x"), 3888, 2888)),
				mrp("shop", "b", 0, "", bypass("q", metav1.LabelSelector{}, 2888, 3888)),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/p", matches: 2},
		},
		{
			name: "client Inject vs Unchanged is a conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", client("c", sel("app", "x"))),
				mrp("shop", "b", 0, "", withClient(client("d", metav1.LabelSelector{}), v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged})),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/c", conflicts: []string{"shop/b/d"}, matches: 2},
		},
		{
			name: "client Inject vs Unchanged in an ambient namespace write the same: no conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", client("c", sel("app", "x"))),
				mrp("shop", "b", 0, "", withClient(client("d", metav1.LabelSelector{}), v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged})),
			},
			namespace: "shop", nsLabels: labels.Set{"istio.io/dataplane-mode": "ambient"}, pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/c", matches: 2},
		},
		{
			name: "client excludeOutboundPorts that differ is a conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", withClient(client("c", sel("app", "x")), v1alpha1.ClientSettings{ExcludeOutboundPorts: []v1alpha1.Port{8761}})),
				mrp("shop", "b", 0, "", client("d", metav1.LabelSelector{})),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/c", conflicts: []string{"shop/b/d"}, matches: 2},
		},
		{
			name: "client holdApplicationUntilProxyStarts that differs is a conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", withClient(client("c", sel("app", "x")), v1alpha1.ClientSettings{HoldApplicationUntilProxyStarts: true})),
				mrp("shop", "b", 0, "", client("d", metav1.LabelSelector{})),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/c", conflicts: []string{"shop/b/d"}, matches: 2},
		},
		{
			name: "explicit defaults write the same as none: no conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", withClient(client("c", sel("app", "x")), v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyInject})),
				mrp("shop", "b", 0, "", client("d", metav1.LabelSelector{})),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/c", matches: 2},
		},
		{
			name:      "cluster namespaceSelector picks namespaces by label",
			cluster:   []*v1alpha1.ClusterMeshRolePolicy{cmrp("shops", 0, "", sel("team", "shop"), peer("p", sel("app", "x")))},
			namespace: "shop", nsLabels: enabled, pod: labels.Set{"app": "x"},
			want: verdict{winner: "cluster/shops/p", matches: 1},
		},
		{
			name:      "cluster namespaceSelector skips other namespaces",
			cluster:   []*v1alpha1.ClusterMeshRolePolicy{cmrp("shops", 0, "", sel("team", "billing"), peer("p", sel("app", "x")))},
			namespace: "shop", nsLabels: enabled, pod: labels.Set{"app": "x"},
			want: verdict{},
		},
		{
			name:       "DryRun alone: no winner, dry-run reported",
			namespaced: []*v1alpha1.MeshRolePolicy{mrp("shop", "p", 0, v1alpha1.ModeDryRun, peer("p", sel("app", "x")))},
			namespace:  "shop", pod: labels.Set{"app": "x"},
			want: verdict{dryRun: "shop/p/p", matches: 1},
		},
		{
			name: "DryRun above an Enforce policy never changes what is enforced",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "preview", 10, v1alpha1.ModeDryRun, peer("p", sel("app", "x"))),
				mrp("shop", "live", 0, "", client("c", sel("app", "x"))),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/live/c", dryRun: "shop/preview/p", matches: 2},
		},
		{
			name: "DryRun below the Enforce winner is not reported",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "preview", 0, v1alpha1.ModeDryRun, peer("p", sel("app", "x"))),
				mrp("shop", "live", 10, "", client("c", sel("app", "x"))),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/live/c", matches: 2},
		},
		{
			name: "a DryRun policy tying with a different role is no conflict",
			namespaced: []*v1alpha1.MeshRolePolicy{
				mrp("shop", "a", 0, "", peer("p", sel("app", "x"))),
				mrp("shop", "b", 0, v1alpha1.ModeDryRun, client("c", sel("app", "x"))),
			},
			namespace: "shop", pod: labels.Set{"app": "x"},
			want: verdict{winner: "shop/a/p", matches: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := policy.NewStore()
			for _, p := range tt.namespaced {
				s.SetMeshRolePolicy(p)
			}
			for _, p := range tt.cluster {
				s.SetClusterMeshRolePolicy(p)
			}
			got := summarize(s.Decide(policy.Input{Namespace: tt.namespace, NamespaceLabels: tt.nsLabels, PodLabels: tt.pod}))
			if got.winner != tt.want.winner || got.dryRun != tt.want.dryRun || got.matches != tt.want.matches ||
				len(got.conflicts) != len(tt.want.conflicts) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got.conflicts {
				if got.conflicts[i] != tt.want.conflicts[i] {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
			}
		})
	}
}

func TestStoreUpdatesAndDeletes(t *testing.T) {
	s := policy.NewStore()
	pod := policy.Input{Namespace: "shop", PodLabels: labels.Set{"app": "x"}}

	s.SetMeshRolePolicy(mrp("shop", "p", 0, "", peer("old", sel("app", "x"))))
	if got := summarize(s.Decide(pod)).winner; got != "shop/p/old" {
		t.Fatalf("winner %q", got)
	}
	updated := mrp("shop", "p", 0, "", client("new", sel("app", "x")))
	updated.Generation = 2
	s.SetMeshRolePolicy(updated)
	d := s.Decide(pod)
	if got := summarize(d).winner; got != "shop/p/new" || d.Winner.Generation != 2 {
		t.Fatalf("after update: winner %q generation %d", got, d.Winner.Generation)
	}
	s.DeleteMeshRolePolicy("shop", "p")
	if d := s.Decide(pod); d.Matched() {
		t.Fatalf("after delete: still matched %+v", summarize(d))
	}

	s.SetClusterMeshRolePolicy(cmrp("c", 0, "", metav1.LabelSelector{}, peer("p", metav1.LabelSelector{})))
	if !s.Decide(pod).Matched() {
		t.Fatal("cluster policy did not match")
	}
	s.DeleteClusterMeshRolePolicy("c")
	if s.Decide(pod).Matched() {
		t.Fatal("deleted cluster policy still matched")
	}
	s.DeleteClusterMeshRolePolicy("never-existed")
	s.DeleteMeshRolePolicy("nowhere", "never-existed")
}

func TestInvalidSelectorMatchesNothingAndIsReported(t *testing.T) {
	s := policy.NewStore()
	bad := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Sometimes"}}}
	s.SetMeshRolePolicy(mrp("shop", "p", 0, "", peer("bad", bad)))
	if s.Decide(policy.Input{Namespace: "shop", PodLabels: labels.Set{"app": "x"}}).Matched() {
		t.Fatal("an invalid selector matched")
	}
	if problems := policy.Problems(&mrp("shop", "p", 0, "", peer("bad", bad)).Spec, nil); len(problems) != 1 {
		t.Fatalf("problems = %v, want one", problems)
	}
}

// The Store shares the policy objects it is given (informer objects are
// read-only); it must never write to them, defaults included.
func TestStoreLeavesPoliciesAlone(t *testing.T) {
	p := mrp("shop", "p", 0, "",
		v1alpha1.Workload{Name: "a", Selector: sel("app", "a"), Role: v1alpha1.RolePeerStateful, Peer: &v1alpha1.PeerSettings{}},
		v1alpha1.Workload{Name: "b", Selector: sel("app", "b"), Role: v1alpha1.RoleClientStateless, Client: &v1alpha1.ClientSettings{}},
		v1alpha1.Workload{Name: "c", Selector: sel("app", "c"), Role: v1alpha1.RolePeerStateful})
	before := p.DeepCopy()
	s := policy.NewStore()
	s.SetMeshRolePolicy(p)
	d := s.Decide(policy.Input{Namespace: "shop", PodLabels: labels.Set{"app": "a"}})
	if d.Winner == nil || d.Winner.Workload.Peer.Proxy != v1alpha1.PeerProxySkip {
		t.Fatalf("winner %+v, want entry a with the default proxy Skip", d.Winner)
	}
	if !reflect.DeepEqual(p, before) {
		t.Fatalf("the Store changed the policy it was given:\n%+v\nwas\n%+v", p.Spec, before.Spec)
	}
}
