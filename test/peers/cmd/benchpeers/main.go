// Command benchpeers is `make bench-peers`: meshrole next to its peer,
// Kyverno, in one run on one kube-apiserver. The same pod (test/load's
// typical eureka-server pod) is created the same number of times by the same
// number of concurrent creators in four namespaces, one per variant:
//
//   - no webhook;
//   - meshrole, webhook mode: the harness's webhook, with the eureka example
//     policy (examples/eureka/policy.yaml);
//   - meshrole, native mode: the MutatingAdmissionPolicies native mode keeps
//     for that policy, compiled by pkg/native, and no webhook;
//   - Kyverno (bin/peers/kyverno, built by test/peers/kyverno/build.sh), out
//     of cluster, with a ClusterPolicy writing the same keys by
//     patchStrategicMerge.
//
// Variants take turns in rounds, in a rotating order, so that drift in the
// machine's load hits each alike. It prints each variant's pod-create
// p50/p99 and creates/s, with ratios to no webhook and to meshrole's webhook
// mode. It fails when a create fails (an admission failed) or when a
// variant's stored pods do not all carry its keys (or, for no webhook, when
// any does).
//
//	make bench-peers
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

type config struct {
	pods, warmup, creators, rounds int
	kyverno, kyvernoCRDs           string
	keep, skipKyverno              bool
}

func main() {
	var c config
	flag.IntVar(&c.pods, "pods", 300, "Measured pod creates per variant.")
	flag.IntVar(&c.warmup, "warmup", 24, "Unmeasured pod creates per variant first.")
	flag.IntVar(&c.creators, "creators", 8, "Concurrent creators.")
	flag.IntVar(&c.rounds, "rounds", 3, "Each variant's creates are split into this many turns; the order of the variants rotates each round.")
	flag.StringVar(&c.kyverno, "kyverno", "", "Kyverno's admission controller binary (default <repo>/bin/peers/kyverno).")
	flag.StringVar(&c.kyvernoCRDs, "kyverno-crds", "", "Kyverno's CRDs (default <repo>/bin/peers/kyverno-crds).")
	flag.BoolVar(&c.skipKyverno, "skip-kyverno", false, "Leave Kyverno out (its row is then missing): to check the rest without building it.")
	flag.BoolVar(&c.keep, "keep", false, "Keep the work directory (logs of the API server's webhooks and Kyverno) after the run.")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "bench-peers failed: %v\n", err)
		os.Exit(1)
	}
}

var start = time.Now()

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-peers [%5.1fs]: %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func run(c config) (err error) {
	if c.pods <= 0 || c.creators <= 0 || c.rounds <= 0 || c.warmup < 0 {
		return errors.New("-pods, -creators and -rounds must be positive, -warmup not negative")
	}
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	if c.kyverno == "" {
		c.kyverno = filepath.Join(root, "bin", "peers", "kyverno")
	}
	if c.kyvernoCRDs == "" {
		c.kyvernoCRDs = filepath.Join(root, "bin", "peers", "kyverno-crds")
	}

	progress("starting kube-apiserver, etcd, kube-controller-manager and meshrole's webhook (load average %s)", loadgen.LoadAverage())
	h, err := harness.Start(ctx, harness.Options{Root: root, Progress: func(s string) { progress("  %s", s) }})
	if err != nil {
		return err
	}
	var kyverno *kyvernoPeer
	defer func() {
		if stopErr := kyverno.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stopping kyverno: %w", stopErr))
		}
		if err != nil || c.keep {
			h.KeepWorkDir = true
			fmt.Fprintf(os.Stderr, "%slogs kept in %s\n", h.Diagnostics(20), h.WorkDir)
		}
		if stopErr := h.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()

	progress("the eureka policy in webhook mode and native mode")
	webhook, nativeMode, err := setUpMeshrole(ctx, h)
	if err != nil {
		return err
	}
	variants := []variant{{name: variantNone, namespace: nsNone}, webhook, nativeMode}
	if !c.skipKyverno {
		progress("starting Kyverno %s out of cluster with the equivalent ClusterPolicy", kyvernoVersion)
		var kv variant
		if kyverno, kv, err = startKyverno(ctx, h, c.kyverno, c.kyvernoCRDs); err != nil {
			return err
		}
		variants = append(variants, kv)
	}

	load := loadgen.LoadAverage()
	progress("pod creates: %d variants × (%d + %d warm-up), %d creators, %d rounds (load average %s)", len(variants), c.pods, c.warmup, c.creators, c.rounds, load)
	results, err := measure(ctx, h, c, variants)
	if err != nil {
		return err
	}
	for i := range results {
		if err := verify(ctx, h, &results[i]); err != nil {
			return err
		}
	}
	if err := printTable(c, results, load, loadgen.LoadAverage()); err != nil {
		return err
	}
	if kyverno != nil {
		fmt.Printf("\nKyverno's pod webhooks (%s), as it registered them:\n", kyvernoResourceWebhooks)
		for _, w := range kyverno.webhooks {
			fmt.Printf("  %s\n", w)
		}
	}
	return nil
}

// result is one variant's creates.
type result struct {
	variant
	latencies []time.Duration // measured creates, sorted
	busy      time.Duration   // wall time of its measured turns
	created   int             // every create, warm-up included
	mutated   int             // stored pods carrying the variant's keys
}

func (r *result) p(q float64) time.Duration { return loadgen.Percentile(r.latencies, q) }

func (r *result) perSecond() float64 {
	if r.busy <= 0 {
		return 0
	}
	return float64(len(r.latencies)) / r.busy.Seconds()
}

// measure creates each variant's pods: its warm-up turn first (all variants,
// in order), then rounds turns per variant, each turn c.creators creators
// sharing that turn's creates, the order of the variants rotating by one each
// round. Any failed create ends the run.
func measure(ctx context.Context, h *harness.Harness, c config, variants []variant) ([]result, error) {
	cs, err := h.PodCreatorClient()
	if err != nil {
		return nil, err
	}
	template, err := loadgen.TypicalPod("")
	if err != nil {
		return nil, err
	}
	if template.Labels["app"] != eurekaServer {
		return nil, fmt.Errorf("test/load's typical pod is labelled app=%q, not %s", template.Labels["app"], eurekaServer)
	}

	results := make([]result, len(variants))
	for i, v := range variants {
		results[i].variant = v
	}
	turn := func(r *result, n int, measured bool) error {
		lat, took, err := createPods(ctx, cs, template, r, n, c.creators)
		if err != nil {
			return err
		}
		if measured {
			r.latencies = append(r.latencies, lat...)
			r.busy += took
		}
		return nil
	}
	for i := range results {
		if err := turn(&results[i], c.warmup, false); err != nil {
			return nil, err
		}
	}
	for round := range c.rounds {
		// This round's share of the creates: the remainder goes to the first rounds.
		n := c.pods / c.rounds
		if round < c.pods%c.rounds {
			n++
		}
		for k := range results {
			r := &results[(round+k)%len(results)]
			if err := turn(r, n, true); err != nil {
				return nil, err
			}
		}
	}
	for i := range results {
		slices.Sort(results[i].latencies)
	}
	return results, nil
}

// createPods creates n pods of template in r's namespace with creators
// concurrent clients, timing each create, and returns their latencies and
// the wall time of the whole turn.
func createPods(ctx context.Context, cs kubernetes.Interface, template *corev1.Pod, r *result, n, creators int) ([]time.Duration, time.Duration, error) {
	first := r.created
	r.created += n
	next := make(chan int, n)
	for i := range n {
		next <- first + i
	}
	close(next)
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	began := time.Now()
	for range min(creators, n) {
		wg.Go(func() {
			for i := range next {
				pod := template.DeepCopy()
				pod.Namespace = r.namespace
				pod.Name = fmt.Sprintf("%s-%05d", eurekaServer, i)
				t0 := time.Now()
				_, err := cs.CoreV1().Pods(r.namespace).Create(ctx, pod, metav1.CreateOptions{})
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: creating pod %s/%s: %w", r.name, r.namespace, pod.Name, err))
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	if len(errs) > 0 {
		return nil, 0, fmt.Errorf("%d of %d creates failed (an admission failed?); first: %w", len(errs), n, errs[0])
	}
	return lat, took, nil
}

// verify counts the variant's stored pods that carry its keys: all of them
// must, or, for no webhook, none.
func verify(ctx context.Context, h *harness.Harness, r *result) error {
	var pods corev1.PodList
	if err := h.Client.List(ctx, &pods, client.InNamespace(r.namespace)); err != nil {
		return err
	}
	total := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if !strings.HasPrefix(p.Name, eurekaServer+"-") {
			continue
		}
		total++
		if carries(p, &r.want) {
			r.mutated++
		}
	}
	if total != r.created {
		return fmt.Errorf("%s: %d pods stored in %s, %d created", r.name, total, r.namespace, r.created)
	}
	if r.name == variantNone {
		// carries is false for an empty effect: check that nothing wrote the
		// webhook variant's Istio label instead.
		for i := range pods.Items {
			if pods.Items[i].Labels["sidecar.istio.io/inject"] == "false" {
				return fmt.Errorf("%s: pod %s was mutated", r.name, pods.Items[i].Name)
			}
		}
		return nil
	}
	if r.mutated != r.created {
		return fmt.Errorf("%s: only %d of %d stored pods in %s carry its keys %v %v", r.name, r.mutated, r.created, r.namespace, r.want.Labels, r.want.Annotations)
	}
	return nil
}

func printTable(c config, results []result, loadBefore, loadAfter string) error {
	fmt.Printf("meshrole and its peer, side by side: pod creates through one kube-apiserver, %s, %d CPUs, %s/%s, %s\n",
		time.Now().Format("2006-01-02 15:04"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("%d creates per variant (+%d warm-up), %d concurrent creators, %d rounds; load average before %s, after %s\n\n",
		c.pods, c.warmup, c.creators, c.rounds, loadBefore, loadAfter)
	none, webhook := &results[0], &results[1]
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	if _, err := fmt.Fprintln(w, "variant\tp50\tp99\tcreates/s\t"+
		"p50 / none\tp99 / none\tcreates/s / none\t"+
		"p50 / webhook\tp99 / webhook\tcreates/s / webhook\tmutated pods\t"); err != nil {
		return err
	}
	for i := range results {
		r := &results[i]
		mutated := fmt.Sprintf("%d/%d", r.mutated, r.created)
		if r.name == variantNone {
			mutated = fmt.Sprintf("none of %d", r.created)
		}
		if _, err := fmt.Fprintf(w, "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name,
			dur(r.p(50)), dur(r.p(99)), r.perSecond(),
			ratio(r.p(50), none.p(50)), ratio(r.p(99), none.p(99)), rate(r.perSecond(), none.perSecond()),
			ratio(r.p(50), webhook.p(50)), ratio(r.p(99), webhook.p(99)), rate(r.perSecond(), webhook.perSecond()),
			mutated); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println("\nno admission failed; every webhook and policy variant's stored pods carry its keys, no-webhook pods none.")
	return nil
}

func dur(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("×%.2f", float64(a)/float64(b))
}

func rate(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("×%.2f", a/b)
}
