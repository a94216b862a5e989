package e2e

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

// Keys used in assertions, spelled out as the design (docs/design.md, "What a verdict writes")
// spells them, so the tests do not just echo the implementation's constants.
const (
	injectKey      = "sidecar.istio.io/inject"
	dataplaneKey   = "istio.io/dataplane-mode"
	excludeInKey   = "traffic.sidecar.istio.io/excludeInboundPorts"
	excludeOutKey  = "traffic.sidecar.istio.io/excludeOutboundPorts"
	roleKey        = "meshrole.io/role"
	policyKey      = "meshrole.io/policy"
	workloadKey    = "meshrole.io/workload"
	conflictKey    = "meshrole.io/conflict"
	dryRunKey      = "meshrole.io/dry-run"
	enabledNsLabel = "meshrole.io/enabled"
)

// scenario prepares a subtest: a context bounded to the subtest, and the
// webhook's log tail in the output if it fails.
func scenario(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("webhook log tail (%s):\n%s", h.Webhook.LogPath(), h.Webhook.LogTail(30))
		}
	})
	return ctx
}

func createNamespace(t *testing.T, ctx context.Context, name string, enabled bool, extra map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: maps.Clone(extra)}}
	if enabled {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[enabledNsLabel] = "true"
	}
	if err := h.Client.Create(ctx, ns); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// applyYAML applies manifests (see harness.Apply) into namespace.
func applyYAML(t *testing.T, ctx context.Context, namespace, manifests string) {
	t.Helper()
	objs, err := harness.DecodeYAML([]byte(manifests))
	if err != nil {
		t.Fatalf("decoding manifests: %v", err)
	}
	if err := h.Apply(ctx, namespace, objs...); err != nil {
		t.Fatal(err)
	}
}

// applyExample applies files of examples/eureka into namespace.
func applyExample(t *testing.T, ctx context.Context, namespace string, files ...string) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(h.Root, "examples", "eureka")
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(dir, f))
	}
	objs, err := h.ApplyFiles(ctx, namespace, paths...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func waitForPods(t *testing.T, ctx context.Context, namespace string, selector map[string]string, n int) []corev1.Pod {
	t.Helper()
	pods, err := h.WaitForPods(ctx, namespace, selector, n, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

func newPod(namespace, name string, lbls, annotations map[string]string) *corev1.Pod {
	p := harness.ProbePod(namespace, lbls)
	p.Annotations = annotations
	if name != "" {
		p.GenerateName = ""
		p.Name = name
	} else {
		p.GenerateName = "e2e-"
	}
	return p
}

// meshKeys keeps the keys of Istio's and meshrole's domains.
func meshKeys(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		prefix, _, ok := strings.Cut(k, "/")
		if ok && (prefix == "meshrole.io" || prefix == "istio.io" || strings.HasSuffix(prefix, ".istio.io")) {
			out[k] = v
		}
	}
	return out
}

// expectPod asserts what the API server stored on pod: its Istio and
// meshrole labels are exactly meshLabels, every other label in keep is
// unchanged, and its annotations are exactly annotations.
func expectPod(t *testing.T, pod *corev1.Pod, keep, meshLabels, annotations map[string]string) {
	t.Helper()
	if d := diff(meshKeys(pod.Labels), meshLabels); d != "" {
		t.Errorf("pod %s/%s: Istio/meshrole labels differ (-got +want):\n%s", pod.Namespace, pod.Name, d)
	}
	for k, v := range keep {
		if _, mesh := meshLabels[k]; mesh {
			continue
		}
		if pod.Labels[k] != v {
			t.Errorf("pod %s/%s: label %s = %q, want %q (kept from the template)", pod.Namespace, pod.Name, k, pod.Labels[k], v)
		}
	}
	if d := diff(pod.Annotations, annotations); d != "" {
		t.Errorf("pod %s/%s: annotations differ (-got +want):\n%s", pod.Namespace, pod.Name, d)
	}
}

// diff describes how two string maps differ; "" when equal (nil == empty).
func diff(got, want map[string]string) string {
	var b strings.Builder
	keys := slices.Sorted(maps.Keys(merge(got, want)))
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case gok && !wok:
			fmt.Fprintf(&b, "  - %s: %q\n", k, g)
		case !gok && wok:
			fmt.Fprintf(&b, "  + %s: %q\n", k, w)
		case g != w:
			fmt.Fprintf(&b, "  - %s: %q\n  + %s: %q\n", k, g, k, w)
		}
	}
	return b.String()
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func containsAny(msgs []string, sub string) bool {
	return slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, sub) })
}

// loadNamespace creates the enabled namespace ns with the policies of
// policyYAML in it (none when empty) and returns an AdmissionReview of a
// typical pod there, to send as load.
func loadNamespace(t *testing.T, ctx context.Context, ns, policyYAML string) []byte {
	t.Helper()
	createNamespace(t, ctx, ns, true, nil)
	if policyYAML != "" {
		applyYAML(t, ctx, ns, policyYAML)
	}
	body, err := loadgen.TypicalReview(ns)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// backgroundLoad is a load generator running against the webhook.
type backgroundLoad struct {
	done   chan struct{}
	result loadgen.Result
	err    error
}

// startLoad runs loadgen.Run with opts in the background until its bounds
// or ctx end it. The load goes to the suite's webhook unless opts names a
// URL or Targets, trusting the suite's CA unless opts has RootCAs.
func startLoad(ctx context.Context, opts loadgen.Options) *backgroundLoad {
	if opts.URL == "" && opts.Targets == nil {
		opts.URL = h.Webhook.URL()
	}
	if opts.RootCAs == nil {
		opts.RootCAs = x509.NewCertPool()
		opts.RootCAs.AppendCertsFromPEM(h.Certs.CAPEM)
	}
	opts.ServerName = "127.0.0.1"
	l := &backgroundLoad{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.result, l.err = loadgen.Run(ctx, opts)
	}()
	return l
}

// wait returns what the load measured once it has ended; a load its context
// stopped is not a failure.
func (l *backgroundLoad) wait(t *testing.T) loadgen.Result {
	t.Helper()
	<-l.done
	if l.err != nil && !errors.Is(l.err, context.Canceled) {
		t.Fatal(l.err)
	}
	return l.result
}
