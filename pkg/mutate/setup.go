package mutate

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshrole/meshrole/pkg/policy"
)

// SetupWithManager wires meshrole into a manager: the policy store fed by
// informers, the pod mutator on Path, the ordering check against Istio's
// injector, metrics and readiness.
func SetupWithManager(ctx context.Context, mgr manager.Manager, webhookConfigurationName string) error {
	store := policy.NewStore()
	policiesSynced, err := watchPolicies(ctx, mgr.GetCache(), store)
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

	admissionMetrics := NewMetrics(metrics.Registry)
	namespaces := &NamespaceReader{Cache: mgr.GetCache(), Live: mgr.GetAPIReader(), Misses: admissionMetrics}
	mutator := &PodMutator{
		Policies:        store,
		NamespaceLabels: namespaces.Labels,
		Ready:           synced,
		Metrics:         admissionMetrics,
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
