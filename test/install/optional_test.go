package install_test

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestHelmTemplateOptionalFeatures: the Automatic rollout mode (on by
// default) and the suggest events (off by default) each bring their flag and
// their RBAC rules, and neither is granted when it is off.
func TestHelmTemplateOptionalFeatures(t *testing.T) {
	evictions := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}}
	workloads := rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"statefulsets", "deployments", "daemonsets"}, Verbs: []string{"list", "watch"}}
	services := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services", "configmaps"}, Verbs: []string{"list", "watch"}}
	for _, tc := range []struct {
		name         string
		vals         map[string]any
		wantArgs     []string
		wantNotArgs  []string
		wantRules    []rbacv1.PolicyRule
		wantNotRules []rbacv1.PolicyRule
	}{
		{"defaults: Automatic mode on, suggest events off", nil,
			nil, []string{"--automatic-rollout=false", "--suggest-events"},
			[]rbacv1.PolicyRule{evictions}, []rbacv1.PolicyRule{workloads, services}},
		{"automaticRollout.enabled=false: no eviction", map[string]any{"automaticRollout": map[string]any{"enabled": false}},
			[]string{"--automatic-rollout=false"}, nil,
			nil, []rbacv1.PolicyRule{evictions}},
		{"automaticRollout.timeout", map[string]any{"automaticRollout": map[string]any{"timeout": "10m"}},
			[]string{"--automatic-rollout-timeout=10m"}, []string{"--automatic-rollout=false"},
			[]rbacv1.PolicyRule{evictions}, nil},
		{"suggestEvents.enabled=true: the flag and read access to what suggest reads", map[string]any{"suggestEvents": map[string]any{"enabled": true}},
			[]string{"--suggest-events"}, nil,
			[]rbacv1.PolicyRule{workloads, services}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel, err := renderChart(t, tc.vals)
			if err != nil {
				t.Fatalf("helm template with %v: %v", tc.vals, err)
			}
			objs := manifestObjects(t, rel.Manifest)
			args := typed[appsv1.Deployment](t, find(t, objs, "Deployment", fullname)).Spec.Template.Spec.Containers[0].Args
			for _, a := range tc.wantArgs {
				if !slices.Contains(args, a) {
					t.Errorf("args %q lack %s", args, a)
				}
			}
			for _, a := range tc.wantNotArgs {
				if slices.Contains(args, a) {
					t.Errorf("args %q have %s", args, a)
				}
			}
			rules := typed[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", fullname)).Rules
			has := func(want rbacv1.PolicyRule) bool {
				return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
					return slices.Equal(r.APIGroups, want.APIGroups) && slices.Equal(r.Resources, want.Resources) && slices.Equal(r.Verbs, want.Verbs)
				})
			}
			for _, r := range tc.wantRules {
				if !has(r) {
					t.Errorf("the ClusterRole lacks %v %v %v", r.APIGroups, r.Resources, r.Verbs)
				}
			}
			for _, r := range tc.wantNotRules {
				if has(r) {
					t.Errorf("the ClusterRole grants %v %v %v", r.APIGroups, r.Resources, r.Verbs)
				}
			}
		})
	}
}
