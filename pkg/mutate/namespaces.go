package mutate

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultNamespaceReadTimeout bounds the live read of a namespace the cache
// has not seen: well inside the API server's webhook timeout, so that a slow
// read is answered as an error rather than left to time out.
const DefaultNamespaceReadTimeout = 2 * time.Second

// NamespaceReader reads a namespace's labels from the informer cache, and
// from the API server only when the cache has not seen the namespace yet.
// That happens to the first pod of a namespace created a moment earlier
// (helm install --create-namespace, GitOps tools applying a namespace and
// its workloads in one go): the API server admits the namespace, then the
// pod, before meshrole's watch delivers the namespace. Refusing such a pod,
// or deciding it without its namespace's labels, would be wrong; one live
// read is right, and a warm cache never pays for it.
type NamespaceReader struct {
	Cache client.Reader
	Live  client.Reader
	// Timeout of the live read; DefaultNamespaceReadTimeout when zero.
	Timeout time.Duration
	// Misses, when set, counts the live reads by result.
	Misses NamespaceCacheMisses
}

// NamespaceCacheMisses counts live namespace reads; see metrics.go.
type NamespaceCacheMisses interface {
	NamespaceCacheMiss(result string)
}

// Results of a live namespace read, counted in
// meshrole_namespace_cache_misses_total.
const (
	MissFound    = "found"
	MissNotFound = "not-found"
	MissError    = "error"
)

// Labels returns the labels of a namespace.
func (r *NamespaceReader) Labels(ctx context.Context, namespace string) (map[string]string, error) {
	ns := namespaceMetadata()
	err := r.Cache.Get(ctx, client.ObjectKey{Name: namespace}, ns)
	if err == nil {
		return ns.Labels, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading the namespace cache: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(r.Timeout, DefaultNamespaceReadTimeout))
	defer cancel()
	ns = namespaceMetadata()
	err = r.Live.Get(ctx, client.ObjectKey{Name: namespace}, ns)
	switch {
	case err == nil:
		r.miss(MissFound)
		return ns.Labels, nil
	case apierrors.IsNotFound(err):
		r.miss(MissNotFound)
		return nil, fmt.Errorf("namespace %q does not exist", namespace)
	default:
		r.miss(MissError)
		return nil, fmt.Errorf("namespace %q is not in the cache yet, and reading it from the API server failed: %w", namespace, err)
	}
}

func (r *NamespaceReader) miss(result string) {
	if r.Misses != nil {
		r.Misses.NamespaceCacheMiss(result)
	}
}

func namespaceMetadata() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}
