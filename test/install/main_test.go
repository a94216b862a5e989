// Package install_test installs meshrole's Helm chart with the Helm SDK into a
// real kube-apiserver (envtest on the binaries of `make testenv`) and checks
// what a platform engineer relies on after `helm install`: the chart lints
// clean, every object it renders is accepted, the webhook's caBundle is the
// CA of the serving certificate in both certificate modes (cert-manager's real
// controllers and CA injector in-process, or Helm's generated CA), the
// service account can do exactly what the server needs, the installed webhook
// configuration routes pods to a real meshrole server, native mode's
// MutatingAdmissionPolicies (kept by the server with the chart's RBAC) mutate
// pods with no webhook at all, and `helm uninstall` removes what the chart
// and the server created. See README.md.
package install_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// workDir holds logs (control plane, cert-manager, Helm, the webhook),
// kubeconfigs and certificates; kept when a test fails.
var workDir string

// componentLog receives the logs of everything that runs in-process:
// cert-manager's controllers and CA injector (klog and controller-runtime
// loggers) and envtest.
var componentLog *os.File

func TestMain(m *testing.M) {
	var err error
	if workDir, err = os.MkdirTemp("", "meshrole-install-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if componentLog, err = os.Create(filepath.Join(workDir, "components.log")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	logger := fileLogger(componentLog)
	ctrllog.SetLogger(logger)
	klog.SetLogger(logger)

	code := m.Run()

	if sharedEnv != nil {
		if err := sharedEnv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the control plane: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	_ = componentLog.Close()
	if code == 0 {
		_ = os.RemoveAll(workDir)
	} else {
		fmt.Fprintf(os.Stderr, "logs kept in %s\n", workDir)
	}
	os.Exit(code)
}

// fileLogger is a logr.Logger writing one line per entry to f (info up to
// verbosity 1, and errors).
func fileLogger(f *os.File) logr.Logger {
	return funcr.New(func(prefix, args string) {
		if prefix != "" {
			_, _ = fmt.Fprintf(f, "%s: %s\n", prefix, args)
		} else {
			_, _ = fmt.Fprintln(f, args)
		}
	}, funcr.Options{Verbosity: 1, LogTimestamp: true})
}
