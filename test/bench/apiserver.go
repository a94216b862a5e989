package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

// The ways a pod create goes through the API server, side by side.
const (
	variantNone       = "none"
	variantFloor      = "do-nothing"
	variantFloorPatch = "do-nothing-patch"
	variantMeshrole   = "meshrole"
	variantUnmatched  = "meshrole-unmatched"

	nsNone       = "bench-none"
	nsFloor      = "bench-floor"
	nsFloorPatch = "bench-floor-patch"
	nsMeshrole   = "bench-meshrole"

	// floorLabel selects the namespaces each do-nothing webhook is called
	// for: "plain" or "patch".
	floorLabel = "meshrole-bench/do-nothing-webhook"
)

// variant is one way of creating a pod.
type variant struct {
	name, namespace, app string
	// patched: the pod must come back with meshrole's verdict (or, for
	// do-nothing-patch, the same keys under bench.meshrole.io/).
	patched bool
	// wants, for the do-nothing webhook answering another patch shape, is
	// what its pods must come back with instead.
	wants *podMetadata
}

var baseVariants = []variant{
	{variantNone, nsNone, "eureka-server", false, nil},
	{variantFloor, nsFloor, "eureka-server", false, nil},
	{variantFloorPatch, nsFloorPatch, "eureka-server", true, nil},
	{variantMeshrole, nsMeshrole, "eureka-server", true, nil},
	// A pod in meshrole's namespace that no policy matches: the webhook is
	// called and answers without a patch.
	{variantUnmatched, nsMeshrole, "no-policy-matches", false, nil},
	{variantNative, nsNative, "eureka-server", true, nil},
	{variantNativeFloor, nsNativeFloor, "eureka-server", true, nil},
}

// shapeVariant is the do-nothing webhook answering another patch shape,
// whose pods must come back with wants.
func shapeVariant(shape string, wants podMetadata) variant {
	return variant{variantFloorPatch + "-" + shape, nsFloorPatch + "-" + shape, "eureka-server", true, &wants}
}

// floorLabelValue selects the do-nothing webhook's handler for a namespace:
// "plain", or "patch-<shape>".
func floorLabelValue(v variant) string {
	switch v.name {
	case variantFloor:
		return "plain"
	case variantFloorPatch:
		return "patch-" + shapeMeshrole
	default:
		shape, _ := strings.CutPrefix(v.name, variantFloorPatch+"-")
		return "patch-" + shape
	}
}

// floorVariants are the variants the do-nothing webhook answers.
func floorVariants(variants []variant) []variant {
	var out []variant
	for _, v := range variants {
		if v.name == variantFloor || strings.HasPrefix(v.name, variantFloorPatch) {
			out = append(out, v)
		}
	}
	return out
}

// capturePatch asks the meshrole webhook once for its answer to
// TypicalReview in the meshrole namespace and returns the patch with every
// meshrole.io/ key moved to bench.meshrole.io/: the same mutation, in size
// and shape, without naming a meshrole policy (which would make meshrole's
// status controller count those pods).
func capturePatch(ctx context.Context, url string, opts loadgen.Options) ([]byte, error) {
	var patch []byte
	opts.URL, opts.Requests, opts.Duration, opts.Warmup, opts.Workers, opts.PID = url, 1, 0, 0, 1, 0
	opts.Check = func(r *admissionv1.AdmissionResponse) error {
		patch = r.Patch
		return nil
	}
	opts.ExpectPatch = true
	res, err := loadgen.Run(ctx, opts)
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 || patch == nil {
		return nil, fmt.Errorf("capturing meshrole's patch: %v %q", res.ErrorKinds, res.ErrorSamples)
	}
	patch = bytes.ReplaceAll(patch, []byte("meshrole.io~1"), []byte("bench.meshrole.io~1"))
	patch = bytes.ReplaceAll(patch, []byte(`"meshrole.io/`), []byte(`"bench.meshrole.io/`))
	return patch, nil
}

// registerFloors registers the do-nothing webhook once per handler, exactly
// as the harness registers meshrole (same rules, timeout, failure policy,
// HTTP/2 to a loopback URL), for the namespaces labelled floorLabel=plain
// and =patch-<shape>.
func registerFloors(ctx context.Context, h *harness.Harness, f *floorProcess, variants []variant) error {
	for _, v := range floorVariants(variants) {
		value := floorLabelValue(v)
		url := f.URL()
		if shape, ok := strings.CutPrefix(value, "patch-"); ok {
			url = f.PatchURL(shape)
		}
		cfg := h.WebhookConfiguration().DeepCopy()
		cfg.Name = "00-meshrole-bench-do-nothing-" + value
		wh := &cfg.Webhooks[0]
		wh.Name = "do-nothing-" + value + ".bench.meshrole.io"
		wh.ClientConfig.URL = &url
		wh.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{floorLabel: value}}
		if err := h.Client.Create(ctx, cfg); err != nil {
			return err
		}
	}
	return nil
}

// waitForFloors dry-run creates pods in every do-nothing namespace until
// the API server calls the do-nothing webhook for each (webhook
// configurations reach the admission chain asynchronously).
func waitForFloors(ctx context.Context, h *harness.Harness, f *floorProcess, variants []variant) error {
	for _, v := range floorVariants(variants) {
		ns := v.namespace
		deadline := time.Now().Add(30 * time.Second)
		for {
			before, err := f.Served(ctx)
			if err != nil {
				return err
			}
			// The pod the measurement creates: the fixed patch applies to it.
			probe, err := loadgen.TypicalPod(ns)
			if err != nil {
				return err
			}
			probe.GenerateName = "probe-"
			if _, err := h.DryRunPod(ctx, probe); err != nil {
				return fmt.Errorf("dry-run pod in %s: %w", ns, err)
			}
			after, err := f.Served(ctx)
			if err != nil {
				return err
			}
			if after > before {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the API server did not call the do-nothing webhook for %s within 30s", ns)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// podCreateResult is the latency of one variant's pod creates, and what its
// blocks cost the processes involved.
type podCreateResult struct {
	Variant   string
	Latencies []time.Duration // sorted
	Median    time.Duration
	P99       time.Duration
	// Wall is the summed wall time of the variant's measured blocks.
	Wall time.Duration
	// Spent is what the processes spent during those blocks.
	Spent costs
}

// PerSecond is the variant's pod creates per second of its blocks.
func (r *podCreateResult) PerSecond() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Wall.Seconds()
}

// Per divides a cost over the variant's creates.
func (r *podCreateResult) Per(d time.Duration) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return d / time.Duration(len(r.Latencies))
}

// podCreateProcesses are the processes whose CPU each block is charged.
type podCreateProcesses struct {
	apiServer, webhook, floor int
	webhookMetrics            string
}

// costs is a reading of the processes' counters, or what they counted over
// a span of work: each process's CPU, and the webhook's API writes (POST,
// PUT, PATCH, DELETE).
type costs struct {
	apiServer, webhook, floor time.Duration
	writes                    float64
}

func (c costs) minus(o costs) costs {
	return costs{c.apiServer - o.apiServer, c.webhook - o.webhook, c.floor - o.floor, c.writes - o.writes}
}

func (c costs) plus(o costs) costs {
	return costs{c.apiServer + o.apiServer, c.webhook + o.webhook, c.floor + o.floor, c.writes + o.writes}
}

// span runs do and returns what the processes spent during it and how long
// it took; the readings themselves are outside both.
func (p podCreateProcesses) span(ctx context.Context, do func() error) (costs, time.Duration, error) {
	before, err := p.read(ctx)
	if err != nil {
		return costs{}, 0, err
	}
	start := time.Now()
	if err := do(); err != nil {
		return costs{}, 0, err
	}
	took := time.Since(start)
	after, err := p.read(ctx)
	if err != nil {
		return costs{}, 0, err
	}
	return after.minus(before), took, nil
}

func (p podCreateProcesses) read(ctx context.Context) (costs, error) {
	var c costs
	metrics, err := readMetrics(ctx, p.webhookMetrics)
	if err != nil {
		return c, err
	}
	if c.writes, err = restWrites(metrics); err != nil {
		return c, err
	}
	for _, r := range []struct {
		pid int
		to  *time.Duration
	}{{p.apiServer, &c.apiServer}, {p.webhook, &c.webhook}, {p.floor, &c.floor}} {
		if *r.to, err = loadgen.ProcessCPU(r.pid); err != nil {
			return c, err
		}
	}
	return c, nil
}

// measurePodCreates times pod creates, creators at a time. Variants
// alternate in blocks of block creates, the blocks of a round in random
// order (fixed seed): drift in the machine's load hits every variant alike,
// and the work a create sets off in the background (meshrole's status
// controller writing a policy's status after a matched pod) mostly lands on
// creates of the same variant. The first warmup creates of each variant are
// not counted. Each create is checked to have gone through the webhooks it
// should. Each block is charged the CPU the API server, meshrole and the
// do-nothing webhook spent during it and meshrole's API writes.
//
// Pods are named <app>-<pass><number>, so that passes do not collide.
func measurePodCreates(ctx context.Context, h *harness.Harness, f *floorProcess, procs podCreateProcesses, variants []variant, pass string, n, warmup, block, creators int) (map[string]*podCreateResult, error) {
	if block <= 0 || creators <= 0 {
		return nil, errors.New("pod block and creators must be positive")
	}
	cs, template, err := podCreator(h)
	if err != nil {
		return nil, err
	}
	floorBefore, err := f.Served(ctx)
	if err != nil {
		return nil, err
	}
	var floorCalls atomic.Int64

	create := func(v variant, i int) (time.Duration, error) {
		pod := template.DeepCopy()
		pod.Namespace = v.namespace
		pod.Name = fmt.Sprintf("%s-%s%04d", v.app, pass, i)
		pod.Labels["app"] = v.app
		start := time.Now()
		got, err := cs.CoreV1().Pods(v.namespace).Create(ctx, pod, metav1.CreateOptions{})
		d := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("creating pod %s/%s: %w", v.namespace, pod.Name, err)
		}
		prefix := ""
		if v.name == variantFloorPatch || v.name == variantNativeFloor {
			prefix = "bench."
		}
		policyRef := nsMeshrole + "/p-00000"
		if v.name == variantNative {
			policyRef = nsNative + "/p-00000"
		}
		patched := got.Labels[policy.IstioInjectKey] == "false" && got.Annotations[prefix+policy.PolicyAnnotation] == policyRef
		if v.wants != nil {
			patched = hasMetadata(got.Labels, got.Annotations, *v.wants)
		}
		if patched != v.patched {
			return 0, fmt.Errorf("pod %s/%s: %s label %q, annotations %v: the %s variant did not go through the webhooks it should",
				v.namespace, pod.Name, policy.IstioInjectKey, got.Labels[policy.IstioInjectKey], got.Annotations, v.name)
		}
		if v.name == variantFloor || strings.HasPrefix(v.name, variantFloorPatch) {
			floorCalls.Add(1)
		}
		return d, nil
	}

	// runBlock creates count pods of v, numbered from first, creators at a
	// time, and returns their latencies.
	runBlock := func(v variant, first, count int) ([]time.Duration, error) {
		lat := make([]time.Duration, count)
		err := parallel(ctx, creators, count, func(i int) (err error) {
			lat[i], err = create(v, first+i)
			return err
		})
		return lat, err
	}

	res := map[string]*podCreateResult{}
	next := map[string]int{}
	for _, v := range variants {
		res[v.name] = &podCreateResult{Variant: v.name}
		if _, err := runBlock(v, 0, warmup); err != nil {
			return nil, err
		}
		next[v.name] = warmup
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for done := 0; done < n; done += block {
		for _, k := range rng.Perm(len(variants)) {
			v := variants[k]
			count := min(block, n-done)
			var lat []time.Duration
			spent, wall, err := procs.span(ctx, func() (err error) {
				lat, err = runBlock(v, next[v.name], count)
				return err
			})
			if err != nil {
				return nil, err
			}
			next[v.name] += count
			r := res[v.name]
			r.Latencies = append(r.Latencies, lat...)
			r.Wall += wall
			r.Spent = r.Spent.plus(spent)
		}
	}

	floorAfter, err := f.Served(ctx)
	if err != nil {
		return nil, err
	}
	if served := floorAfter - floorBefore; served < floorCalls.Load() {
		return nil, fmt.Errorf("the do-nothing webhook answered %d reviews for %d pod creates", served, floorCalls.Load())
	}
	for _, r := range res {
		slices.Sort(r.Latencies)
		r.Median, r.P99 = loadgen.Percentile(r.Latencies, 50), loadgen.Percentile(r.Latencies, 99)
	}
	return res, nil
}

// restWrites sums the client-go requests that change objects in a process's
// metrics (rest_client_requests_total with method POST, PUT, PATCH or
// DELETE).
func restWrites(metrics string) (float64, error) {
	total := 0.0
	for _, line := range strings.Split(metrics, "\n") {
		rest, ok := strings.CutPrefix(line, "rest_client_requests_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return 0, fmt.Errorf("%q: not a sample", line)
		}
		if !slices.ContainsFunc([]string{"POST", "PUT", "PATCH", "DELETE"}, func(m string) bool { return strings.Contains(labels, `method="`+m+`"`) }) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", line, err)
		}
		total += v
	}
	return total, nil
}

// podCreator is the client that creates the bench's pods and the pod they
// are made from (test/load's typical eureka-server pod).
func podCreator(h *harness.Harness) (kubernetes.Interface, *corev1.Pod, error) {
	cs, err := h.PodCreatorClient()
	if err != nil {
		return nil, nil, err
	}
	template, err := loadgen.TypicalPod("")
	return cs, template, err
}

// deletePods deletes the pods of the variants' namespaces, so that the
// phases after the pod creates measure what they always did.
func deletePods(ctx context.Context, h *harness.Harness, variants []variant) error {
	for _, v := range variants {
		if err := h.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(v.namespace)); err != nil {
			return fmt.Errorf("deleting the pods of %s: %w", v.namespace, err)
		}
	}
	return nil
}

// createNamespaces creates the namespaces of the pod-create comparison;
// meshrole's has the throughput phase's policies.
func createNamespaces(ctx context.Context, h *harness.Harness, variants []variant) error {
	for _, v := range variants {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: v.namespace}}
		switch {
		case v.namespace == nsMeshrole || v.namespace == nsNative:
			ns.Labels = map[string]string{policy.EnabledNamespaceLabel: "true"}
		case v.name == variantFloor || strings.HasPrefix(v.name, variantFloorPatch):
			ns.Labels = map[string]string{floorLabel: floorLabelValue(v)}
		}
		if err := h.Client.Create(ctx, ns); err != nil && !isAlreadyExists(err) {
			return err
		}
	}
	return nil
}
