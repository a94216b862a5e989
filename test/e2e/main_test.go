// Package e2e runs meshrole end to end: one real control plane
// (kube-apiserver, etcd, kube-controller-manager) for the whole suite, the
// webhook binary registered with a MutatingWebhookConfiguration, and pods made
// by the real StatefulSet and Deployment controllers. Every assertion is on
// what the API server stored.
//
//	make e2e    # = make testenv build && go test -count=1 -v ./test/e2e/...
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrole/meshrole/test/harness"
)

// h is the suite's one harness, started by TestMain.
var h *harness.Harness

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// envtest and the client log through controller-runtime; the webhook's
	// own log is in its log file (printed on failure).
	ctrllog.SetLogger(logr.Discard())

	root, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	if bin, err := harness.WebhookBinary(root); err == nil {
		if stale := harness.StaleSources(root, bin); len(stale) > 0 {
			fmt.Fprintf(os.Stderr, "WARNING: %s is older than %s (and %d more files): the suite tests a stale webhook; run `make build`\n",
				bin, stale[0], len(stale)-1)
		}
	}

	start := time.Now()
	h, err = harness.Start(context.Background(), harness.Options{
		Root:     root,
		Progress: func(step string) { fmt.Printf("e2e: %s (%.1fs)\n", step, time.Since(start).Seconds()) },
	})
	if err != nil {
		// Missing binaries are a failure, not a skip: the error names the
		// make target to run.
		fmt.Fprintf(os.Stderr, "FAIL: starting the e2e environment: %v\n", err)
		return 1
	}
	fmt.Printf("e2e: environment ready in %.1fs (work dir %s)\n", time.Since(start).Seconds(), h.WorkDir)

	code := m.Run()

	if code != 0 {
		h.KeepWorkDir = true
		fmt.Fprintf(os.Stderr, "\n%s\nlogs and kubeconfig kept in %s\n", h.Diagnostics(60), h.WorkDir)
	}
	if err := h.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: stopping the e2e environment: %v\n", err)
		code = 1
	}
	return code
}
