package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// testColdNamespaceCache is what GitOps tools and helm install
// --create-namespace do: a labelled namespace, then at once its first pod.
// The webhook's namespace cache has often not seen the namespace yet; the
// pod must still be admitted, with the cluster policy's verdict.
func testColdNamespaceCache(t *testing.T) {
	ctx := scenario(t, 2*time.Minute)
	const selectorLabel = "e2e.meshrole.io/cold"
	peerLabels := map[string]string{"app": "cold-peer"}
	cmrp := &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-cold"},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{selectorLabel: "true"}},
			PolicySpec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
				Name: "peers", Selector: metav1.LabelSelector{MatchLabels: peerLabels}, Role: v1alpha1.RolePeerStateful,
			}}},
		},
	}
	if err := h.Client.Create(ctx, cmrp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Client.Delete(context.Background(), cmrp) })
	createNamespace(t, ctx, "e2e-cold-warm", true, map[string]string{selectorLabel: "true"})
	if _, err := h.WaitForVerdict(ctx, "e2e-cold-warm", peerLabels, 15*time.Second, func(p *corev1.Pod) bool {
		return p.Annotations[policyKey] == "cluster/e2e-cold"
	}); err != nil {
		t.Fatal(err)
	}

	missesBefore := scrapeCounter(t, ctx, `meshrole_namespace_cache_misses_total{result="found"}`)
	// All at once, as a GitOps sync applies a set of namespaces and their
	// workloads: the webhook's namespace informer then trails the pods.
	const n = 20
	var (
		mu      sync.Mutex
		refused []string
		wg      sync.WaitGroup
	)
	admitted := make([]*corev1.Pod, n)
	for i := range n {
		wg.Go(func() {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
				Name:   fmt.Sprintf("e2e-cold-%02d", i),
				Labels: map[string]string{enabledNsLabel: "true", selectorLabel: "true"},
			}}
			err := h.Client.Create(ctx, ns)
			if err == nil {
				pod := newPod(ns.Name, "first", peerLabels, nil)
				if err = h.Client.Create(ctx, pod); err == nil {
					admitted[i] = pod
					return
				}
			}
			mu.Lock()
			defer mu.Unlock()
			refused = append(refused, fmt.Sprintf("%s: %v", ns.Name, err))
		})
	}
	wg.Wait()
	if len(refused) > 0 {
		t.Fatalf("%d of %d first pods refused:\n%s", len(refused), n, strings.Join(refused, "\n"))
	}
	for _, pod := range admitted {
		expectPod(t, pod, peerLabels,
			map[string]string{"sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none"},
			map[string]string{"sidecar.istio.io/inject": "false", roleKey: "peer-stateful", policyKey: "cluster/e2e-cold", workloadKey: "peers"})
	}
	misses := scrapeCounter(t, ctx, `meshrole_namespace_cache_misses_total{result="found"}`) - missesBefore
	t.Logf("%d first pods in new namespaces admitted with the cluster policy's verdict; %d of them found their namespace by a live read (cache miss)", n, int(misses))
	if other := scrapeCounter(t, ctx, `meshrole_namespace_cache_misses_total{result="error"}`); other != 0 {
		t.Errorf("%v live namespace reads failed", other)
	}
}

// testForgedKeys: meshrole.io/* annotations are meshrole's record. A pod
// author cannot plant them in an enabled namespace, and pods in a namespace
// meshrole never sees cannot inflate a policy's status or raise a conflict
// on it.
func testForgedKeys(t *testing.T) {
	ctx := scenario(t, 90*time.Second)
	const ns, off = "e2e-forge", "e2e-forge-off"
	createNamespace(t, ctx, ns, true, nil)
	createNamespace(t, ctx, off, false, nil)
	peerLabels := map[string]string{"app": "eureka-server"}
	mrp := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "eureka", Namespace: ns},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "peers", Selector: metav1.LabelSelector{MatchLabels: peerLabels}, Role: v1alpha1.RolePeerStateful,
		}}},
	}
	if err := h.Client.Create(ctx, mrp); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitForPolicy(ctx, mrp, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	forged := map[string]string{
		roleKey: "peer-stateful", policyKey: ns + "/eureka", workloadKey: "peers",
		conflictKey: "cluster/someone/x=client-stateless", dryRunKey: `{"policy":"cluster/someone"}`,
		"team": "shop",
	}

	// Where meshrole is not enabled it never sees the pod: the forged keys stay.
	outside := newPod(off, "copied-0", peerLabels, forged)
	if err := h.Client.Create(ctx, outside); err != nil {
		t.Fatal(err)
	}
	if outside.Annotations[conflictKey] == "" {
		t.Fatalf("pod in %s changed: %v", off, outside.Annotations)
	}

	// In an enabled namespace an unmatched pod keeps none of them ...
	unmatched := newPod(ns, "batch", map[string]string{"app": "batch"}, forged)
	if err := h.Client.Create(ctx, unmatched); err != nil {
		t.Fatal(err)
	}
	expectPod(t, unmatched, map[string]string{"app": "batch"}, map[string]string{}, map[string]string{"team": "shop"})

	// ... and a matched pod carries exactly its verdict's.
	peer := newPod(ns, "eureka-server-0", peerLabels, forged)
	if err := h.Client.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	expectPod(t, peer, peerLabels,
		map[string]string{"sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none"},
		map[string]string{"sidecar.istio.io/inject": "false", roleKey: "peer-stateful", policyKey: ns + "/eureka", workloadKey: "peers", "team": "shop"})

	// Status counts the one pod the policy reached, and sees no conflict;
	// it stays so after the pod events have been batched.
	settled := func(s *v1alpha1.PolicyStatus) bool {
		c := meta.FindStatusCondition(s.Conditions, "Conflict")
		return matched(s, "peers") == 1 && c != nil && c.Status == metav1.ConditionFalse && s.ObservedGeneration == mrp.Generation
	}
	waitForStatus(t, ctx, mrp, func() *v1alpha1.PolicyStatus { return &mrp.Status }, settled, "peers=1, Conflict False")
	time.Sleep(3 * time.Second)
	if err := h.Client.Get(ctx, client.ObjectKeyFromObject(mrp), mrp); err != nil {
		t.Fatal(err)
	}
	if !settled(&mrp.Status) {
		t.Fatalf("status changed after the pod events settled: peers=%d, conditions %+v", matched(&mrp.Status, "peers"), mrp.Status.Conditions)
	}
	var events corev1.EventList
	if err := h.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.Type == corev1.EventTypeWarning && e.InvolvedObject.Name == mrp.Name {
			t.Errorf("Warning event on %s/%s: %s %s", ns, mrp.Name, e.Reason, e.Message)
		}
	}
}

// scrapeCounter reads one series of the webhook's metrics; 0 when absent.
func scrapeCounter(t *testing.T, ctx context.Context, series string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.Webhook.MetricsURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping the webhook's metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		if value, ok := strings.CutPrefix(lines.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return 0
}
