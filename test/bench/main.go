// Command bench is `make bench`: it measures meshrole's performance figures
// side by side in one run on this machine and prints one table, each figure
// with its target and whether it is met (docs/design.md, "Performance targets"):
//
//   - micro: pkg/mutate's benchmarks (go test -bench, median of -micro-count
//     runs): the admission handler against the do-nothing floor on the same
//     pod, and a decision as policies grow where they can match the pod (its
//     namespace holding 1-1,000 policies; 10-5,000 cluster policies, none or
//     half of them selecting its namespace);
//   - throughput: the webhook binary over TLS and HTTP/2 (test/load), against
//     a do-nothing webhook process on the same certificate, as ratios;
//   - pod creates through a real kube-apiserver, one client, sequential,
//     variants alternating: no webhook, the do-nothing webhook (answering no
//     patch, meshrole's patch, and the same verdict in other patch shapes),
//     meshrole (a pod a policy matches, and one none matches), native mode;
//     then the same variants at 8 concurrent creators, as creates/s and the
//     CPU and API writes each create costs;
//   - pods at scale: 10,000 pods over 1,000 namespaces with their policies,
//     status settling after an edit that drifts 1,000 of them, and admission
//     latency quiet and during a storm of such edits;
//   - memory: the webhook's resident set and live heap after 10,000 policies
//     across 1,000 namespaces are cached and their status written, and after
//     a restart with them all.
//
// It exits 0 when every measurement ran, whether or not targets are met, and
// non-zero on errors (including any failed admission).
//
//	make testenv build && go run ./test/bench
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
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

// Targets (docs/design.md, "Performance targets").
const (
	targetMicroRatio = 1.5 // meshrole handler / do-nothing handler, ns/op
	// Decide with 1,000 ClusterMeshRolePolicies / with 10, none selecting
	// the pod's namespace.
	targetClusterNoneRatio = 1.2
	targetThroughputRatio  = 0.8  // admissions/s, meshrole / do-nothing, same run
	targetCPURatio         = 1.25 // server CPU per admission, meshrole / do-nothing, same run
	targetP99              = 5 * time.Millisecond
	targetVsNone           = 1.15 // pod create, meshrole / no webhook
	targetVsFloor          = 1.10 // pod create, meshrole / do-nothing webhook
	targetStorm            = 1.20 // admission latency during a status storm / quiet
	targetVsSamePatch      = 1.10 // pod creates/s, do-nothing webhook with meshrole's patch / meshrole
	targetRSS              = 64 << 20
)

type config struct {
	duration, warmup         time.Duration
	workers                  int
	throughputPolicies       int
	nativeNamespaces         int
	pods, podWarmup          int
	policies, namespaces     int
	creators                 int
	settle                   time.Duration
	microCount               int
	skipMicro, skipHarness   bool
	skipPods, skipMemory     bool
	skipHTTP1                bool
	profile                  bool
	keep                     bool
	podBlock, podCreators    int
	concurrentPods           int
	skipScale                bool
	scale                    scaleConfig
	serveFloor, floorCertDir string
	floorPatches             string
	webhookPprof             string
	patchShapes              []string
}

func main() {
	var c config
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "Throughput: measured load per webhook.")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "Throughput: unmeasured load before each measurement.")
	flag.IntVar(&c.workers, "workers", 4, "Throughput: concurrent requests.")
	flag.IntVar(&c.throughputPolicies, "throughput-policies", 10, "Throughput: policies in the namespace of the reviews.")
	flag.IntVar(&c.nativeNamespaces, "native-namespaces", 100, "Pod creates, native mode: namespaces with policies besides the measured one (their generated objects are installed too).")
	flag.IntVar(&c.pods, "pods", 500, "Pod creates: measured creates per variant.")
	flag.IntVar(&c.podWarmup, "pod-warmup", 20, "Pod creates: unmeasured creates per variant first.")
	flag.IntVar(&c.podBlock, "pod-block", 25, "Pod creates: consecutive creates per variant; blocks of the variants alternate in random order.")
	flag.BoolVar(&c.skipScale, "skip-scale", false, "Skip the pods-at-scale phase.")
	flag.IntVar(&c.scale.namespaces, "scale-namespaces", 1000, "Pods at scale: namespaces, each with a MeshRolePolicy for its clients.")
	flag.IntVar(&c.scale.podsPerNamespace, "scale-pods", 10, "Pods at scale: pods per namespace.")
	flag.IntVar(&c.scale.editedNamespaces, "scale-edited", 100, "Pods at scale: namespaces of peers the edited ClusterMeshRolePolicy selects.")
	flag.IntVar(&c.scale.creators, "scale-creators", 8, "Pods at scale: concurrent creators of the namespaces, policies and pods.")
	flag.DurationVar(&c.scale.load, "scale-load", 10*time.Second, "Pods at scale: each admission-latency window (quiet, then during the storm).")
	flag.DurationVar(&c.scale.flipEvery, "scale-flip", 2*time.Second, "Pods at scale: how often the storm edits the ClusterMeshRolePolicy.")
	flag.IntVar(&c.podCreators, "pod-creators", 8, "Concurrent pod creates: creators at a time in a second pass of the pod creates (1: no second pass).")
	flag.IntVar(&c.concurrentPods, "concurrent-pods", 320, "Concurrent pod creates: measured creates per variant, in blocks of 10 per creator.")
	flag.IntVar(&c.policies, "policies", 10000, "Memory: MeshRolePolicies to create.")
	flag.IntVar(&c.namespaces, "namespaces", 1000, "Memory: namespaces they are spread over.")
	flag.IntVar(&c.creators, "creators", 4, "Memory: concurrent creators.")
	flag.DurationVar(&c.settle, "settle", 5*time.Second, "Memory: wait this long after the policies are cached before reading the resident set.")
	flag.IntVar(&c.microCount, "micro-count", 5, "Micro: go test -count.")
	flag.BoolVar(&c.skipMicro, "skip-micro", false, "Skip the micro-benchmarks.")
	flag.BoolVar(&c.skipHarness, "skip-harness", false, "Skip everything that needs the control plane (throughput, pod creates, memory).")
	flag.BoolVar(&c.skipPods, "skip-pods", false, "Skip the pod creates through the API server.")
	flag.BoolVar(&c.skipMemory, "skip-memory", false, "Skip the memory measurement.")
	flag.BoolVar(&c.skipHTTP1, "skip-http1", false, "Skip the HTTP/1.1 throughput row.")
	flag.BoolVar(&c.profile, "profile", false, "Also profile the admission handler (BenchmarkAdmission/meshrole) and print go tool pprof -top.")
	c.patchShapes = slices.Clone(patchShapes[1:])
	flag.Func("patch-shapes", "Pod creates: the other shapes of meshrole's patch the do-nothing webhook also answers, each a variant of the same run, for the patch-shape study: a comma-separated list of "+strings.Join(patchShapes[1:], ", ")+", or none (default: all).", func(v string) error {
		shapes, err := parseShapes(v)
		c.patchShapes = shapes
		return err
	})
	flag.StringVar(&c.webhookPprof, "webhook-pprof", "", "Save profiles of the webhook in this directory and print their top: CPU during the meshrole HTTP/2 throughput run, heap at each memory reading (forcing a collection first). Needs a webhook built with net/http/pprof's handlers on its metrics server; the product's build has none.")
	flag.BoolVar(&c.keep, "keep", false, "Keep the control plane's work directory (logs) after the run.")
	flag.StringVar(&c.serveFloor, "serve-floor", "", "Internal: serve the do-nothing webhook on this loopback address.")
	flag.StringVar(&c.floorCertDir, "floor-cert-dir", "", "Internal: the do-nothing webhook's tls.crt and tls.key.")
	flag.StringVar(&c.floorPatches, "floor-patches", "", "Internal: the directory of <shape>.json patches the do-nothing webhook answers with on its patch paths.")
	flag.Parse()

	if c.serveFloor != "" {
		if err := serveFloor(c.serveFloor, c.floorCertDir, c.floorPatches); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "bench failed: %v\n", err)
		os.Exit(1)
	}
}

var benchStart = time.Now()

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench [%5.1fs]: %s\n", time.Since(benchStart).Seconds(), fmt.Sprintf(format, args...))
}

type phase struct {
	name string
	took time.Duration
	load string
}

func run(c config) (err error) {
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	t := &table{}
	var phases []phase
	timed := func(name string, fn func() error) error {
		load := loadgen.LoadAverage()
		start := time.Now()
		progress("%s (load average %s)", name, load)
		err := fn()
		phases = append(phases, phase{name, time.Since(start), load})
		return err
	}
	var failures []string
	var profile string
	var profiles strings.Builder // -webhook-pprof's

	if !c.skipMicro || c.profile {
		dir, err := os.MkdirTemp("", "meshrole-bench-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		var bin string
		if err := timed("building pkg/mutate's test binary", func() error {
			bin, err = buildMutateTest(ctx, root, dir)
			return err
		}); err != nil {
			return err
		}
		if !c.skipMicro {
			if err := timed(fmt.Sprintf("micro-benchmarks: pkg/mutate, %d runs", c.microCount), func() error {
				m, err := runMicro(ctx, root, bin, c.microCount)
				if err != nil {
					return err
				}
				microRows(t, m)
				return nil
			}); err != nil {
				return err
			}
		}
		if c.profile {
			if err := timed("profiling BenchmarkAdmission/meshrole", func() error {
				profile, err = profileHandler(ctx, root, bin)
				return err
			}); err != nil {
				return err
			}
		}
	}

	if !c.skipHarness {
		if bin, err := harness.WebhookBinary(root); err == nil {
			if stale := harness.StaleSources(root, bin); len(stale) > 0 {
				progress("warning: %s is older than %s (and %d more): run `make build`", bin, stale[0], len(stale)-1)
			}
		}
		var h *harness.Harness
		if err := timed("starting kube-apiserver, etcd, kube-controller-manager and the webhook", func() error {
			h, err = harness.Start(ctx, harness.Options{Root: root, Progress: func(s string) { progress("  %s", s) }})
			return err
		}); err != nil {
			return err
		}
		defer func() {
			if err != nil || c.keep {
				h.KeepWorkDir = true
				fmt.Fprintf(os.Stderr, "%slogs kept in %s\n", h.Diagnostics(20), h.WorkDir)
			}
			if stopErr := h.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}()
		failures, err = harnessPhases(ctx, c, h, t, timed, &profiles)
		if err != nil {
			return err
		}
	}

	fmt.Printf("meshrole performance, %s, %d CPUs, %s/%s, %s\n\n", time.Now().Format("2006-01-02 15:04"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	if err := t.write(os.Stdout); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println("phases (load average at start, 1/5/15 min):")
	for _, p := range phases {
		fmt.Printf("  %-75s %6.1fs  (%s)\n", p.name, p.took.Seconds(), p.load)
	}
	fmt.Printf("  total %.1fs\n", time.Since(benchStart).Seconds())
	if m := t.missed(); len(m) > 0 {
		fmt.Printf("\ntargets not met: %s\n", strings.Join(m, "; "))
	} else {
		fmt.Printf("\nall targets met\n")
	}
	if profile != "" {
		fmt.Printf("\n--- go tool pprof -top (BenchmarkAdmission/meshrole)\n%s", profile)
	}
	fmt.Print(profiles.String())
	if len(failures) > 0 {
		return fmt.Errorf("failed admissions: %s", strings.Join(failures, "; "))
	}
	return nil
}

func microRows(t *table, m *microResult) {
	t.section(fmt.Sprintf("micro: pkg/mutate benchmarks, in-process, no TLS (medians of %d runs)", m.Count))
	floorLabel := "admission, do-nothing floor"
	if m.Floor.MBPerS > 0 {
		// go test reports MB/s of the review (b.SetBytes): its size is MB/s × ns/op.
		floorLabel += fmt.Sprintf(" (%.1f KB review)", m.Floor.MBPerS*m.Floor.NsPerOp/1e6)
	}
	t.info(floorLabel, fmt.Sprintf("%s/op, %s B/op, %.0f allocs/op", ns(m.Floor.NsPerOp), thousands(int64(m.Floor.BPerOp)), m.Floor.Allocs))
	t.info("admission, meshrole", fmt.Sprintf("%s/op, %s B/op, %.0f allocs/op", ns(m.Meshrole.NsPerOp), thousands(int64(m.Meshrole.BPerOp)), m.Meshrole.Allocs))
	r := median(m.HandlerRatio)
	t.check("meshrole / floor", ratio(r)+spread(m.HandlerRatio), "≤ "+ratio(targetMicroRatio), r <= targetMicroRatio)
	t.section(fmt.Sprintf("micro: policy scaling, Decide for one pod (medians of %d runs)", m.Count))
	for i, n := range namespacePolicyCounts {
		t.info(fmt.Sprintf("the pod's namespace holds %s of 10,000 policies", thousands(int64(n))), decideLine(m.NamespacePolicies[i]))
	}
	// Linear: each policy that can match the pod is evaluated once.
	first, last := namespacePolicyCounts[0], namespacePolicyCounts[len(namespacePolicyCounts)-1]
	r = median(m.NamespaceRatio)
	linear := float64(last) / float64(first)
	t.check(fmt.Sprintf("%s / %s policies in the namespace", thousands(int64(last)), thousands(int64(first))), ratio(r)+spread(m.NamespaceRatio), "≤ "+ratio(linear)+" (linear)", r <= linear)
	for i, n := range clusterPolicyCounts {
		t.info(fmt.Sprintf("%s ClusterMeshRolePolicies, none selecting the namespace", thousands(int64(n))), decideLine(m.ClusterNone[i]))
	}
	r = median(m.ClusterNoneRatio)
	t.check("1,000 / 10 cluster policies, none selecting", ratio(r)+spread(m.ClusterNoneRatio), "≤ "+ratio(targetClusterNoneRatio), r <= targetClusterNoneRatio)
	for i, n := range clusterPolicyCounts {
		t.info(fmt.Sprintf("%s ClusterMeshRolePolicies, %s selecting the namespace", thousands(int64(n)), thousands(int64(n/2))), decideLine(m.ClusterHalf[i]))
	}
	first, last = clusterPolicyCounts[0]/2, clusterPolicyCounts[len(clusterPolicyCounts)-1]/2
	r = median(m.ClusterHalfRatio)
	linear = float64(last) / float64(first)
	t.check(fmt.Sprintf("%s / %s selecting cluster policies", thousands(int64(last)), thousands(int64(first))), ratio(r)+spread(m.ClusterHalfRatio), "≤ "+ratio(linear)+" (linear)", r <= linear)
}

func decideLine(s *benchStat) string {
	return fmt.Sprintf("%s/op, %.0f allocs/op", ns(s.NsPerOp), s.Allocs)
}

func harnessPhases(ctx context.Context, c config, h *harness.Harness, t *table, timed func(string, func() error) error,
	profiles *strings.Builder) (failures []string, err error) {
	pid, err := webhookPID(h.Webhook.Port)
	if err != nil {
		return nil, err
	}
	var prof *webhookProfiler
	if c.webhookPprof != "" {
		if err := os.MkdirAll(c.webhookPprof, 0o755); err != nil {
			return nil, err
		}
		prof = &webhookProfiler{dir: c.webhookPprof}
	}
	top := func(title, file string, args ...string) {
		if file == "" {
			return
		}
		out, err := pprofTop(ctx, file, args...)
		if err != nil {
			out = err.Error() + "\n"
		}
		fmt.Fprintf(profiles, "\n--- %s: %s\n%s", title, file, out)
	}
	roots := rootsOf(h.Certs.CAPEM)
	body, err := loadgen.TypicalReview(nsMeshrole)
	if err != nil {
		return nil, err
	}
	base := loadgen.Options{RootCAs: roots, Workers: c.workers, Duration: c.duration, Warmup: c.warmup, Body: body}

	var floor *floorProcess
	variants := slices.Clone(baseVariants)
	for _, shape := range c.patchShapes {
		variants = append(variants, shapeVariant(shape, podMetadata{}))
	}
	if err := timed("namespaces and policies; starting the do-nothing webhook", func() error {
		if err := createNamespaces(ctx, h, variants); err != nil {
			return err
		}
		if err := createThroughputPolicies(ctx, h, c.throughputPolicies); err != nil {
			return err
		}
		patch, err := capturePatch(ctx, h.Webhook.URL(), base)
		if err != nil {
			return err
		}
		patchDir := filepath.Join(h.WorkDir, "do-nothing-patches")
		if err := os.MkdirAll(patchDir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(patchDir, shapeMeshrole+".json"), patch, 0o644); err != nil {
			return err
		}
		pod, err := loadgen.TypicalPod("")
		if err != nil {
			return err
		}
		for i, shape := range c.patchShapes {
			shaped, wants, err := shapePatch(shape, podMetadata{Labels: pod.Labels, Annotations: pod.Annotations}, patch)
			if err != nil {
				return err
			}
			variants[len(baseVariants)+i].wants = &wants
			progress("  the do-nothing webhook answers the %s shape: %s", shape, shaped)
			if err := os.WriteFile(filepath.Join(patchDir, shape+".json"), shaped, 0o644); err != nil {
				return err
			}
		}
		floor, err = startFloor(ctx, h.CertDir, patchDir, h.Certs.CAPEM, filepath.Join(h.WorkDir, "do-nothing-webhook.log"))
		return err
	}); err != nil {
		return nil, err
	}
	defer floor.Stop()
	apiServer, err := apiServerPID()
	if err != nil {
		return nil, err
	}
	procs := podCreateProcesses{apiServer: apiServer, webhook: pid, floor: floor.PID(), webhookMetrics: h.Webhook.MetricsURL()}

	// Throughput over TLS: the do-nothing webhook, then meshrole.
	type run struct {
		label string
		opts  loadgen.Options
		res   loadgen.Result
	}
	runs := []*run{
		{label: "do-nothing, HTTP/2", opts: with(base, func(o *loadgen.Options) { o.URL, o.PID = floor.URL(), floor.PID() })},
		{label: "meshrole, HTTP/2", opts: with(base, func(o *loadgen.Options) { o.URL, o.PID, o.ExpectPatch = h.Webhook.URL(), pid, true })},
	}
	if !c.skipHTTP1 {
		runs = append(runs, &run{label: "meshrole, HTTP/1.1", opts: with(base, func(o *loadgen.Options) {
			o.URL, o.PID, o.ExpectPatch, o.HTTP1, o.Connections = h.Webhook.URL(), pid, true, true, c.workers
		})})
	}
	for i, r := range runs {
		if err := timed(fmt.Sprintf("throughput: %s, %d workers, %v", r.label, c.workers, c.duration), func() error {
			cpuProfile := make(chan string, 1)
			if i == 1 && prof != nil { // meshrole, HTTP/2
				go func() {
					file, err := "", sleep(ctx, c.warmup)
					if err == nil {
						file, err = prof.cpu(ctx, h.Webhook.MetricsURL(), "cpu-throughput.pb.gz", c.duration)
					}
					if err != nil {
						progress("  no CPU profile of the webhook: %v", err)
					}
					cpuProfile <- file
				}()
			} else {
				cpuProfile <- ""
			}
			r.res, err = loadgen.Run(ctx, r.opts)
			top("webhook CPU during the meshrole HTTP/2 throughput run", <-cpuProfile)
			progress("  %s", strings.ReplaceAll(strings.TrimSpace(r.res.String()), "\n", "\n                 "))
			return err
		}); err != nil {
			return nil, err
		}
		if r.res.Errors > 0 || r.res.Requests == 0 {
			failures = append(failures, fmt.Sprintf("%s: %d of %d admissions failed %v %q", r.label, r.res.Errors, r.res.Requests, r.res.ErrorKinds, r.res.ErrorSamples))
		}
	}
	floorRun, meshRun := runs[0].res, runs[1].res
	t.section(fmt.Sprintf("throughput: webhook process over TLS, %d workers, %v each, %s review, same machine as the load generator",
		c.workers, c.duration, kb(meshRun.BodyBytes)))
	for _, r := range runs {
		t.info(r.label+": admissions/s", fmt.Sprintf("%s (%s requests, %d errors)", rate(r.res.Throughput), thousands(int64(r.res.Requests)), r.res.Errors))
		t.info(r.label+": p50 / p95 / p99", pcts(r.res.Latency))
		t.info(r.label+": server CPU / admission", fmt.Sprintf("%s (load generator: %s)", dur(r.res.ServerCPUPerRequest), dur(r.res.ClientCPUPerRequest)))
	}
	r := meshRun.Throughput / floorRun.Throughput
	t.check("meshrole / do-nothing, HTTP/2: admissions/s", ratio(r), "≥ "+ratio(targetThroughputRatio), r >= targetThroughputRatio && meshRun.Requests > 0)
	r = div(meshRun.ServerCPUPerRequest, floorRun.ServerCPUPerRequest)
	t.check("meshrole / do-nothing, HTTP/2: server CPU per admission", ratio(r), "≤ "+ratio(targetCPURatio), r <= targetCPURatio && r > 0)
	t.check("meshrole, HTTP/2: p99", dur(meshRun.Latency.P99), "≤ "+dur(targetP99), meshRun.Latency.P99 <= targetP99 && meshRun.Requests > 0)
	t.info("meshrole / do-nothing, HTTP/2: p50, p99", ratio(div(meshRun.Latency.P50, floorRun.Latency.P50))+", "+ratio(div(meshRun.Latency.P99, floorRun.Latency.P99)))
	if meshRun.ServerCPUPerRequest > 0 {
		t.info("meshrole, HTTP/2: admissions/s per core of webhook CPU", rate(float64(time.Second)/float64(meshRun.ServerCPUPerRequest)))
	}

	if !c.skipPods {
		var pods map[string]*podCreateResult
		nativeObjects := 0
		if err := timed(fmt.Sprintf("pod creates through kube-apiserver: %d × (%d + %d warm-up), sequential, blocks of %d", len(variants), c.pods, c.podWarmup, c.podBlock), func() error {
			if err := registerFloors(ctx, h, floor, variants); err != nil {
				return err
			}
			if err := waitForFloors(ctx, h, floor, variants); err != nil {
				return err
			}
			if nativeObjects, err = installNative(ctx, h, c.throughputPolicies, c.nativeNamespaces); err != nil {
				return err
			}
			if err := installNativeFloor(ctx, h); err != nil {
				return err
			}
			pods, err = measurePodCreates(ctx, h, floor, procs, variants, "", c.pods, c.podWarmup, c.podBlock, 1)
			return err
		}); err != nil {
			return nil, err
		}
		none, fl, fp, mr, un := pods[variantNone], pods[variantFloor], pods[variantFloorPatch], pods[variantMeshrole], pods[variantUnmatched]
		t.section(fmt.Sprintf("pod create through kube-apiserver: %d creates each, one client, variants alternating in blocks of %d", c.pods, c.podBlock))
		t.info("no webhook: median / p99", dur(none.Median)+" / "+dur(none.P99))
		t.info("do-nothing webhook: median / p99", dur(fl.Median)+" / "+dur(fl.P99))
		t.info("do-nothing webhook answering meshrole's patch: median / p99", dur(fp.Median)+" / "+dur(fp.P99))
		t.info("that patch / do-nothing: median, p99", ratio(div(fp.Median, fl.Median))+", "+ratio(div(fp.P99, fl.P99)))
		t.info("meshrole, pod a policy matches (patched): median / p99", dur(mr.Median)+" / "+dur(mr.P99))
		t.info("meshrole, pod no policy matches: median / p99", dur(un.Median)+" / "+dur(un.P99))
		t.info("do-nothing / none: median, p99", ratio(div(fl.Median, none.Median))+", "+ratio(div(fl.P99, none.P99)))
		r = div(mr.Median, none.Median)
		t.check("meshrole / none: median", ratio(r), "≤ "+ratio(targetVsNone), r <= targetVsNone)
		r = div(mr.P99, none.P99)
		t.check("meshrole / none: p99", ratio(r), "≤ "+ratio(targetVsNone), r <= targetVsNone)
		r = div(mr.Median, fl.Median)
		t.check("meshrole / do-nothing: median", ratio(r), "≤ "+ratio(targetVsFloor), r <= targetVsFloor)
		t.info("meshrole / do-nothing: p99", ratio(div(mr.P99, fl.P99)))
		t.info("meshrole / do-nothing with the same patch: median, p99", ratio(div(mr.Median, fp.Median))+", "+ratio(div(mr.P99, fp.P99)))
		if len(c.patchShapes) > 0 {
			t.section(fmt.Sprintf("the patch's shape: the do-nothing webhook answering the same verdict in other JSON patches, same run (%d creates each)", c.pods))
			t.info("meshrole's shape (one operation per key): median / p99; creates/s; kube-apiserver CPU", fmt.Sprintf("%s / %s; %s; %s", dur(fp.Median), dur(fp.P99), rate(fp.PerSecond()), dur(fp.Per(fp.Spent.apiServer))))
			for _, shape := range c.patchShapes {
				s := pods[variantFloorPatch+"-"+shape]
				t.info(fmt.Sprintf("%s: median / p99; creates/s; kube-apiserver CPU", shape), fmt.Sprintf("%s / %s; %s; %s", dur(s.Median), dur(s.P99), rate(s.PerSecond()), dur(s.Per(s.Spent.apiServer))))
				t.info(fmt.Sprintf("  %s / meshrole's shape: median, p99, kube-apiserver CPU", shape), fmt.Sprintf("%s, %s, %s",
					ratio(div(s.Median, fp.Median)), ratio(div(s.P99, fp.P99)), ratio(div(s.Per(s.Spent.apiServer), fp.Per(fp.Spent.apiServer)))))
			}
		}
		nv := pods[variantNative]
		t.section(fmt.Sprintf("native mode vs webhook mode vs none: the same pods, same run (%d generated MutatingAdmissionPolicies installed)", nativeObjects))
		t.info("native mode (no webhook; patched): median / p99", dur(nv.Median)+" / "+dur(nv.P99))
		nf := pods[variantNativeFloor]
		t.info("a MutatingAdmissionPolicy writing the same keys, no decision: median / p99", dur(nf.Median)+" / "+dur(nf.P99))
		t.info("native / none: median, p99", ratio(div(nv.Median, none.Median))+", "+ratio(div(nv.P99, none.P99)))
		t.info("native / that constant policy: median, p99", ratio(div(nv.Median, nf.Median))+", "+ratio(div(nv.P99, nf.P99)))
		t.info("webhook mode / none: median, p99", ratio(div(mr.Median, none.Median))+", "+ratio(div(mr.P99, none.P99)))
		t.info("native / webhook mode: median, p99", ratio(div(nv.Median, mr.Median))+", "+ratio(div(nv.P99, mr.P99)))
		t.info("meshrole unmatched / do-nothing: median, p99", ratio(div(un.Median, fl.Median))+", "+ratio(div(un.P99, fl.P99)))

		if c.podCreators > 1 {
			block := 10 * c.podCreators
			if err := timed(fmt.Sprintf("pod creates through kube-apiserver: %d × (%d + %d warm-up), %d at a time, blocks of %d", len(variants), c.concurrentPods, c.podCreators, c.podCreators, block), func() error {
				pods, err = measurePodCreates(ctx, h, floor, procs, variants, "c", c.concurrentPods, c.podCreators, block, c.podCreators)
				return err
			}); err != nil {
				return nil, err
			}
			concurrentRows(t, pods, c)
		}
		if err := deletePods(ctx, h, variants); err != nil {
			return nil, err
		}
	}

	if !c.skipScale {
		var sc *scaleResult
		if err := timed(fmt.Sprintf("pods at scale: %d namespaces × %d pods, %d creators", c.scale.namespaces, c.scale.podsPerNamespace, c.scale.creators), func() error {
			sc, err = measureScale(ctx, h, c.scale, procs, body, with(base, func(o *loadgen.Options) { o.URL, o.PID, o.ExpectPatch = h.Webhook.URL(), pid, true }), prof)
			return err
		}); err != nil {
			return nil, err
		}
		scaleRows(t, sc, c.scale)
		top("webhook CPU during the storm of policy edits", sc.StormProfile)
		for _, r := range []loadgen.Result{sc.Quiet, sc.Storm} {
			if r.Errors > 0 || r.Requests == 0 {
				failures = append(failures, fmt.Sprintf("pods at scale: %d of %d admissions failed %v %q", r.Errors, r.Requests, r.ErrorKinds, r.ErrorSamples))
			}
		}
	}

	if !c.skipMemory {
		var mem *memoryResult
		if err := timed(fmt.Sprintf("memory: %d policies across %d namespaces, %d creators", c.policies, c.namespaces, c.creators), func() error {
			mem, err = measureMemory(ctx, h, c.namespaces, c.policies, c.creators, c.settle, prof, progress)
			return err
		}); err != nil {
			return nil, err
		}
		t.section("memory: the webhook's resident set (VmRSS), webhook restarted first")
		t.info(fmt.Sprintf("with %d policies and %s pods, %v after start", c.throughputPolicies, thousands(int64(mem.Pods)), mem.Settle), mib(mem.RSSBefore))
		t.info(fmt.Sprintf("%s policies / %s namespaces created in", thousands(int64(mem.Policies)), thousands(int64(mem.Namespaces))),
			fmt.Sprintf("%.1f s (%s objects/s); enforced %.1f s after the last create", mem.CreateTime.Seconds(),
				thousands(int64(float64(mem.Policies+mem.Namespaces)/mem.CreateTime.Seconds())), mem.CacheLag.Seconds()))
		t.info("  VmRSS right when cached", mib(mem.RSSCached))
		t.info("  status of every policy written", fmt.Sprintf("%.1f s after cached", mem.StatusLag.Seconds()))
		t.check(fmt.Sprintf("  VmRSS %v after that", mem.Settle), mib(mem.RSSSettled), "≤ "+mib(targetRSS), mem.RSSSettled <= targetRSS)
		t.info("  Go heap in use / next GC goal", heapLine(mem.HeapSettled))
		t.info("  peak (VmHWM)", mib(mem.PeakRSS))
		t.info(fmt.Sprintf("restarted with them all, %v after status caught up", mem.Settle), mib(mem.RSSColdStart))
		t.info("  Go heap in use / next GC goal", heapLine(mem.HeapColdStart))
		t.section("memory: the webhook's live heap, as its last collection found it (GODEBUG=gctrace=1; forced with -webhook-pprof)")
		t.info(fmt.Sprintf("with %d policies", c.throughputPolicies), gcLine(mem.GCBefore))
		t.info(fmt.Sprintf("with %s policies, status written", thousands(int64(mem.Policies))), gcLine(mem.GCSettled))
		t.info("restarted with them all", gcLine(mem.GCColdStart))
		if mem.GCBefore.Observed && mem.GCSettled.Observed {
			per := float64(mem.GCSettled.live()-mem.GCBefore.live()) / float64(mem.Policies)
			t.info("live heap per policy (with its status, and its share of the namespaces)", fmt.Sprintf("%s B (MiB resolution: ±%.0f B)", thousands(int64(per)), float64(1<<20)/float64(mem.Policies)))
		}
		for _, f := range mem.HeapProfiles {
			top("webhook heap, in use", f, "-sample_index=inuse_space")
		}
	}
	return failures, nil
}

// concurrentRows: pod creates/s at c.podCreators creators, and what each
// create cost the processes involved.
func concurrentRows(t *table, pods map[string]*podCreateResult, c config) {
	none, fl, fp, mr, un := pods[variantNone], pods[variantFloor], pods[variantFloorPatch], pods[variantMeshrole], pods[variantUnmatched]
	t.section(fmt.Sprintf("pod creates/s at %d concurrent creators (%d creates each, blocks of %d), and what each create cost (CPU in the variant's blocks, per create)",
		c.podCreators, c.concurrentPods, 10*c.podCreators))
	for _, v := range []*podCreateResult{none, fl, fp, mr, un} {
		t.info(v.Variant+": creates/s; median; kube-apiserver CPU", fmt.Sprintf("%s; %s; %s", rate(v.PerSecond()), dur(v.Median), dur(v.Per(v.Spent.apiServer))))
	}
	t.info("do-nothing webhook CPU, its variants", fmt.Sprintf("%s (plain), %s (with the patch)", dur(fl.Per(fl.Spent.floor)), dur(fp.Per(fp.Spent.floor))))
	t.info("meshrole webhook CPU, its variants", fmt.Sprintf("%s (patched), %s (unmatched); in blocks that do not call it: %s",
		dur(mr.Per(mr.Spent.webhook)), dur(un.Per(un.Spent.webhook)), dur(none.Per(none.Spent.webhook))))
	t.info("meshrole's API writes per create", fmt.Sprintf("%.3f (patched), %.3f (unmatched); in blocks that do not call it: %.3f",
		mr.Spent.writes/float64(len(mr.Latencies)), un.Spent.writes/float64(len(un.Latencies)), none.Spent.writes/float64(len(none.Latencies))))
	for _, shape := range c.patchShapes {
		s := pods[variantFloorPatch+"-"+shape]
		t.info(fmt.Sprintf("do-nothing answering the %s shape: creates/s; / meshrole's shape", shape), fmt.Sprintf("%s; %s", rate(s.PerSecond()), ratio(s.PerSecond()/fp.PerSecond())))
	}
	t.info("meshrole / none: creates/s", ratio(mr.PerSecond()/none.PerSecond()))
	r := fp.PerSecond() / mr.PerSecond()
	t.check("do-nothing with the same patch / meshrole: creates/s", ratio(r), "≤ "+ratio(targetVsSamePatch), r <= targetVsSamePatch && mr.PerSecond() > 0)
}

func scaleRows(t *table, sc *scaleResult, c scaleConfig) {
	t.section(fmt.Sprintf("pods at scale: %s pods across %s namespaces (a MeshRolePolicy in each), a ClusterMeshRolePolicy over %d of them (%s pods)",
		thousands(int64(c.pods())), thousands(int64(c.namespaces)), c.editedNamespaces, thousands(int64(c.affected()))))
	t.info(fmt.Sprintf("pods created, %d creators", c.creators), fmt.Sprintf("%.1f s (%s); every status counts them %.1f s after the last create",
		sc.CreateTime.Seconds(), rate(float64(c.pods())/sc.CreateTime.Seconds()), sc.CountedAfter.Seconds()))
	t.info("  meshrole's API writes and CPU until then", fmt.Sprintf("%s writes (%.3f per pod); %s CPU (%s per pod)",
		thousands(int64(sc.Create.writes)), sc.Create.writes/float64(c.pods()), dur(sc.Create.webhook), dur(sc.Create.webhook/time.Duration(c.pods()))))
	t.info("  meshrole's VmRSS with every pod cached", mib(sc.PodsRSS))
	t.info(fmt.Sprintf("an edit of the ClusterMeshRolePolicy drifting its %s pods: status settled in", thousands(int64(c.affected()))),
		fmt.Sprintf("%.1f s; %s API writes; %s CPU", sc.SettleTime.Seconds(), thousands(int64(sc.Settle.writes)), dur(sc.Settle.webhook)))
	t.info("admission latency, one worker, quiet: p50 / p99", dur(sc.Quiet.Latency.P50)+" / "+dur(sc.Quiet.Latency.P99))
	t.info(fmt.Sprintf("  during a storm (%d edits, one every %v): p50 / p99", sc.Flips, c.flipEvery), fmt.Sprintf("%s / %s; %s API writes",
		dur(sc.Storm.Latency.P50), dur(sc.Storm.Latency.P99), thousands(int64(sc.StormWrites))))
	t.info("  kube-apiserver's CPU, quiet / storm", fmt.Sprintf("%.2f / %.2f cores", sc.QuietAPIServer, sc.StormAPIServer))
	t.info("  meshrole's CPU per admission, quiet / storm", fmt.Sprintf("%s / %s (the storm's status work included)", dur(sc.Quiet.ServerCPUPerRequest), dur(sc.Storm.ServerCPUPerRequest)))
	r := div(sc.Storm.Latency.P50, sc.Quiet.Latency.P50)
	t.check("  storm / quiet: p50", ratio(r), "≤ "+ratio(targetStorm), r <= targetStorm && sc.Storm.Requests > 0)
	r = div(sc.Storm.Latency.P99, sc.Quiet.Latency.P99)
	t.check("  storm / quiet: p99", ratio(r), "≤ "+ratio(targetStorm), r <= targetStorm && sc.Storm.Requests > 0)
}

// spread shows the range of per-run ratios.
func spread(v []float64) string {
	if len(v) < 2 {
		return ""
	}
	return fmt.Sprintf(" (runs: %.2f–%.2f)", slices.Min(v), slices.Max(v))
}

func gcLine(g lastGC) string {
	if !g.Observed {
		return "no collection logged"
	}
	forced := ""
	if g.Forced {
		forced = ", forced"
	}
	return fmt.Sprintf("%d MiB (collection %d%s; next at %d MiB)", g.LiveMiB, g.Number, forced, g.GoalMiB)
}

func heapLine(g goHeap) string {
	return fmt.Sprintf("%s / %s", mib(int64(g.HeapInuse)), mib(int64(g.NextGC)))
}

func with(o loadgen.Options, f func(*loadgen.Options)) loadgen.Options {
	f(&o)
	return o
}

func div(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func kb(n int) string { return fmt.Sprintf("%.1f KB", float64(n)/1000) }
