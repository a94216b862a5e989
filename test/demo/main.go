// Command demo is `make demo`: it tells, on a real control plane, how
// meshrole converges pods that ran before their policy. It starts
// kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok
// (fake nodes on which pods run and become Ready) with the meshrole webhook
// registered; applies examples/eureka's workloads first, without their
// policy, and lets them run; applies the policy and prints each pod with
// its drift (policy.DetectDrift, the check of `kubectl meshrole audit` and
// `rollout`); converges them with pkg/rollout, printing its progress; and
// prints the pods again with their verdicts.
//
// With KEEP=1 it keeps everything running until Ctrl-C, for kubectl. With
// MODE=native meshrole runs in native mode: no webhook, its policies compiled
// into MutatingAdmissionPolicies that the API server applies itself.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/rollout"
	"github.com/meshrole/meshrole/test/harness"
)

const (
	namespace = "eureka"
	// fakeNodes is how many kwok nodes run the pods.
	fakeNodes = 2
)

// workloads are examples/eureka's, with the pods each runs.
var workloads = []struct {
	app  string
	pods int
}{{"eureka-server", 3}, {"eureka-client", 2}}

func main() {
	start := time.Now()
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("==> done in %.1fs\n", time.Since(start).Seconds())
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

// chapter starts one part of the story.
func chapter(n int, title string) {
	fmt.Printf("\n### %d. %s\n\n", n, title)
}

func run() (err error) {
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	if bin, err := harness.WebhookBinary(root); err == nil {
		if stale := harness.StaleSources(root, bin); len(stale) > 0 {
			fmt.Printf("warning: %s is older than %s (and %d more): run `make build`\n", bin, stale[0], len(stale)-1)
		}
	}

	mode := harness.Mode(os.Getenv("MODE"))
	switch mode {
	case "":
		mode = harness.ModeWebhook
	case harness.ModeWebhook, harness.ModeNative:
	default:
		return fmt.Errorf("MODE=%s: want %s or %s", mode, harness.ModeWebhook, harness.ModeNative)
	}

	chapter(0, "A cluster whose pods run, with meshrole")
	step("meshrole in %s mode", mode)
	h, err := harness.Start(ctx, harness.Options{
		Root: root, Mode: mode, Progress: func(s string) { step("%s", s) },
		// The disruption controller, so that evictions honour budgets.
		Controllers: harness.ClusterControllers,
	})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down")
		if stopErr := h.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()
	defer func() {
		if err != nil {
			h.KeepWorkDir = true
			fmt.Fprintf(os.Stderr, "%s(logs kept in %s)\n", h.Diagnostics(20), h.WorkDir)
		}
	}()
	step("starting kube-scheduler and kwok: %d fake nodes on which pods are scheduled and become Running and Ready", fakeNodes)
	cluster, err := h.StartCluster(ctx, fakeNodes)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			fmt.Fprint(os.Stderr, cluster.Diagnostics(20))
		}
		if stopErr := cluster.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()

	dir := filepath.Join(root, "examples", "eureka")
	manifests, err := readExample(dir)
	if err != nil {
		return err
	}

	chapter(1, "The workloads run before their policy")
	step("applying %s without %s: %s", relOrAbs(root, dir), strings.Join(manifests.policyFiles, ", "), strings.Join(manifests.otherFiles, ", "))
	started := time.Now()
	if err := h.Apply(ctx, "", manifests.others...); err != nil {
		return err
	}
	pods, err := readyPods(ctx, h)
	if err != nil {
		return err
	}
	step("%d pods Running and Ready after %.1fs; no policy decides them yet, so meshrole left them as their templates made them",
		len(pods), time.Since(started).Seconds())

	chapter(2, "The policy arrives: new pods get its verdict, the running ones have drifted")
	started = time.Now()
	if err := h.Apply(ctx, "", manifests.policies...); err != nil {
		return err
	}
	step("applied %s; meshrole enforces it (after %v) when a pod is created, and these pods were created before it",
		strings.Join(manifests.policyFiles, ", "), time.Since(started).Round(time.Millisecond))
	store, err := h.PolicyStore(ctx)
	if err != nil {
		return err
	}
	drift, err := driftOf(ctx, h, store, pods)
	if err != nil {
		return err
	}
	fmt.Println()
	if err := printTable(pods, drift); err != nil {
		return err
	}
	printDriftReasons(pods, drift)

	chapter(3, "Rollout: each drifted pod evicted and replaced, one at a time per owner")
	targets, err := rollout.Find(ctx, h.Client, store, rollout.Scope{Namespace: namespace})
	if err != nil {
		return err
	}
	plan := rollout.NewPlan(targets, rollout.PlanOptions{})
	step("the plan (pkg/rollout, as `kubectl meshrole rollout -n %s --dry-run` prints it):", namespace)
	if err := plan.Write(indented{os.Stdout}); err != nil {
		return err
	}
	step("rolling out: evict through the Eviction API, wait for the owner's replacement to be Ready with its verdict, then the next")
	runner := &rollout.Runner{
		Client: h.Client, Policies: store,
		Timeout: time.Minute, PollInterval: 200 * time.Millisecond, RetryInterval: time.Second,
		Progress: rollout.Lines(indented{os.Stdout}),
	}
	started = time.Now()
	result, err := runner.Run(ctx, plan)
	if err != nil {
		return fmt.Errorf("rollout: %w", err)
	}
	step("%d pods restarted in %.1fs", result.Restarted, time.Since(started).Seconds())

	chapter(4, "After the rollout: every pod carries its verdict, none has drifted")
	if pods, err = readyPods(ctx, h); err != nil {
		return err
	}
	if drift, err = driftOf(ctx, h, store, pods); err != nil {
		return err
	}
	if err := printTable(pods, drift); err != nil {
		return err
	}
	fmt.Println()
	for _, p := range pods {
		if len(drift[p.Name]) > 0 {
			return fmt.Errorf("pod %s has drifted after the rollout: %v", p.Name, drift[p.Name])
		}
	}

	if os.Getenv("KEEP") == "1" {
		step("KEEP=1: the control plane keeps running; press Ctrl-C to tear it down")
		kubectl := relOrAbs(root, filepath.Join(h.K8sBin, "kubectl"))
		fmt.Printf("    kubeconfig: %s\n", h.Kubeconfig)
		fmt.Printf("    try:        %s --kubeconfig %s get pods -n %s -o wide -L %s\n", kubectl, h.Kubeconfig, namespace, policy.IstioInjectKey)
		fmt.Printf("    nodes:      kwok's fake nodes %s\n", strings.Join(cluster.Nodes, ", "))
		fmt.Printf("    webhook log: %s\n", h.Webhook.LogPath())
		select {
		case <-ctx.Done():
			fmt.Println()
		case <-h.Webhook.Exited():
			return fmt.Errorf("the meshrole webhook exited (%s); see %s", h.Webhook.ExitStatus(), h.Webhook.LogPath())
		}
	}
	return nil
}

// example is examples/eureka split into its policies and everything else.
type example struct {
	policies, others        []*unstructured.Unstructured
	policyFiles, otherFiles []string
}

func readExample(dir string) (*example, error) {
	files, err := harness.ManifestFiles(dir)
	if err != nil {
		return nil, err
	}
	ex := &example{}
	for _, f := range files {
		objs, err := harness.ReadManifests(f)
		if err != nil {
			return nil, err
		}
		isPolicy := func(o *unstructured.Unstructured) bool {
			return o.GetKind() == "MeshRolePolicy" || o.GetKind() == "ClusterMeshRolePolicy"
		}
		if slices.ContainsFunc(objs, isPolicy) {
			ex.policyFiles = append(ex.policyFiles, filepath.Base(f))
		}
		if !slices.ContainsFunc(objs, isPolicy) || slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool { return !isPolicy(o) }) {
			ex.otherFiles = append(ex.otherFiles, filepath.Base(f))
		}
		for _, o := range objs {
			if isPolicy(o) {
				ex.policies = append(ex.policies, o)
			} else {
				ex.others = append(ex.others, o)
			}
		}
	}
	if len(ex.policies) == 0 {
		return nil, fmt.Errorf("no MeshRolePolicy in %s", dir)
	}
	return ex, nil
}

// readyPods waits for the workloads' pods to be Running and Ready, and
// returns them by name.
func readyPods(ctx context.Context, h *harness.Harness) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	for _, w := range workloads {
		got, err := h.WaitForReadyPods(ctx, namespace, map[string]string{"app": w.app}, w.pods, time.Minute)
		if err != nil {
			return nil, err
		}
		pods = append(pods, got...)
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// driftOf is each pod's drift from what the policies in store would give
// it now, decided by the one engine.
func driftOf(ctx context.Context, h *harness.Harness, store *policy.Store, pods []corev1.Pod) (map[string][]policy.Drift, error) {
	var ns corev1.Namespace
	if err := h.Client.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return nil, err
	}
	drift := map[string][]policy.Drift{}
	for _, p := range pods {
		d := store.Decide(policy.Input{Namespace: ns.Name, NamespaceLabels: labels.Set(ns.Labels), PodLabels: labels.Set(p.Labels)})
		drift[p.Name] = policy.DetectDrift(p.Labels, p.Annotations, d)
	}
	return drift, nil
}

func printTable(pods []corev1.Pod, drift map[string][]policy.Drift) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "POD\tNODE\tROLE\tPOLICY\tINJECT\tEXCLUDE-IN\tEXCLUDE-OUT\tDRIFT")
	for _, p := range pods {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			p.Name, p.Spec.NodeName,
			orDash(p.Annotations[policy.RoleAnnotation]),
			orDash(p.Annotations[policy.PolicyAnnotation]),
			orDash(p.Labels[policy.IstioInjectKey]),
			orDash(p.Annotations[policy.IstioExcludeInboundPorts]),
			orDash(p.Annotations[policy.IstioExcludeOutboundPorts]),
			orDash(reasons(drift[p.Name])))
	}
	return tw.Flush()
}

// printDriftReasons says what each reason in the table means for these
// pods: each distinct detail once, with the pods it applies to.
func printDriftReasons(pods []corev1.Pod, drift map[string][]policy.Drift) {
	type why struct {
		reason policy.DriftReason
		detail string
	}
	var order []why
	podsOf := map[why][]string{}
	for _, p := range pods {
		for _, d := range drift[p.Name] {
			w := why{d.Reason, d.Detail}
			if _, seen := podsOf[w]; !seen {
				order = append(order, w)
			}
			podsOf[w] = append(podsOf[w], p.Name)
		}
	}
	if len(order) == 0 {
		return
	}
	fmt.Println("\nwhy (policy.DetectDrift, the check behind `kubectl meshrole audit` and `rollout`):")
	for _, w := range order {
		fmt.Printf("  %s, %s:\n      %s\n", w.reason, strings.Join(podsOf[w], ", "), w.detail)
	}
}

func reasons(drift []policy.Drift) string {
	names := make([]string, len(drift))
	for i, d := range drift {
		names[i] = string(d.Reason)
	}
	return strings.Join(names, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// indented writes each line it is given indented, under a step.
type indented struct{ w *os.File }

func (i indented) Write(p []byte) (int, error) {
	text := strings.TrimSuffix(string(p), "\n")
	_, err := fmt.Fprint(i.w, "    "+strings.ReplaceAll(text, "\n", "\n    ")+"\n")
	return len(p), err
}

func relOrAbs(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}
