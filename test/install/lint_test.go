package install_test

import (
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/release"

	"github.com/meshrole/meshrole/test/harness"
)

// TestHelmLint is `helm lint --strict charts/meshrole` (the SDK's Lint
// action, which runs pkg/lint's rules: Chart.yaml, values against
// values.schema.json, every template rendered and parsed as YAML, and the
// rendered objects' metadata) in both certificate modes and in native mode,
// for Kubernetes 1.37.
func TestHelmLint(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	chartDir := filepath.Join(root, "charts", "meshrole")
	kubeVersion, err := chartutil.ParseKubeVersion("v1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	// helm lint --strict with vals, as the release would be installed.
	strictLint := func(vals map[string]any) *action.LintResult {
		lint := action.NewLint()
		lint.Strict = true
		lint.Namespace = releaseNamespace
		lint.KubeVersion = kubeVersion
		return lint.Run([]string{chartDir}, vals)
	}
	for _, tc := range []struct {
		name string
		vals map[string]any
	}{
		{"strict lint is clean with cert-manager (certManager.enabled=true, the default)", nil},
		{"strict lint is clean with Helm-generated certificates (certManager.enabled=false)", map[string]any{
			"certManager": map[string]any{"enabled": false},
		}},
		{"strict lint is clean in native mode (mode=native)", map[string]any{"mode": modeNative}},
		{"strict lint is clean in native mode with failurePolicy Ignore and one replica", map[string]any{
			"mode": modeNative, "replicaCount": 1, "webhook": map[string]any{"failurePolicy": "Ignore"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := strictLint(tc.vals)
			if res.TotalChartsLinted != 1 {
				t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
			}
			for _, msg := range res.Messages {
				if msg.Severity > support.InfoSev {
					t.Errorf("%s", msg)
				} else {
					t.Logf("%s", msg)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
		})
	}

	// The same lint run does catch a value the schema forbids.
	for _, tc := range []struct {
		name string
		vals map[string]any
	}{
		{"strict lint fails for a failurePolicy outside values.schema.json", map[string]any{"webhook": map[string]any{"failurePolicy": "Sometimes"}}},
		{"strict lint fails for a mode outside values.schema.json", map[string]any{"mode": "sidecar"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := strictLint(tc.vals)
			if len(res.Errors) == 0 {
				t.Fatalf("lint passed with values %v", tc.vals)
			}
			for _, err := range res.Errors {
				t.Logf("lint error (expected): %v", err)
			}
		})
	}
}

// renderChart renders the chart client-side, as `helm template meshrole
// charts/meshrole -n meshrole-system` with vals, for Kubernetes 1.37.
func renderChart(t *testing.T, vals map[string]any) (*release.Release, error) {
	t.Helper()
	return renderChartFor(t, &chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}, vals)
}

// renderChartFor is renderChart for the Kubernetes version kv
// (`helm template --kube-version`).
func renderChartFor(t *testing.T, kv *chartutil.KubeVersion, vals map[string]any) (*release.Release, error) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	chrt, err := loader.Load(filepath.Join(root, "charts", "meshrole"))
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.ReleaseName = releaseName
	inst.Namespace = releaseNamespace
	inst.KubeVersion = kv
	return inst.Run(chrt, vals)
}

// TestHelmTemplateGuards renders the chart client-side (`helm template`)
// with values its templates refuse through fail/required. `helm lint`
// cannot check these: in lint mode Helm's engine turns fail() and
// required() into INFO log lines and renders on.
func TestHelmTemplateGuards(t *testing.T) {
	t.Run("the defaults render", func(t *testing.T) {
		if _, err := renderChart(t, nil); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"webhook.name sorting after istio- is refused (meshrole would run after Istio's injector)",
			map[string]any{"webhook": map[string]any{"name": "meshrole"}}, `does not sort before "istio-"`},
		{"webhook.name istio-meshrole is refused", map[string]any{"webhook": map[string]any{"name": "istio-meshrole"}}, `does not sort before "istio-"`},
		{"serviceAccount.create=false without serviceAccount.name is refused",
			map[string]any{"serviceAccount": map[string]any{"create": false}}, "serviceAccount.name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(t, tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template with %v: error %v, want one containing %q", tc.vals, err, tc.want)
			}
			t.Logf("refused (expected): %v", err)
		})
	}
}
