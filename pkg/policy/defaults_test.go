package policy_test

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// ShareDefaults writes out exactly the defaults the Store applies, so a
// policy decides the same with or without it, and the settings it shares
// are the same values for every entry.
func TestShareDefaults(t *testing.T) {
	p := mrp("shop", "p", 0, "",
		peer("a", sel("app", "a")),
		client("b", sel("app", "b")),
		v1alpha1.Workload{Name: "c", Selector: sel("app", "c"), Role: v1alpha1.RolePeerStateful, Peer: &v1alpha1.PeerSettings{Ports: []v1alpha1.Port{80}}},
		v1alpha1.Workload{Name: "d", Selector: sel("app", "d"), Role: v1alpha1.RoleClientStateless, Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxySidecar}},
		peer("e", sel("app", "e")))
	plain := policy.NewStore()
	plain.SetMeshRolePolicy(p.DeepCopy())

	policy.ShareDefaults(&p.Spec)
	w := p.Spec.Workloads
	if w[0].Peer == nil || w[0].Peer.Proxy != v1alpha1.PeerProxySkip || w[1].Client == nil || w[1].Client.Proxy != v1alpha1.ClientProxyInject {
		t.Fatalf("defaults not written out: %+v %+v", w[0].Peer, w[1].Client)
	}
	if w[0].Peer != w[4].Peer {
		t.Error("two entries without settings got two copies of the default settings")
	}
	if w[2].Peer.Proxy != v1alpha1.PeerProxySkip || len(w[2].Peer.Ports) != 1 || w[3].Client.Proxy != v1alpha1.ClientProxySidecar {
		t.Errorf("settings of their own: %+v %+v", w[2].Peer, w[3].Client)
	}
	shared := policy.NewStore()
	shared.SetMeshRolePolicy(p)
	for _, app := range []string{"a", "b", "c", "d", "e"} {
		in := policy.Input{Namespace: "shop", PodLabels: labels.Set{"app": app}}
		a, b := plain.Decide(in), shared.Decide(in)
		if a.Winner == nil || b.Winner == nil {
			t.Fatalf("app %s: no winner", app)
		}
		ea, eb := a.Effect(), b.Effect()
		if !reflect.DeepEqual(a.Winner.Workload, b.Winner.Workload) || !ea.Equal(&eb) {
			t.Errorf("app %s: %v vs %v", app, ea, eb)
		}
	}
}
