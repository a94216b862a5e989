package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// benchPolicy is policy i of a namespace, shaped like pkg/mutate's
// BenchmarkDecidePolicyCount: a peer entry for app-<i> and a client entry.
// Policy 0 of the throughput namespace matches TypicalReview's pod
// (app=eureka-server), so every admission there is patched.
func benchPolicy(namespace string, i int, matchEureka bool) *v1alpha1.MeshRolePolicy {
	app := fmt.Sprintf("app-%d", i)
	if matchEureka {
		app = "eureka-server"
	}
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fmt.Sprintf("p-%05d", i)},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{
			{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
			{Name: "clients", Role: v1alpha1.RoleClientStateless, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("web-%d", i)}}},
		}},
	}
}

// createThroughputPolicies puts n policies in the meshrole namespace, the
// first matching TypicalReview's pod, and waits until the webhook enforces
// each.
func createThroughputPolicies(ctx context.Context, h *harness.Harness, n int) error {
	for i := range n {
		p := benchPolicy(nsMeshrole, i, i == 0)
		if err := h.Client.Create(ctx, p); err != nil {
			return fmt.Errorf("creating policy %s/%s: %w", p.Namespace, p.Name, err)
		}
		if err := h.WaitForPolicy(ctx, p, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// memoryResult is the webhook's memory before and after loading many
// policies.
type memoryResult struct {
	Namespaces, Policies int
	Pods                 int   // in the cluster: the webhook caches their metadata
	RSSBefore            int64 // a fresh webhook with the throughput policies
	RSSCached            int64 // right after the last policy is enforced
	RSSSettled           int64 // settle after the status controllers caught up
	PeakRSS              int64 // VmHWM of the fresh webhook
	HeapSettled          goHeap
	RSSColdStart         int64 // a webhook started with every policy present, settle after it caught up
	HeapColdStart        goHeap
	// The live heap the webhook's last collection found (GODEBUG=gctrace=1),
	// right after the readings above; a forced collection with -webhook-pprof.
	GCBefore, GCSettled, GCColdStart lastGC
	// HeapProfiles are the heap profiles saved with -webhook-pprof.
	HeapProfiles []string
	Settle       time.Duration
	CreateTime   time.Duration // creating namespaces and policies
	CacheLag     time.Duration // from the last create until enforced
	StatusLag    time.Duration // from enforced until every policy's status is written
}

// measureMemory restarts the webhook (so that the load phases' garbage does
// not count), creates policies across namespaces with a few concurrent
// creators, waits until the webhook has cached them all, and reads the
// webhook's resident set; then again once the status controllers have
// written every new policy's status (each write puts a new version of the
// policy, now with its status, in the cache: the steady state); then
// restarts it once more to see what a webhook that starts with all those
// policies holds.
func measureMemory(ctx context.Context, h *harness.Harness, namespaces, policies, creators int, settle time.Duration,
	prof *webhookProfiler, progress func(string, ...any)) (*memoryResult, error) {
	res := &memoryResult{Namespaces: namespaces, Policies: policies, Settle: settle}
	defer withGCTrace()()
	var logStart int64 // where the running webhook's lines begin in its log
	// liveHeap reads the live heap once the resident set has been read:
	// forcing a collection first would change what VmRSS shows.
	liveHeap := func(name string) (lastGC, error) {
		previous, err := readLastGC(h.Webhook.LogPath(), logStart)
		if err != nil {
			return lastGC{}, err
		}
		file, err := prof.heap(ctx, h.Webhook.MetricsURL(), name)
		if err != nil || file == "" {
			return readLastGC(h.Webhook.LogPath(), logStart)
		}
		res.HeapProfiles = append(res.HeapProfiles, file)
		// The runtime writes the forced collection's trace line when it
		// finishes, which on a busy machine can be a while after the
		// profile was served.
		for range 50 {
			g, err := readLastGC(h.Webhook.LogPath(), logStart)
			if err != nil || g.Forced && g.Number > previous.Number {
				return g, err
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return lastGC{}, err
			}
		}
		return readLastGC(h.Webhook.LogPath(), logStart)
	}
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := h.Client.List(ctx, pods); err != nil {
		return nil, err
	}
	res.Pods = len(pods.Items)
	logStart = logSize(h.Webhook.LogPath())
	pid, err := restartWebhook(ctx, h)
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, settle); err != nil {
		return nil, err
	}
	if res.RSSBefore, err = loadgen.ProcessRSS(pid); err != nil {
		return nil, err
	}
	if res.GCBefore, err = liveHeap("heap-before.pb.gz"); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(h.Config)
	cfg.QPS = -1
	c, err := client.New(cfg, client.Options{Scheme: h.Scheme})
	if err != nil {
		return nil, err
	}

	start := time.Now()
	nsName := func(i int) string { return fmt.Sprintf("bench-mem-%04d", i) }
	if err := parallel(ctx, creators, namespaces, func(i int) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i), Labels: map[string]string{policy.EnabledNamespaceLabel: "true"}}}
		if err := c.Create(ctx, ns); err != nil && !isAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", ns.Name, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	progress("%d namespaces created in %.1fs; creating %d policies with %d creators", namespaces, time.Since(start).Seconds(), policies, creators)
	var done atomic.Int64
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				progress("  %d/%d policies created (%.0f/s)", done.Load(), policies, float64(done.Load())/time.Since(start).Seconds())
			}
		}
	}()
	err = parallel(ctx, creators, policies, func(i int) error {
		p := benchPolicy(nsName(i%namespaces), i, false)
		if err := c.Create(ctx, p); err != nil && !isAlreadyExists(err) {
			return fmt.Errorf("creating policy %s/%s: %w", p.Namespace, p.Name, err)
		}
		done.Add(1)
		return nil
	})
	close(stopProgress)
	if err != nil {
		return nil, err
	}
	created := time.Now()
	res.CreateTime = created.Sub(start)

	// The webhook's informer delivers policies in the order the API server
	// stored them: once a policy created after all others is enforced, every
	// one of them is in the webhook's store.
	sentinel := benchPolicy(nsName(0), policies, false)
	sentinel.Name = "sentinel"
	if err := c.Create(ctx, sentinel); err != nil {
		return nil, err
	}
	if err := h.WaitForPolicy(ctx, sentinel, 5*time.Minute); err != nil {
		return nil, err
	}
	res.CacheLag = time.Since(created)
	if res.RSSCached, err = loadgen.ProcessRSS(pid); err != nil {
		return nil, err
	}
	enforced := time.Now()
	if err := waitForStatus(ctx, h.Webhook.MetricsURL(), 10*time.Minute); err != nil {
		return nil, err
	}
	res.StatusLag = time.Since(enforced)
	progress("status of every policy written %.1fs after the last was enforced", res.StatusLag.Seconds())
	if err := sleep(ctx, settle); err != nil {
		return nil, err
	}
	if res.RSSSettled, err = loadgen.ProcessRSS(pid); err != nil {
		return nil, err
	}
	if res.PeakRSS, err = loadgen.ProcessPeakRSS(pid); err != nil {
		return nil, err
	}
	if res.HeapSettled, err = readGoHeap(ctx, h.Webhook.MetricsURL()); err != nil {
		return nil, err
	}
	if res.GCSettled, err = liveHeap("heap-settled.pb.gz"); err != nil {
		return nil, err
	}

	progress("restarting the webhook with %d policies present", policies+1)
	logStart = logSize(h.Webhook.LogPath())
	if pid, err = restartWebhook(ctx, h); err != nil {
		return nil, err
	}
	if err := h.WaitForPolicy(ctx, sentinel, time.Minute); err != nil {
		return nil, err
	}
	if err := waitForStatus(ctx, h.Webhook.MetricsURL(), 10*time.Minute); err != nil {
		return nil, err
	}
	if err := sleep(ctx, settle); err != nil {
		return nil, err
	}
	if res.RSSColdStart, err = loadgen.ProcessRSS(pid); err != nil {
		return nil, err
	}
	if res.HeapColdStart, err = readGoHeap(ctx, h.Webhook.MetricsURL()); err != nil {
		return nil, err
	}
	if res.GCColdStart, err = liveHeap("heap-restarted.pb.gz"); err != nil {
		return nil, err
	}
	return res, nil
}

// restartWebhook stops and starts the harness's webhook (same ports, same
// configuration) and returns the new process's pid once it is ready.
func restartWebhook(ctx context.Context, h *harness.Harness) (int, error) {
	if err := h.Webhook.Stop(); err != nil {
		return 0, err
	}
	if err := h.Webhook.Start(ctx); err != nil {
		return 0, err
	}
	if err := h.WaitForWebhook(ctx); err != nil {
		return 0, err
	}
	return webhookPID(h.Webhook.Port)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// waitForStatus returns once the work queues of the status controllers
// (controller-runtime's workqueue_depth, every priority) have been empty
// on two reads a second apart: every policy's status is written.
func waitForStatus(ctx context.Context, metricsURL string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	empty := 0
	for {
		body, err := readMetrics(ctx, metricsURL)
		if err != nil {
			return err
		}
		depth, found, err := statusQueueDepth(body)
		if err != nil {
			return fmt.Errorf("%s: %w", metricsURL, err)
		}
		// The status controllers' queues show up once they start, which
		// after a restart can be after the webhook is ready.
		if found && depth == 0 {
			empty++
		} else {
			empty = 0
		}
		if empty == 2 {
			return nil
		}
		if time.Now().After(deadline) {
			if !found {
				return fmt.Errorf("%s: no workqueue_depth of the status controllers after %v", metricsURL, timeout)
			}
			return fmt.Errorf("the status controllers still had %.0f policies queued after %v", depth, timeout)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// statusQueueDepth sums workqueue_depth over the queues of the status
// controllers (named *-status).
func statusQueueDepth(metrics string) (depth float64, found bool, err error) {
	for _, line := range strings.Split(metrics, "\n") {
		rest, ok := strings.CutPrefix(line, "workqueue_depth{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, `-status"`) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, false, fmt.Errorf("%q: %w", line, err)
		}
		depth += v
		found = true
	}
	return depth, found, nil
}

func readMetrics(ctx context.Context, metricsURL string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d", metricsURL, resp.StatusCode)
	}
	return string(body), nil
}

// goHeap is what the Go runtime of the webhook reports on its metrics
// endpoint (client_golang's Go collector).
type goHeap struct {
	HeapInuse, HeapIdle, HeapReleased, NextGC, Sys float64
}

func readGoHeap(ctx context.Context, metricsURL string) (goHeap, error) {
	body, err := readMetrics(ctx, metricsURL)
	if err != nil {
		return goHeap{}, err
	}
	var g goHeap
	fields := map[string]*float64{
		"go_memstats_heap_inuse_bytes":    &g.HeapInuse,
		"go_memstats_heap_idle_bytes":     &g.HeapIdle,
		"go_memstats_heap_released_bytes": &g.HeapReleased,
		"go_memstats_next_gc_bytes":       &g.NextGC,
		"go_memstats_sys_bytes":           &g.Sys,
	}
	found := 0
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if dst := fields[name]; ok && dst != nil {
			if *dst, err = strconv.ParseFloat(strings.TrimSpace(value), 64); err != nil {
				return goHeap{}, fmt.Errorf("%s: %q: %w", metricsURL, line, err)
			}
			found++
		}
	}
	if found != len(fields) {
		return goHeap{}, fmt.Errorf("%s: %d of %d Go memory metrics found", metricsURL, found, len(fields))
	}
	return g, nil
}

// parallel calls fn(0..n-1) from workers goroutines; the first error stops
// it.
func parallel(ctx context.Context, workers, n int, fn func(int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
