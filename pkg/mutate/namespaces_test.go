package mutate_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/meshrole/meshrole/pkg/mutate"
)

func namespaceClient(t *testing.T, gets *int, namespaces ...*corev1.Namespace) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	objs := make([]client.Object, len(namespaces))
	for i, ns := range namespaces {
		objs[i] = ns
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			*gets++
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
}

func labelledNamespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// TestNamespaceReaderFallsBackOnACacheMiss: a namespace the cache has not
// seen yet is read once from the API server, and counted; a warm cache makes
// no live read at all.
func TestNamespaceReaderFallsBackOnACacheMiss(t *testing.T) {
	enabled := map[string]string{"meshrole.io/enabled": "true", "tier": "apps"}
	var cacheGets, liveGets int
	registry := prometheus.NewRegistry()
	r := &mutate.NamespaceReader{
		Cache:  namespaceClient(t, &cacheGets, labelledNamespace("warm", enabled)),
		Live:   namespaceClient(t, &liveGets, labelledNamespace("warm", enabled), labelledNamespace("new", enabled)),
		Misses: mutate.NewMetrics(registry),
	}
	ctx := context.Background()

	for range 3 {
		got, err := r.Labels(ctx, "warm")
		if err != nil || !maps.Equal(got, enabled) {
			t.Fatalf("warm namespace: %v, %v", got, err)
		}
	}
	if liveGets != 0 {
		t.Fatalf("a warm cache made %d live reads, want 0", liveGets)
	}

	got, err := r.Labels(ctx, "new")
	if err != nil || !maps.Equal(got, enabled) {
		t.Fatalf("namespace missing from the cache: %v, %v; want its labels from the API server", got, err)
	}
	if _, err := r.Labels(ctx, "gone"); err == nil || !strings.Contains(err.Error(), `namespace "gone" does not exist`) {
		t.Fatalf("a namespace that exists nowhere: %v", err)
	}
	if liveGets != 2 || cacheGets != 5 {
		t.Fatalf("live reads %d (want 2), cache reads %d (want 5)", liveGets, cacheGets)
	}
	want := `
# HELP meshrole_namespace_cache_misses_total Admissions whose namespace was not in the informer cache yet, so it was read from the API server once, by result (found, not-found, error). Zero while the cache is warm.
# TYPE meshrole_namespace_cache_misses_total counter
meshrole_namespace_cache_misses_total{result="found"} 1
meshrole_namespace_cache_misses_total{result="not-found"} 1
`
	if err := testutil.GatherAndCompare(registry, strings.NewReader(want), "meshrole_namespace_cache_misses_total"); err != nil {
		t.Fatal(err)
	}
}

// TestNamespaceReaderBoundsTheLiveRead: a live read that hangs is cut off by
// the timeout and answered as an error, well before the API server's own
// webhook timeout.
func TestNamespaceReaderBoundsTheLiveRead(t *testing.T) {
	var gets int
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	hanging := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, _ client.WithWatch, _ client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
			<-ctx.Done()
			return ctx.Err()
		},
	}).Build()
	r := &mutate.NamespaceReader{Cache: namespaceClient(t, &gets), Live: hanging, Timeout: 50 * time.Millisecond}
	start := time.Now()
	_, err := r.Labels(context.Background(), "new")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("after %v: %v, want a deadline error after about 50ms", time.Since(start), err)
	}
}

// TestColdNamespaceCacheAdmitsThePod: the first pod of a namespace the cache
// has not seen yet gets its verdict, not an error (which failurePolicy Fail
// turns into a refused pod).
func TestColdNamespaceCacheAdmitsThePod(t *testing.T) {
	var cacheGets, liveGets int
	reader := &mutate.NamespaceReader{
		Cache: namespaceClient(t, &cacheGets),
		Live:  namespaceClient(t, &liveGets, labelledNamespace("shop", map[string]string{"meshrole.io/enabled": "true"})),
	}
	m := newMutator(t)
	m.NamespaceLabels = reader.Labels
	resp := post(t, m, marshal(t, seedReview(t))).Response
	if !resp.Allowed || len(resp.Patch) == 0 || !strings.Contains(string(resp.Patch), `"meshrole.io/role":"peer-stateful"`) {
		t.Fatalf("allowed=%v result=%v patch=%s: want the peer verdict", resp.Allowed, resp.Result, resp.Patch)
	}
	if liveGets != 1 {
		t.Fatalf("%d live reads, want 1", liveGets)
	}
}
