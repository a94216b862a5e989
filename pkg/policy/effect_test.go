package policy_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// TestEffectRows checks every row of docs/design.md, "What a verdict writes", on a pod with no labels or
// annotations of its own: the exact labels and annotations written.
func TestEffectRows(t *testing.T) {
	trace := func(role, workload string) map[string]string {
		return map[string]string{
			"meshrole.io/role": role, "meshrole.io/policy": "shop/p", "meshrole.io/workload": workload,
		}
	}
	with := func(m map[string]string, kv ...string) map[string]string {
		m = maps.Clone(m)
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name            string
		workload        v1alpha1.Workload
		ambient         bool // the namespace is labelled istio.io/dataplane-mode=ambient
		wantLabels      map[string]string
		wantAnnotations map[string]string
	}{
		{
			name:     "peer-stateful / Skip (default)",
			workload: v1alpha1.Workload{Name: "w", Role: v1alpha1.RolePeerStateful},
			wantLabels: map[string]string{
				"sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none",
			},
			wantAnnotations: with(trace("peer-stateful", "w"), "sidecar.istio.io/inject", "false"),
		},
		{
			name: "peer-stateful / BypassPorts",
			workload: v1alpha1.Workload{Name: "w", Role: v1alpha1.RolePeerStateful,
				Peer: &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{3888, 2888, 3888}}},
			wantLabels: nil,
			wantAnnotations: with(trace("peer-stateful", "w"),
				"traffic.sidecar.istio.io/excludeInboundPorts", "2888,3888",
				"traffic.sidecar.istio.io/excludeOutboundPorts", "2888,3888"),
		},
		{
			name:            "client-stateless / Inject (default)",
			workload:        v1alpha1.Workload{Name: "c", Role: v1alpha1.RoleClientStateless},
			wantLabels:      map[string]string{"sidecar.istio.io/inject": "true"},
			wantAnnotations: with(trace("client-stateless", "c"), "sidecar.istio.io/inject", "true"),
		},
		{
			name:            "client-stateless / Inject (default) in an ambient namespace: stays in ambient",
			workload:        v1alpha1.Workload{Name: "c", Role: v1alpha1.RoleClientStateless},
			ambient:         true,
			wantLabels:      nil,
			wantAnnotations: trace("client-stateless", "c"),
		},
		{
			name: "client-stateless / Sidecar",
			workload: v1alpha1.Workload{Name: "c", Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxySidecar}},
			wantLabels:      map[string]string{"sidecar.istio.io/inject": "true"},
			wantAnnotations: with(trace("client-stateless", "c"), "sidecar.istio.io/inject", "true"),
		},
		{
			name: "client-stateless / Sidecar in an ambient namespace: leaves ambient for a sidecar",
			workload: v1alpha1.Workload{Name: "c", Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxySidecar}},
			ambient:         true,
			wantLabels:      map[string]string{"sidecar.istio.io/inject": "true"},
			wantAnnotations: with(trace("client-stateless", "c"), "sidecar.istio.io/inject", "true"),
		},
		{
			name:     "peer-stateful / Skip in an ambient namespace: out of ambient too",
			workload: v1alpha1.Workload{Name: "w", Role: v1alpha1.RolePeerStateful},
			ambient:  true,
			wantLabels: map[string]string{
				"sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none",
			},
			wantAnnotations: with(trace("peer-stateful", "w"), "sidecar.istio.io/inject", "false"),
		},
		{
			name: "client-stateless / Unchanged",
			workload: v1alpha1.Workload{Name: "c", Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged}},
			wantLabels:      nil,
			wantAnnotations: trace("client-stateless", "c"),
		},
		{
			name: "client excludeOutboundPorts",
			workload: v1alpha1.Workload{Name: "c", Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged, ExcludeOutboundPorts: []v1alpha1.Port{8761}}},
			wantLabels:      nil,
			wantAnnotations: with(trace("client-stateless", "c"), "traffic.sidecar.istio.io/excludeOutboundPorts", "8761"),
		},
		{
			name: "client holdApplicationUntilProxyStarts",
			workload: v1alpha1.Workload{Name: "c", Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged, HoldApplicationUntilProxyStarts: true}},
			wantLabels:      nil,
			wantAnnotations: with(trace("client-stateless", "c"), "proxy.istio.io/config", "holdApplicationUntilProxyStarts: true\n"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := policy.NewStore()
			tt.workload.Selector = metav1.LabelSelector{}
			s.SetMeshRolePolicy(mrp("shop", "p", 0, "", tt.workload))
			nsLabels := labels.Set{"meshrole.io/enabled": "true"}
			if tt.ambient {
				nsLabels["istio.io/dataplane-mode"] = "ambient"
			}
			d := s.Decide(policy.Input{Namespace: "shop", NamespaceLabels: nsLabels, PodLabels: labels.Set{}})
			effect := d.Effect()
			gotLabels, gotAnnotations, warnings := effect.Apply(nil, nil)
			if len(warnings) > 0 {
				t.Errorf("warnings: %v", warnings)
			}
			if !maps.Equal(gotLabels, tt.wantLabels) {
				t.Errorf("labels\n got %v\nwant %v", gotLabels, tt.wantLabels)
			}
			if !maps.Equal(gotAnnotations, tt.wantAnnotations) {
				t.Errorf("annotations\n got %v\nwant %v", gotAnnotations, tt.wantAnnotations)
			}
		})
	}
}

func TestApplyKeepsThePodsOwnValues(t *testing.T) {
	e := policy.Effect{
		Labels:      map[string]string{"sidecar.istio.io/inject": "false"},
		Annotations: map[string]string{"meshrole.io/role": "peer-stateful"},
		Ports:       map[string][]int32{"traffic.sidecar.istio.io/excludeOutboundPorts": {8761, 9000}},
	}
	podLabels := map[string]string{"app": "x", "sidecar.istio.io/inject": "true"}
	podAnnotations := map[string]string{"team": "shop", "traffic.sidecar.istio.io/excludeOutboundPorts": "9000"}
	gotLabels, gotAnnotations, _ := e.Apply(podLabels, podAnnotations)
	if want := map[string]string{"app": "x", "sidecar.istio.io/inject": "false"}; !maps.Equal(gotLabels, want) {
		t.Errorf("labels %v, want %v", gotLabels, want)
	}
	want := map[string]string{"team": "shop", "meshrole.io/role": "peer-stateful", "traffic.sidecar.istio.io/excludeOutboundPorts": "9000,8761"}
	if !maps.Equal(gotAnnotations, want) {
		t.Errorf("annotations %v, want %v", gotAnnotations, want)
	}
	if podLabels["sidecar.istio.io/inject"] != "true" || podAnnotations["traffic.sidecar.istio.io/excludeOutboundPorts"] != "9000" {
		t.Error("Apply modified its inputs")
	}
}

func TestMergePortList(t *testing.T) {
	tests := []struct {
		existing string
		add      []int32
		want     string
		wantErr  bool
	}{
		{existing: "", add: []int32{8761}, want: "8761"},
		{existing: "  ", add: []int32{2888, 3888}, want: "2888,3888"},
		{existing: "9000", add: []int32{8761}, want: "9000,8761"},
		{existing: "9000, 8761", add: []int32{8761}, want: "9000, 8761"}, // nothing added: untouched
		{existing: "9000 , 80", add: []int32{443}, want: "9000,80,443"},
		{existing: "3888,2888", add: []int32{2888, 3888}, want: "3888,2888"},
		{existing: "0", add: []int32{1}, want: "0,1"}, // Istio accepts 0
		{existing: "8761,http", add: []int32{8761}, want: "8761,http", wantErr: true},
		{existing: "80,", add: []int32{8761}, want: "80,", wantErr: true},
		{existing: "70000", add: []int32{8761}, want: "70000", wantErr: true},
		{existing: "-1", add: []int32{8761}, want: "-1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := policy.MergePortList(tt.existing, tt.add)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("MergePortList(%q, %v) = %q, %v; want %q, error %v", tt.existing, tt.add, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestMergeHoldApplication(t *testing.T) {
	tests := []struct {
		existing string
		want     string
		wantErr  bool
	}{
		{existing: "", want: "holdApplicationUntilProxyStarts: true\n"},
		{existing: "concurrency: 2", want: "concurrency: 2\nholdApplicationUntilProxyStarts: true\n"},
		{existing: `{"concurrency": 2}`, want: "concurrency: 2\nholdApplicationUntilProxyStarts: true\n"},
		{existing: "holdApplicationUntilProxyStarts: false", want: "holdApplicationUntilProxyStarts: true\n"},
		{existing: "holdApplicationUntilProxyStarts: true  # kept as written", want: "holdApplicationUntilProxyStarts: true  # kept as written"},
		{existing: "# only a comment", want: "holdApplicationUntilProxyStarts: true\n"},
		{existing: "concurrency: [2", want: "concurrency: [2", wantErr: true},
		{existing: "- a list", want: "- a list", wantErr: true},
		// Written back, a quoted "<<" key would become YAML's merge key.
		{existing: `{"<<": null}`, want: `{"<<": null}`, wantErr: true},
		{existing: `{"<<": {"concurrency": 2}}`, want: `{"<<": {"concurrency": 2}}`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := policy.MergeHoldApplication(tt.existing)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("MergeHoldApplication(%q) = %q, %v; want %q, error %v", tt.existing, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestConflictAndDryRunAnnotationsAndWarnings(t *testing.T) {
	s := policy.NewStore()
	s.SetMeshRolePolicy(mrp("shop", "peers", 0, "", peer("p", sel("app", "x"))))
	s.SetClusterMeshRolePolicy(cmrp("clients", 0, "", metav1.LabelSelector{}, client("c", metav1.LabelSelector{})))
	s.SetMeshRolePolicy(mrp("shop", "preview", 5, v1alpha1.ModeDryRun, client("try", sel("app", "x"))))
	d := s.Decide(policy.Input{Namespace: "shop", NamespaceLabels: labels.Set{}, PodLabels: labels.Set{"app": "x"}})
	e := d.Effect()
	if got, want := e.Annotations[policy.ConflictAnnotation], "cluster/clients/c=client-stateless"; got != want {
		t.Errorf("conflict annotation %q, want %q", got, want)
	}
	wantDryRun := `{"policy":"shop/preview","workload":"try","role":"client-stateless","labels":{"sidecar.istio.io/inject":"true"},"annotations":{"sidecar.istio.io/inject":"true"}}`
	if got := e.Annotations[policy.DryRunAnnotation]; got != wantDryRun {
		t.Errorf("dry-run annotation\n got %s\nwant %s", got, wantDryRun)
	}
	if e.Annotations[policy.RoleAnnotation] != "peer-stateful" || e.Labels[policy.IstioInjectKey] != "false" {
		t.Errorf("the enforced verdict changed: %v %v", e.Labels, e.Annotations)
	}
	warnings := d.Warnings()
	if len(warnings) != 2 ||
		!strings.Contains(warnings[0], "conflicting policies at priority 0: shop/peers (workload p, peer-stateful) wins over cluster/clients (workload c, client-stateless), which would write other keys") ||
		!strings.Contains(warnings[1], "DryRun policy shop/preview would make this pod client-stateless") {
		t.Errorf("warnings %q", warnings)
	}
}

// TestOnlyTheVerdictsOwnMeshroleKeysRemain: meshrole.io/* annotations are
// meshrole's record; whatever a pod author (or a copied manifest) wrote there
// is replaced by what the verdict writes, and the rest is removed.
func TestOnlyTheVerdictsOwnMeshroleKeysRemain(t *testing.T) {
	forged := map[string]string{
		"meshrole.io/role": "peer-stateful", "meshrole.io/policy": "other/eureka", "meshrole.io/workload": "x",
		"meshrole.io/conflict": "other/eureka/x=peer-stateful", "meshrole.io/dry-run": "{}", "meshrole.io/anything": "y",
		"team": "shop",
	}
	podLabels := map[string]string{"app": "x", "meshrole.io/tier": "kept: labels select pods, so they are never removed"}

	s := policy.NewStore()
	s.SetMeshRolePolicy(mrp("shop", "p", 0, "", client("c", sel("app", "x"))))
	matched := s.Decide(policy.Input{Namespace: "shop", PodLabels: labels.Set(podLabels)})
	e := matched.Effect()
	gotLabels, got, _ := e.Apply(podLabels, forged)
	want := map[string]string{
		"meshrole.io/role": "client-stateless", "meshrole.io/policy": "shop/p", "meshrole.io/workload": "c",
		"sidecar.istio.io/inject": "true", "team": "shop",
	}
	if !maps.Equal(got, want) {
		t.Errorf("matched pod's annotations\n got %v\nwant %v", got, want)
	}
	if gotLabels["meshrole.io/tier"] == "" {
		t.Errorf("a meshrole.io/ label was removed: %v", gotLabels)
	}

	unmatched := policy.NewStore().Decide(policy.Input{Namespace: "shop", PodLabels: labels.Set(podLabels)})
	e = unmatched.Effect()
	_, got, _ = e.Apply(podLabels, forged)
	if want := map[string]string{"team": "shop"}; !maps.Equal(got, want) {
		t.Errorf("unmatched pod's annotations\n got %v\nwant %v", got, want)
	}
}

func TestUnmatchedDecisionWritesNothing(t *testing.T) {
	d := policy.NewStore().Decide(policy.Input{Namespace: "shop"})
	e := d.Effect()
	if len(e.Labels)+len(e.Annotations)+len(e.Ports) != 0 || e.HoldApplicationUntilProxyStarts || len(d.Warnings()) != 0 {
		t.Fatalf("effect %+v warnings %v", e, d.Warnings())
	}
	l, a, _ := e.Apply(nil, nil)
	if l != nil || a != nil {
		t.Fatalf("Apply of nothing created maps: %v %v", l, a)
	}
	if !slices.Equal(d.Matches, nil) {
		t.Fatal("matches on an empty store")
	}
}

func TestConflictAnnotationRoundTrip(t *testing.T) {
	got := policy.ConflictingPolicies("cluster/clients/c=client-stateless,shop/other/x=peer-stateful")
	if strings.Join(got, " ") != "cluster/clients shop/other" {
		t.Fatalf("ConflictingPolicies = %v", got)
	}
	for in, want := range map[string]policy.Ref{
		"cluster/clients": {Name: "clients"},
		"shop/eureka":     {Namespace: "shop", Name: "eureka"},
	} {
		if got, ok := policy.ParseRef(in); !ok || got != want || got.String() != in {
			t.Errorf("ParseRef(%q) = %v, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "noslash", "a/b/c", "shop/"} {
		if _, ok := policy.ParseRef(bad); ok {
			t.Errorf("ParseRef(%q) accepted", bad)
		}
	}
}

func TestKeyPointerToken(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"app", "app"},
		{"sidecar.istio.io/inject", "sidecar.istio.io~1inject"},
		{"a~b/c", "a~0b~1c"},
		// "~1" is a literal tilde and one, not an escaped slash.
		{"~1", "~01"},
	} {
		if got := policy.KeyPointerToken(tc.in); got != tc.want {
			t.Errorf("KeyPointerToken(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
