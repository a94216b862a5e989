package install_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/meshrole/meshrole/test/harness"
)

const (
	// releaseName makes the chart's full name "meshrole" (a release name
	// containing the chart name is used as is), so the ServiceAccount, the
	// Service and the Deployment are all "meshrole".
	releaseName      = "meshrole"
	releaseNamespace = "meshrole-system"
	// fullname, serviceAccount: what the chart derives from releaseName.
	fullname       = releaseName
	serviceAccount = fullname
	// The serving certificate's Secret: the one cert-manager issues
	// (certManager.enabled=true) and the one Helm generates (false).
	certManagerSecret = fullname + "-tls"
	generatedSecret   = fullname + "-generated-tls"
)

var (
	helmLogOnce sync.Once
	helmLogFile *os.File
	helmLogMu   sync.Mutex
)

// helmLog is Helm's debug log (what `helm --debug` prints), into the work
// directory.
func helmLog(format string, v ...any) {
	helmLogOnce.Do(func() {
		helmLogFile, _ = os.Create(filepath.Join(workDir, "helm.log"))
	})
	if helmLogFile == nil {
		return
	}
	helmLogMu.Lock()
	defer helmLogMu.Unlock()
	_, _ = fmt.Fprintf(helmLogFile, "%s "+strings.TrimSuffix(format, "\n")+"\n", append([]any{time.Now().Format(time.RFC3339Nano)}, v...)...)
}

// helmConfig is an action.Configuration for the shared API server, storing
// releases as Secrets (Helm's default driver) in namespace.
func (e *env) helmConfig(t *testing.T, namespace string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &e.Kubeconfig
	flags.Namespace = &namespace
	cacheDir := filepath.Join(workDir, "kube-cache")
	flags.CacheDir = &cacheDir
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, namespace, "secret", helmLog); err != nil {
		t.Fatalf("helm: %v", err)
	}
	return cfg
}

func (e *env) loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	chrt, err := loader.Load(e.ChartDir)
	if err != nil {
		t.Fatalf("loading chart %s: %v", e.ChartDir, err)
	}
	return chrt
}

// helmInstall is `helm install meshrole charts/meshrole -n meshrole-system
// --create-namespace` with vals, without --wait: no kubelet runs the pods.
func (e *env) helmInstall(t *testing.T, vals map[string]any) *release.Release {
	t.Helper()
	inst := action.NewInstall(e.helmConfig(t, releaseNamespace))
	inst.ReleaseName = releaseName
	inst.Namespace = releaseNamespace
	inst.CreateNamespace = true
	inst.Wait = false
	inst.Timeout = 2 * time.Minute
	start := time.Now()
	rel, err := inst.RunWithContext(t.Context(), e.loadChart(t), vals)
	if err != nil {
		t.Fatalf("helm install %s (values %v): %v", releaseName, vals, err)
	}
	t.Logf("helm install %s -n %s (values %v): revision %d, %s, in %v",
		releaseName, releaseNamespace, vals, rel.Version, rel.Info.Status, time.Since(start).Round(time.Millisecond))
	return rel
}

// helmUpgrade is `helm upgrade meshrole charts/meshrole` with vals.
func (e *env) helmUpgrade(t *testing.T, vals map[string]any) *release.Release {
	t.Helper()
	up := action.NewUpgrade(e.helmConfig(t, releaseNamespace))
	up.Namespace = releaseNamespace
	up.Wait = false
	up.Timeout = 2 * time.Minute
	rel, err := up.RunWithContext(t.Context(), releaseName, e.loadChart(t), vals)
	if err != nil {
		t.Fatalf("helm upgrade %s (values %v): %v", releaseName, vals, err)
	}
	t.Logf("helm upgrade %s (values %v): revision %d, %s", releaseName, vals, rel.Version, rel.Info.Status)
	return rel
}

// helmUninstall is `helm uninstall meshrole -n meshrole-system --wait`.
func (e *env) helmUninstall(t *testing.T) {
	t.Helper()
	un := action.NewUninstall(e.helmConfig(t, releaseNamespace))
	un.Wait = true
	un.Timeout = time.Minute
	res, err := un.Run(releaseName)
	if err != nil {
		t.Fatalf("helm uninstall %s: %v", releaseName, err)
	}
	if res.Info != "" {
		t.Logf("helm uninstall: %s", res.Info)
	}
}

// manifestObjects decodes a release's manifest (or a hook's).
func manifestObjects(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := harness.DecodeYAML([]byte(manifest))
	if err != nil {
		t.Fatalf("decoding the release manifest: %v", err)
	}
	return objs
}

func objectID(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetKind() + " " + u.GetName()
	}
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
}

func objectIDs(objs []*unstructured.Unstructured) []string {
	ids := make([]string, 0, len(objs))
	for _, u := range objs {
		ids = append(ids, objectID(u))
	}
	sort.Strings(ids)
	return ids
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	m := map[string]int{}
	for _, u := range objs {
		m[u.GetKind()]++
	}
	return m
}
