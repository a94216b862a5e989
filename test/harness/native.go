package harness

import (
	"context"
	"fmt"
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/native"
	"github.com/meshrole/meshrole/pkg/policy"
)

// InstallNative compiles store's policies as native mode does (kube-system
// excluded) and creates the MutatingAdmissionPolicies and bindings, without
// the reconciler: for measurements that want native mode's objects and no
// server beside them. It returns how many policies it created.
func (h *Harness) InstallNative(ctx context.Context, store *policy.Store) (int, error) {
	plan := store.Plan()
	objs, err := native.Compile(&plan, native.Options{ExcludedNamespaces: []string{"kube-system"}}, native.Coverage{})
	if err != nil {
		return 0, fmt.Errorf("compiling the policies for native mode: %w", err)
	}
	for i := range objs {
		if err := h.Client.Create(ctx, &objs[i].Policy); err != nil {
			return 0, err
		}
		if err := h.Client.Create(ctx, &objs[i].Binding); err != nil {
			return 0, err
		}
	}
	return len(objs), nil
}

// ExcludeFromWebhook adds namespace to the NotIn list of meshrole's webhook
// configuration, so that the API server no longer calls the webhook for it.
func (h *Harness) ExcludeFromWebhook(ctx context.Context, namespace string) error {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := h.Client.Get(ctx, client.ObjectKey{Name: WebhookConfigurationName}, &mwc); err != nil {
		return err
	}
	for i := range mwc.Webhooks {
		for j := range mwc.Webhooks[i].NamespaceSelector.MatchExpressions {
			r := &mwc.Webhooks[i].NamespaceSelector.MatchExpressions[j]
			if r.Key == corev1.LabelMetadataName && r.Operator == metav1.LabelSelectorOpNotIn && !slices.Contains(r.Values, namespace) {
				r.Values = append(r.Values, namespace)
			}
		}
	}
	return h.Client.Update(ctx, &mwc)
}
