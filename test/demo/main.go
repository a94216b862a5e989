// Command demo is `make demo`: it starts a real control plane (kube-apiserver,
// etcd, kube-controller-manager) with the meshrole webhook registered,
// applies examples/eureka, waits for the StatefulSet's and the Deployment's
// pods, and prints the verdict the API server stored on each of them.
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
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/test/harness"
)

const namespace = "eureka"

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
	step("meshrole in %s mode", mode)
	h, err := harness.Start(ctx, harness.Options{Root: root, Mode: mode, Progress: func(s string) { step("%s", s) }})
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

	dir := filepath.Join(root, "examples", "eureka")
	step("applying examples/eureka (%s)", strings.Join(baseNames(dir), ", "))
	if _, err := h.ApplyDir(ctx, dir, ""); err != nil {
		return err
	}

	step("waiting for 5 pods (3 eureka-server, 2 eureka-client)")
	var pods []corev1.Pod
	for _, w := range []struct {
		app string
		n   int
	}{{"eureka-server", 3}, {"eureka-client", 2}} {
		got, err := h.WaitForPods(ctx, namespace, map[string]string{"app": w.app}, w.n, 60*time.Second)
		if err != nil {
			return err
		}
		pods = append(pods, got...)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })

	fmt.Println()
	if err := printTable(pods); err != nil {
		return err
	}
	fmt.Println()

	if os.Getenv("KEEP") == "1" {
		step("KEEP=1: the control plane keeps running; press Ctrl-C to tear it down")
		fmt.Printf("    kubeconfig: %s\n", h.Kubeconfig)
		fmt.Printf("    try:        %s --kubeconfig %s get pods -n %s -L %s\n",
			relOrAbs(root, filepath.Join(h.K8sBin, "kubectl")), h.Kubeconfig, namespace, policy.IstioInjectKey)
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

func printTable(pods []corev1.Pod) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "NAMESPACE\tPOD\tROLE\tPOLICY\tINJECT\tEXCLUDE-IN\tEXCLUDE-OUT")
	for _, p := range pods {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			p.Namespace, p.Name,
			orDash(p.Annotations[policy.RoleAnnotation]),
			orDash(p.Annotations[policy.PolicyAnnotation]),
			orDash(p.Labels[policy.IstioInjectKey]),
			orDash(p.Annotations[policy.IstioExcludeInboundPorts]),
			orDash(p.Annotations[policy.IstioExcludeOutboundPorts]))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func baseNames(dir string) []string {
	files, _ := harness.ManifestFiles(dir)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
	}
	return names
}

func relOrAbs(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}
