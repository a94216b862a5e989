package policy_test

import (
	"fmt"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
)

// winnerOf decides for a pod labelled app=x in namespace ns.
func winnerOf(s *policy.Store, ns string, nsLabels labels.Set) string {
	return summarize(s.Decide(policy.Input{Namespace: ns, NamespaceLabels: nsLabels, PodLabels: labels.Set{"app": "x"}})).winner
}

// The Store resolves cluster policies per namespace once and keeps the
// answer: every change that can change the answer must be seen by the next
// decision.
func TestClusterResolutionFollowsChanges(t *testing.T) {
	s := policy.NewStore()
	team := labels.Set{"team": "shop"}
	s.SetClusterMeshRolePolicy(cmrp("shop", 0, "", sel("team", "shop"), client("c", sel("app", "x"))))
	if got := winnerOf(s, "a", team); got != "cluster/shop/c" {
		t.Fatalf("winner %q, want cluster/shop/c", got)
	}

	// A namespace's labels change: the answer kept for it no longer holds.
	if got := winnerOf(s, "a", labels.Set{"team": "other"}); got != "" {
		t.Errorf("after the namespace's labels changed: winner %q, want none", got)
	}
	if got := winnerOf(s, "a", team); got != "cluster/shop/c" {
		t.Errorf("after the labels changed back: winner %q, want cluster/shop/c", got)
	}

	// A cluster policy is added, changed and deleted.
	s.SetClusterMeshRolePolicy(cmrp("high", 5, "", sel("team", "shop"), peer("p", sel("app", "x"))))
	if got := winnerOf(s, "a", team); got != "cluster/high/p" {
		t.Errorf("after adding a higher cluster policy: winner %q, want cluster/high/p", got)
	}
	s.SetClusterMeshRolePolicy(cmrp("high", 5, "", sel("team", "nobody"), peer("p", sel("app", "x"))))
	if got := winnerOf(s, "a", team); got != "cluster/shop/c" {
		t.Errorf("after the higher policy stopped selecting the namespace: winner %q, want cluster/shop/c", got)
	}
	s.DeleteClusterMeshRolePolicy("shop")
	if got := winnerOf(s, "a", team); got != "" {
		t.Errorf("after deleting the policy: winner %q, want none", got)
	}

	// The caller's label map is not kept: changing it after a decision
	// must not change the answer kept for the namespace.
	s.SetClusterMeshRolePolicy(cmrp("shop", 0, "", sel("team", "shop"), client("c", sel("app", "x"))))
	mine := labels.Set{"team": "shop"}
	if got := winnerOf(s, "b", mine); got != "cluster/shop/c" {
		t.Fatalf("winner %q, want cluster/shop/c", got)
	}
	mine["team"] = "other"
	if got := winnerOf(s, "b", labels.Set{"team": "other"}); got != "" {
		t.Errorf("after the caller changed its map, namespace labels team=other: winner %q, want none", got)
	}
}

// Namespaces with the same labels get the same answer, and a namespace
// with other labels its own, however many namespaces are resolved (past the
// resolver's bound, it starts over).
func TestClusterResolutionManyNamespaces(t *testing.T) {
	s := policy.NewStore()
	s.SetClusterMeshRolePolicy(cmrp("even", 0, "", sel("parity", "even"), client("c", sel("app", "x"))))
	s.SetClusterMeshRolePolicy(cmrp("odd", 0, "", sel("parity", "odd"), peer("p", sel("app", "x"))))
	for round := range 2 {
		for i := range 12_000 {
			parity, want := "even", "cluster/even/c"
			if i%2 == 1 {
				parity, want = "odd", "cluster/odd/p"
			}
			if got := winnerOf(s, fmt.Sprintf("ns-%d", i), labels.Set{"parity": parity}); got != want {
				t.Fatalf("round %d, namespace %d: winner %q, want %q", round, i, got, want)
			}
		}
	}
}

// Labels that are not a labels.Set cannot be keyed; they are decided all
// the same.
func TestClusterResolutionOtherLabels(t *testing.T) {
	s := policy.NewStore()
	s.SetClusterMeshRolePolicy(cmrp("shop", 0, "", sel("team", "shop"), client("c", sel("app", "x"))))
	d := s.Decide(policy.Input{Namespace: "a", NamespaceLabels: onlyLabels{"team": "shop"}, PodLabels: labels.Set{"app": "x"}})
	if got := summarize(d).winner; got != "cluster/shop/c" {
		t.Errorf("winner %q, want cluster/shop/c", got)
	}
	d = s.Decide(policy.Input{Namespace: "a", NamespaceLabels: onlyLabels{"team": "other"}, PodLabels: labels.Set{"app": "x"}})
	if got := summarize(d).winner; got != "" {
		t.Errorf("winner %q, want none", got)
	}
}

// onlyLabels is a labels.Labels that is not a labels.Set.
type onlyLabels map[string]string

func (l onlyLabels) Has(k string) bool   { _, ok := l[k]; return ok }
func (l onlyLabels) Get(k string) string { return l[k] }
func (l onlyLabels) Lookup(k string) (string, bool) {
	v, ok := l[k]
	return v, ok
}

// Decide runs concurrently with informer handlers changing cluster
// policies and with namespaces changing labels (go test -race). Policy
// "base" never changes, so every decision must see it match; "flip" comes
// and goes.
func TestClusterResolutionConcurrent(t *testing.T) {
	s := policy.NewStore()
	s.SetClusterMeshRolePolicy(cmrp("base", 0, "", metav1.LabelSelector{}, client("c", sel("app", "x"))))
	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				s.SetClusterMeshRolePolicy(cmrp("flip", 1, "", sel("team", "shop"), peer("p", sel("app", "x"))))
			} else {
				s.DeleteClusterMeshRolePolicy("flip")
			}
		}
	})
	var deciders sync.WaitGroup
	errs := make(chan string, 4)
	for w := range 4 {
		deciders.Go(func() {
			for i := range 2000 {
				team := "shop"
				if (i+w)%3 == 0 {
					team = "other"
				}
				d := s.Decide(policy.Input{Namespace: fmt.Sprintf("ns-%d", i%7), NamespaceLabels: labels.Set{"team": team}, PodLabels: labels.Set{"app": "x"}})
				v := summarize(d)
				ok := v.winner == "cluster/base/c" && v.matches == 1 ||
					team == "shop" && v.winner == "cluster/flip/p" && v.matches == 2
				if !ok {
					errs <- fmt.Sprintf("team %s: %+v", team, v)
					return
				}
			}
		})
	}
	deciders.Wait()
	close(stop)
	writer.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
