package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
}

var variants = []variant{
	{variantNone, nsNone, "eureka-server", false},
	{variantFloor, nsFloor, "eureka-server", false},
	{variantFloorPatch, nsFloorPatch, "eureka-server", true},
	{variantMeshrole, nsMeshrole, "eureka-server", true},
	// A pod in meshrole's namespace that no policy matches: the webhook is
	// called and answers without a patch.
	{variantUnmatched, nsMeshrole, "no-policy-matches", false},
	{variantNative, nsNative, "eureka-server", true},
	{variantNativeFloor, nsNativeFloor, "eureka-server", true},
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

// registerFloors registers the do-nothing webhook twice, exactly as the
// harness registers meshrole (same rules, timeout, failure policy, HTTP/2 to
// a loopback URL), for namespaces labelled floorLabel=plain and =patch.
func registerFloors(ctx context.Context, h *harness.Harness, f *floorProcess) error {
	for _, r := range []struct{ value, url string }{{"plain", f.URL()}, {"patch", f.PatchURL()}} {
		cfg := h.WebhookConfiguration().DeepCopy()
		cfg.Name = "00-meshrole-bench-do-nothing-" + r.value
		wh := &cfg.Webhooks[0]
		wh.Name = "do-nothing-" + r.value + ".bench.meshrole.io"
		url := r.url
		wh.ClientConfig.URL = &url
		wh.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{floorLabel: r.value}}
		if err := h.Client.Create(ctx, cfg); err != nil {
			return err
		}
	}
	return nil
}

// waitForFloors dry-run creates pods in both do-nothing namespaces until the
// API server calls the do-nothing webhook for each (webhook configurations
// reach the admission chain asynchronously).
func waitForFloors(ctx context.Context, h *harness.Harness, f *floorProcess) error {
	for _, ns := range []string{nsFloor, nsFloorPatch} {
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

// podCreateResult is the latency of one variant's pod creates.
type podCreateResult struct {
	Variant   string
	Latencies []time.Duration // sorted
	Median    time.Duration
	P99       time.Duration
}

// measurePodCreates creates pods one at a time with one client and times
// each create. Variants alternate in blocks of block creates, the blocks of a
// round in random order (fixed seed): drift in the machine's load hits every
// variant alike, and the work a create sets off in the background (meshrole's
// status controller writing a policy's status after a matched pod) mostly
// lands on creates of the same variant. The first warmup creates of each
// variant are not counted. Each create is checked to have gone through the
// webhooks it should.
//
// floorPatchWants, when set, is what the do-nothing webhook's patch of
// another shape (-floor-patch-shape) must give each of its pods.
func measurePodCreates(ctx context.Context, h *harness.Harness, f *floorProcess, floorPatchWants *podMetadata, n, warmup, block int) (map[string]*podCreateResult, error) {
	if block <= 0 {
		return nil, errors.New("pod block must be positive")
	}
	cs, err := h.PodCreatorClient()
	if err != nil {
		return nil, err
	}
	template, err := loadgen.TypicalPod("")
	if err != nil {
		return nil, err
	}
	floorBefore, err := f.Served(ctx)
	if err != nil {
		return nil, err
	}
	floorCalls := int64(0)

	create := func(v variant, i int) (time.Duration, error) {
		pod := template.DeepCopy()
		pod.Namespace = v.namespace
		pod.Name = fmt.Sprintf("%s-%04d", v.app, i)
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
		if v.name == variantFloorPatch && floorPatchWants != nil {
			patched = hasMetadata(got.Labels, got.Annotations, *floorPatchWants)
		}
		if patched != v.patched {
			return 0, fmt.Errorf("pod %s/%s: %s label %q, annotations %v: the %s variant did not go through the webhooks it should",
				v.namespace, pod.Name, policy.IstioInjectKey, got.Labels[policy.IstioInjectKey], got.Annotations, v.name)
		}
		if v.name == variantFloor || v.name == variantFloorPatch {
			floorCalls++
		}
		return d, nil
	}

	lat := map[string][]time.Duration{}
	next := map[string]int{}
	for _, v := range variants {
		for range warmup {
			if _, err := create(v, next[v.name]); err != nil {
				return nil, err
			}
			next[v.name]++
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for done := 0; done < n; done += block {
		for _, k := range rng.Perm(len(variants)) {
			v := variants[k]
			for range min(block, n-done) {
				d, err := create(v, next[v.name])
				if err != nil {
					return nil, err
				}
				next[v.name]++
				lat[v.name] = append(lat[v.name], d)
			}
		}
	}

	floorAfter, err := f.Served(ctx)
	if err != nil {
		return nil, err
	}
	if served := floorAfter - floorBefore; served < floorCalls {
		return nil, fmt.Errorf("the do-nothing webhook answered %d reviews for %d pod creates", served, floorCalls)
	}
	res := map[string]*podCreateResult{}
	for name, l := range lat {
		slices.Sort(l)
		res[name] = &podCreateResult{Variant: name, Latencies: l, Median: loadgen.Percentile(l, 50), P99: loadgen.Percentile(l, 99)}
	}
	return res, nil
}

// createNamespaces creates the namespaces of the pod-create comparison;
// meshrole's has the throughput phase's policies.
func createNamespaces(ctx context.Context, h *harness.Harness) error {
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: nsNone}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsFloor, Labels: map[string]string{floorLabel: "plain"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsFloorPatch, Labels: map[string]string{floorLabel: "patch"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsMeshrole, Labels: map[string]string{policy.EnabledNamespaceLabel: "true"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsNative, Labels: map[string]string{policy.EnabledNamespaceLabel: "true"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsNativeFloor}},
	} {
		if err := h.Client.Create(ctx, ns); err != nil && !isAlreadyExists(err) {
			return err
		}
	}
	return nil
}
