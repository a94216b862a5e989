package mutate

import (
	"context"
	"fmt"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// watchPolicies keeps store in step with the policies in an informer cache,
// so that admissions never call the API server. The returned function
// reports whether both policy kinds have been listed in full.
func watchPolicies(ctx context.Context, informers cache.Informers, store *policy.Store) (synced func() bool, err error) {
	namespaced, err := watch(ctx, informers, &v1alpha1.MeshRolePolicy{},
		func(p *v1alpha1.MeshRolePolicy) { store.SetMeshRolePolicy(p) },
		func(key toolscache.ObjectName) { store.DeleteMeshRolePolicy(key.Namespace, key.Name) })
	if err != nil {
		return nil, err
	}
	cluster, err := watch(ctx, informers, &v1alpha1.ClusterMeshRolePolicy{},
		func(p *v1alpha1.ClusterMeshRolePolicy) { store.SetClusterMeshRolePolicy(p) },
		func(key toolscache.ObjectName) { store.DeleteClusterMeshRolePolicy(key.Name) })
	if err != nil {
		return nil, err
	}
	return func() bool { return namespaced.HasSynced() && cluster.HasSynced() }, nil
}

func watch[T client.Object](ctx context.Context, informers cache.Informers, obj T, set func(T), del func(toolscache.ObjectName)) (toolscache.ResourceEventHandlerRegistration, error) {
	informer, err := informers.GetInformer(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("watching %T: %w", obj, err)
	}
	return informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if p, ok := o.(T); ok {
				set(p)
			}
		},
		UpdateFunc: func(_, o any) {
			if p, ok := o.(T); ok {
				set(p)
			}
		},
		DeleteFunc: func(o any) {
			// A missed delete arrives as DeletedFinalStateUnknown; its key
			// is all a delete needs.
			if key, err := toolscache.DeletionHandlingObjectToName(o); err == nil {
				del(key)
			}
		},
	})
}
