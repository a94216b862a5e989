package mutate

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshrole/meshrole/pkg/policy"
)

// SetupWithManager wires meshrole into a manager: the policy store fed by
// informers, the pod mutator on Path, the ordering check against Istio's
// injector, metrics and readiness.
func SetupWithManager(ctx context.Context, mgr manager.Manager, webhookConfigurationName string) error {
	store := policy.NewStore()
	policiesSynced, err := policy.Watch(ctx, mgr.GetCache(), store)
	if err != nil {
		return err
	}
	// Only namespace labels are needed, so cache metadata, not whole objects.
	nsInformer, err := mgr.GetCache().GetInformer(ctx, namespaceMetadata())
	if err != nil {
		return fmt.Errorf("watching namespaces: %w", err)
	}
	synced := func() bool { return policiesSynced() && nsInformer.HasSynced() }

	ordering := NewOrderingCheck(mgr.GetCache(), mgr.GetEventRecorder("meshrole"), webhookConfigurationName, metrics.Registry)
	if err := mgr.Add(ordering); err != nil {
		return err
	}

	mutator := &PodMutator{
		Policies:        store,
		NamespaceLabels: cachedNamespaceLabels(mgr.GetCache()),
		Ready:           synced,
		Metrics:         NewMetrics(metrics.Registry),
	}
	mgr.GetWebhookServer().Register(Path, mutator)

	if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook-serving", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("policy-cache", func(*http.Request) error {
		if !synced() {
			return errors.New("policy and namespace caches have not synced")
		}
		return nil
	})
}

func namespaceMetadata() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

func cachedNamespaceLabels(reader client.Reader) NamespaceLabels {
	return func(ctx context.Context, namespace string) (map[string]string, error) {
		ns := namespaceMetadata()
		if err := reader.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
			return nil, err
		}
		return ns.Labels, nil
	}
}
