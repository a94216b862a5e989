package main

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/test/harness"
)

func TestKyvernoPolicyWritesWhatMeshroleWrites(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	example, err := examplePolicy(root, nsKyverno)
	if err != nil {
		t.Fatal(err)
	}
	effects := kyvernoEffects(example)

	server := effects[eurekaServer]
	wantServerLabels := map[string]string{"sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none"}
	if !maps.Equal(server.Labels, wantServerLabels) {
		t.Errorf("eureka-server labels = %v, want %v", server.Labels, wantServerLabels)
	}
	wantServerAnnotations := map[string]string{
		"sidecar.istio.io/inject":    "false",
		"bench.meshrole.io/role":     "peer-stateful",
		"bench.meshrole.io/policy":   nsKyverno + "/eureka",
		"bench.meshrole.io/workload": "eureka-peers",
	}
	if !maps.Equal(server.Annotations, wantServerAnnotations) {
		t.Errorf("eureka-server annotations = %v, want %v", server.Annotations, wantServerAnnotations)
	}

	cp := clusterPolicy(effects)
	rules, _, err := unstructured.NestedSlice(cp.Object, "spec", "rules")
	if err != nil || len(rules) != 2 {
		t.Fatalf("rules = %v (%v), want 2", rules, err)
	}
	patches := map[string]map[string]any{}
	for _, r := range rules {
		rule := r.(map[string]any)
		meta, _, err := unstructured.NestedMap(rule, "mutate", "patchStrategicMerge", "metadata")
		if err != nil {
			t.Fatal(err)
		}
		patches[rule["name"].(string)] = meta
	}
	if got := patches[eurekaServer]; !maps.Equal(stringMap(t, got["labels"]), wantServerLabels) || !maps.Equal(stringMap(t, got["annotations"]), wantServerAnnotations) {
		t.Errorf("eureka-server rule patches %v, want labels %v and annotations %v", got, wantServerLabels, wantServerAnnotations)
	}
	client := stringMap(t, patches[eurekaClient]["annotations"])
	if client[policy.IstioExcludeOutboundPorts] != "8761" || client["bench.meshrole.io/role"] != "client-stateless" {
		t.Errorf("eureka-client rule annotations = %v, want %s=8761 and the client-stateless record", client, policy.IstioExcludeOutboundPorts)
	}
}

func stringMap(t *testing.T, v any) map[string]string {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v is not a map", v)
	}
	out := map[string]string{}
	for k, x := range m {
		out[k] = x.(string)
	}
	return out
}

func TestCarries(t *testing.T) {
	e := policy.Effect{
		Labels:      map[string]string{"sidecar.istio.io/inject": "false"},
		Annotations: map[string]string{"bench.meshrole.io/role": "peer-stateful"},
		Ports:       map[string][]int32{policy.IstioExcludeOutboundPorts: {8761, 8762}},
	}
	pod := func(lbls, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: lbls, Annotations: ann}}
	}
	all := map[string]string{"bench.meshrole.io/role": "peer-stateful", policy.IstioExcludeOutboundPorts: "8761,8762", "other": "x"}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		e    policy.Effect
		want bool
	}{
		{"every key", pod(map[string]string{"sidecar.istio.io/inject": "false", "app": "a"}, all), e, true},
		{"label has another value", pod(map[string]string{"sidecar.istio.io/inject": "true"}, all), e, false},
		{"annotation missing", pod(map[string]string{"sidecar.istio.io/inject": "false"}, map[string]string{policy.IstioExcludeOutboundPorts: "8761,8762"}), e, false},
		{"port list differs", pod(map[string]string{"sidecar.istio.io/inject": "false"}, map[string]string{"bench.meshrole.io/role": "peer-stateful", policy.IstioExcludeOutboundPorts: "8761"}), e, false},
		{"nothing to carry", pod(nil, nil), policy.Effect{}, false},
	} {
		if got := carries(tc.pod, &tc.e); got != tc.want {
			t.Errorf("%s: carries = %v, want %v", tc.name, got, tc.want)
		}
	}
}
