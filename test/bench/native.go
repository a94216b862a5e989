package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/native"
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
	plan := store.Plan()
	objs, err := native.Compile(&plan, native.Options{ExcludedNamespaces: []string{"kube-system"}}, native.Coverage{})
	if err != nil {
		return 0, err
	}
	for i := range objs {
		if err := h.Client.Create(ctx, &objs[i].Policy); err != nil {
			return 0, err
		}
		if err := h.Client.Create(ctx, &objs[i].Binding); err != nil {
			return 0, err
		}
	}

	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := h.Client.Get(ctx, client.ObjectKey{Name: harness.WebhookConfigurationName}, &mwc); err != nil {
		return 0, err
	}
	for i := range mwc.Webhooks {
		for j := range mwc.Webhooks[i].NamespaceSelector.MatchExpressions {
			r := &mwc.Webhooks[i].NamespaceSelector.MatchExpressions[j]
			if r.Key == corev1.LabelMetadataName && r.Operator == metav1.LabelSelectorOpNotIn && !slices.Contains(r.Values, nsNative) {
				r.Values = append(r.Values, nsNative)
			}
		}
	}
	if err := h.Client.Update(ctx, &mwc); err != nil {
		return 0, err
	}

	lbls := map[string]string{"app": "eureka-server"}
	verdict := func(p *corev1.Pod) bool { return p.Annotations[policy.PolicyAnnotation] == nsNative+"/p-00000" }
	if _, err := h.WaitForVerdict(ctx, nsNative, lbls, 60*time.Second, verdict); err != nil {
		return 0, fmt.Errorf("native mode's generated policy: %w", err)
	}
	return len(objs), nil
}
