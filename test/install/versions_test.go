package install_test

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// nativeSupport reports whether the shared API server serves
// MutatingAdmissionPolicy in admissionregistration.k8s.io/v1 (Kubernetes
// 1.36 and later), and the server's version. It reads discovery itself rather
// than through pkg/native, whose check TestNativeModeRefusedOnOlderAPIServer
// tests.
func (e *env) nativeSupport(t *testing.T) (served bool, version string) {
	t.Helper()
	v, err := e.Clientset.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("API server version: %v", err)
	}
	list, err := e.Clientset.Discovery().ServerResourcesForGroupVersion("admissionregistration.k8s.io/v1")
	if err != nil {
		t.Fatalf("discovery of admissionregistration.k8s.io/v1: %v", err)
	}
	for _, r := range list.APIResources {
		if r.Name == "mutatingadmissionpolicies" {
			return true, v.GitVersion
		}
	}
	return false, v.GitVersion
}

// skipWithoutNative skips a test of native mode on an API server that cannot
// run it; TestNativeModeRefusedOnOlderAPIServer runs there instead.
func (e *env) skipWithoutNative(t *testing.T) {
	t.Helper()
	if served, version := e.nativeSupport(t); !served {
		t.Skipf("native mode needs Kubernetes 1.36 or later; this API server is %s (TestNativeModeRefusedOnOlderAPIServer proves the refusal here)", version)
	}
}

// TestNativeModeRefusedOnOlderAPIServer installs the chart with mode=native on
// an API server older than 1.36 and runs the server as the Deployment would:
// it must exit at once, non-zero, naming the Kubernetes version native mode
// needs and this server's, before it takes the leader lease or writes
// anything; never run with no policy enforced.
func TestNativeModeRefusedOnOlderAPIServer(t *testing.T) {
	e := controlPlane(t)
	served, version := e.nativeSupport(t)
	if served {
		t.Skipf("this API server (%s) serves MutatingAdmissionPolicy: TestInstallNativeMode runs native mode here", version)
	}
	e.cleanSlateAfter(t)
	vals := map[string]any{"mode": modeNative, "certManager": map[string]any{"enabled": false}}

	inst := action.NewInstall(e.helmConfig(t, releaseNamespace))
	inst.ReleaseName = releaseName
	inst.Namespace = releaseNamespace
	inst.CreateNamespace = true
	inst.Timeout = 2 * time.Minute
	if _, err := inst.RunWithContext(t.Context(), e.loadChart(t), vals); err != nil {
		// A chart that refuses native mode at install time (from
		// .Capabilities.KubeVersion) refuses it too, and earlier.
		if !strings.Contains(err.Error(), "1.36") {
			t.Fatalf("helm install (values %v) on %s failed without naming Kubernetes 1.36: %v", vals, version, err)
		}
		t.Logf("helm install refused native mode on %s: %v", version, err)
		return
	}

	d := installedDeployment(t, e)
	args := slices.DeleteFunc(slices.Clone(d.Spec.Template.Spec.Containers[0].Args), func(a string) bool {
		return strings.HasPrefix(a, "--metrics-bind-address=") || strings.HasPrefix(a, "--health-probe-bind-address=")
	})
	if !slices.Contains(args, "--mode=native") {
		t.Fatalf("the installed Deployment runs %q, not --mode=native", args)
	}
	args = append(args,
		"--kubeconfig="+serviceAccountKubeconfig(t, e, "native-refused"),
		"--leader-election-namespace="+releaseNamespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=0",
	)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, e.WebhookBin, args...).CombinedOutput()
	took := time.Since(start).Round(time.Millisecond)
	t.Logf("%s %s: %v after %v; output:\n%s", e.WebhookBin, strings.Join(args, " "), err, took, out)

	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("the server was still running after %v: native mode must refuse to start on %s", took, version)
	case !errors.As(err, &exit) || exit.ExitCode() <= 0:
		t.Fatalf("the server ended with %v, want a non-zero exit", err)
	}
	want := "native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this API server is " +
		version + "; use mode: webhook"
	if !strings.Contains(string(out), want) {
		t.Errorf("the server's output does not say %q", want)
	}
	// It refused before leader election: no lease was ever taken.
	var lease coordinationv1.Lease
	err = e.Client.Get(t.Context(), client.ObjectKey{Namespace: releaseNamespace, Name: "meshrole.io"}, &lease)
	if !apierrors.IsNotFound(err) {
		t.Errorf("Lease %s/meshrole.io: %v, want none (holder %v)", releaseNamespace, err, lease.Spec.HolderIdentity)
	}
}

// TestChartKubeVersion: the chart's kubeVersion admits exactly the versions
// the compatibility matrix proves, 1.32 and later, distributions' suffixes
// included, and Helm refuses older ones before rendering anything.
func TestChartKubeVersion(t *testing.T) {
	for _, tt := range []struct {
		version string
		ok      bool
	}{
		{"v1.31.9", false},
		{"v1.31.9-eks-1234abc", false},
		{"v1.32.0", true},
		{"v1.32.3-eks-1234abc", true},
		{"v1.34.4", true},
		{"v1.37.2", true},
	} {
		t.Run(tt.version, func(t *testing.T) {
			kv, err := chartutil.ParseKubeVersion(tt.version)
			if err != nil {
				t.Fatal(err)
			}
			_, err = renderChartFor(t, kv, nil)
			switch {
			case tt.ok && err != nil:
				t.Errorf("helm template for Kubernetes %s: %v", tt.version, err)
			case !tt.ok && err == nil:
				t.Errorf("helm template for Kubernetes %s rendered; the chart's kubeVersion should refuse it", tt.version)
			case !tt.ok && !strings.Contains(err.Error(), ">=1.32.0-0"):
				t.Errorf("helm template for Kubernetes %s: %v, want the chart's kubeVersion named", tt.version, err)
			}
		})
	}
}
