package policy_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
)

func TestReach(t *testing.T) {
	enabled := labels.Set{"meshrole.io/enabled": "true", "team": "shop"}
	disabled := labels.Set{"team": "shop"}
	shops := metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}
	bad := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Sometimes"}}}
	tests := []struct {
		name      string
		reach     policy.Reach
		namespace string
		labels    labels.Labels
		want      bool
	}{
		{"namespaced: its own enabled namespace", policy.NewReach(policy.Ref{Namespace: "shop", Name: "p"}, nil), "shop", enabled, true},
		{"namespaced: another enabled namespace", policy.NewReach(policy.Ref{Namespace: "shop", Name: "p"}, nil), "other", enabled, false},
		{"namespaced: its own namespace, not enabled", policy.NewReach(policy.Ref{Namespace: "shop", Name: "p"}, nil), "shop", disabled, false},
		{"namespaced: no labels at all", policy.NewReach(policy.Ref{Namespace: "shop", Name: "p"}, nil), "shop", nil, false},
		{"cluster: selected and enabled", policy.NewReach(policy.Ref{Name: "c"}, &shops), "any", enabled, true},
		{"cluster: selected, not enabled", policy.NewReach(policy.Ref{Name: "c"}, &shops), "any", disabled, false},
		{"cluster: enabled, not selected", policy.NewReach(policy.Ref{Name: "c"}, &shops), "any", labels.Set{"meshrole.io/enabled": "true"}, false},
		{"cluster: {} selects every enabled namespace", policy.NewReach(policy.Ref{Name: "c"}, &metav1.LabelSelector{}), "any", labels.Set{"meshrole.io/enabled": "true"}, true},
		{"cluster: an invalid selector reaches nothing", policy.NewReach(policy.Ref{Name: "c"}, &bad), "any", enabled, false},
	}
	for _, tt := range tests {
		if got := tt.reach.Namespace(tt.namespace, tt.labels); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
