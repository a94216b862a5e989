package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/test/harness"
)

// Native mode in the same API server as the other variants: meshrole's own
// compiler turns the throughput namespace's policies, as if they were in
// nsNative, into the MutatingAdmissionPolicies native mode would keep, next
// to those of otherNamespaces more namespaces (bindings the API server
// checks on every pod create). meshrole's webhook configuration leaves
// nsNative out, so its pods go through no webhook at all.
const (
	variantNative = "native"
	nsNative      = "bench-native"
)

// installNative creates the generated objects and waits until the API
// server applies them.
func installNative(ctx context.Context, h *harness.Harness, policies, otherNamespaces int) (objects int, err error) {
	store := policy.NewStore()
	for i := range policies {
		store.SetMeshRolePolicy(benchPolicy(nsNative, i, i == 0))
	}
	for n := range otherNamespaces {
		store.SetMeshRolePolicy(benchPolicy(fmt.Sprintf("bench-other-%04d", n), 0, false))
	}
	objects, err = h.InstallNative(ctx, store)
	if err != nil {
		return 0, err
	}
	if err := h.ExcludeFromWebhook(ctx, nsNative); err != nil {
		return 0, err
	}

	lbls := map[string]string{"app": "eureka-server"}
	verdict := func(p *corev1.Pod) bool { return p.Annotations[policy.PolicyAnnotation] == nsNative+"/p-00000" }
	if _, err := h.WaitForVerdict(ctx, nsNative, lbls, 60*time.Second, verdict); err != nil {
		return 0, fmt.Errorf("native mode's generated policy: %w", err)
	}
	return objects, nil
}

// The floor of native mode: a MutatingAdmissionPolicy with no decision at
// all, a constant JSON patch writing the keys meshrole's generated policy
// writes for the measured pod (meshrole.io/ keys under bench.meshrole.io/,
// as for the do-nothing webhook). What native mode costs beyond it is
// meshrole's CEL; the rest is the API server applying a mutation.
const (
	variantNativeFloor = "native-floor"
	nsNativeFloor      = "bench-native-floor"
	nativeFloorName    = "meshrole-bench-native-floor"
)

func installNativeFloor(ctx context.Context, h *harness.Harness) error {
	m := benchPolicy(nsMeshrole, 0, true)
	store := policy.NewStore()
	store.SetMeshRolePolicy(m)
	d := store.Decide(policy.Input{Namespace: nsMeshrole, PodLabels: labels.Set{"app": "eureka-server"}})
	effect := d.Effect()
	ops := []string{
		"(has(object.metadata.labels) ? [] : [JSONPatch{op: 'add', path: '/metadata/labels', value: {}}])",
		"(has(object.metadata.annotations) ? [] : [JSONPatch{op: 'add', path: '/metadata/annotations', value: {}}])",
	}
	add := func(field string, kv map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(kv)) {
			key := k
			if strings.HasPrefix(key, "meshrole.io/") {
				key = "bench." + key
			}
			ops = append(ops, fmt.Sprintf("[JSONPatch{op: 'add', path: %q, value: %q}]", "/metadata/"+field+"/"+policy.KeyPointerToken(key), kv[k]))
		}
	}
	add("labels", effect.Labels)
	add("annotations", effect.Annotations)
	fail := admissionregistrationv1.Fail
	mapObj := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: nativeFloorName},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				},
			}}},
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: strings.Join(ops, " + ")},
			}},
			FailurePolicy:      &fail,
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	binding := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: nativeFloorName},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: nativeFloorName,
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: nsNativeFloor}}},
		},
	}
	if err := h.Client.Create(ctx, mapObj); err != nil {
		return err
	}
	if err := h.Client.Create(ctx, binding); err != nil {
		return err
	}
	verdict := func(p *corev1.Pod) bool {
		return p.Annotations["bench."+policy.PolicyAnnotation] == nsMeshrole+"/p-00000"
	}
	if _, err := h.WaitForVerdict(ctx, nsNativeFloor, map[string]string{"app": "eureka-server"}, 60*time.Second, verdict); err != nil {
		return fmt.Errorf("the native floor policy: %w", err)
	}
	return nil
}
