package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error
)

// pluginBinary builds kubectl-meshrole once for the suite, into a directory
// of its own that can go on PATH.
func pluginBinary(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		pluginDir = filepath.Join(h.WorkDir, "plugin")
		build := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "kubectl-meshrole"), "./cmd/kubectl-meshrole")
		build.Dir = h.Root
		if out, err := build.CombinedOutput(); err != nil {
			pluginErr = errors.New("building kubectl-meshrole: " + err.Error() + "\n" + string(out))
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return filepath.Join(pluginDir, "kubectl-meshrole")
}

// pluginRun is what one run of the plugin printed and its exit code.
type pluginRun struct {
	stdout, stderr string
	code           int
}

// kubectlMeshrole runs `kubectl meshrole args...` as a user would: the
// suite's kubectl, finding the plugin on PATH.
func kubectlMeshrole(t *testing.T, args ...string) pluginRun {
	t.Helper()
	pluginBinary(t)
	cmd := exec.Command(filepath.Join(h.K8sBin, "kubectl"), append([]string{"meshrole"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	code := 0
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatal(err)
		}
		code = exit.ExitCode()
	}
	t.Logf("kubectl meshrole %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return pluginRun{stdout.String(), stderr.String(), code}
}

// contextKubeconfig copies the suite's kubeconfig with a context named
// meshrole-e2e (the suite's cluster and user, default namespace ctxNamespace)
// and makes an unreachable cluster the current context, so that only
// --context meshrole-e2e reaches the API server.
func contextKubeconfig(t *testing.T, ctxNamespace string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(h.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	current := cfg.Contexts[cfg.CurrentContext]
	if current == nil {
		t.Fatalf("the suite's kubeconfig has no current context %q", cfg.CurrentContext)
	}
	cfg.Contexts["meshrole-e2e"] = &clientcmdapi.Context{Cluster: current.Cluster, AuthInfo: current.AuthInfo, Namespace: ctxNamespace}
	cfg.Clusters["unreachable"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	cfg.Contexts["unreachable"] = &clientcmdapi.Context{Cluster: "unreachable", AuthInfo: current.AuthInfo}
	cfg.CurrentContext = "unreachable"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// A policy and a workload that name no namespace, and a pod with the
// workload's labels to create for real.
const pluginManifests = `apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata: {name: peers}
spec:
  workloads:
  - name: db
    selector: {matchLabels: {app: db}}
    role: peer-stateful
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  containers: [{name: db, image: postgres}]
`

// testPlugin runs every kubectl-meshrole subcommand through kubectl with
// kubectl's -n, --context and -o yaml: explain and native decide offline in
// the namespace -n (or the context) names, and what they print is what the
// API server then does and accepts; audit reads the context's cluster and
// only -n's namespace.
func testPlugin(t *testing.T) {
	ctx := scenario(t, 90*time.Second)
	const ns, other, off = "e2e-plugin", "e2e-plugin-other", "e2e-plugin-off"
	kubeconfig := contextKubeconfig(t, "e2e-plugin-ctx")
	kubeFlags := []string{"--kubeconfig", kubeconfig, "--context", "meshrole-e2e"}
	files := filepath.Join(t.TempDir(), "db.yaml")
	if err := os.WriteFile(files, []byte(pluginManifests), 0o600); err != nil {
		t.Fatal(err)
	}
	createNamespace(t, ctx, ns, true, nil)
	createNamespace(t, ctx, other, true, nil)
	createNamespace(t, ctx, off, false, nil)

	t.Run("explain", func(t *testing.T) {
		r := kubectlMeshrole(t, append([]string{"explain", "-f", files, "-n", ns, "-o", "yaml"}, kubeFlags...)...)
		var out []struct {
			Kind, Name, Namespace, Role, Policy string
			Labels, Annotations                 []struct{ Key, After string }
		}
		if err := yaml.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 {
			t.Fatalf("exit %d, %v", r.code, err)
		}
		if len(out) != 1 || out[0].Namespace != ns || out[0].Policy != ns+"/peers" || out[0].Role != "peer-stateful" {
			t.Fatalf("explained %+v, want Pod db-0 decided in %s by %s/peers, peer-stateful", out, ns, ns)
		}
		// What explain printed is what the webhook does to the pod.
		applyYAML(t, ctx, ns, strings.Split(pluginManifests, "---\n")[0])
		pod := newPod(ns, "db-0", map[string]string{"app": "db"}, nil)
		if err := h.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		predicted := 0
		for _, c := range out[0].Labels {
			predicted++
			if pod.Labels[c.Key] != c.After {
				t.Errorf("label %s: explain said %q, the API server stored %q", c.Key, c.After, pod.Labels[c.Key])
			}
		}
		for _, c := range out[0].Annotations {
			predicted++
			if pod.Annotations[c.Key] != c.After {
				t.Errorf("annotation %s: explain said %q, the API server stored %q", c.Key, c.After, pod.Annotations[c.Key])
			}
		}
		if predicted == 0 {
			t.Error("explain predicted no change for a peer-stateful pod")
		}

		// Without -n, the namespace of --context's context.
		r = kubectlMeshrole(t, append([]string{"explain", "-f", files, "-o", "yaml"}, kubeFlags...)...)
		if !strings.Contains(r.stdout, "policy: e2e-plugin-ctx/peers") {
			t.Errorf("without -n: want the pod decided in the context's namespace e2e-plugin-ctx")
		}
	})

	t.Run("native", func(t *testing.T) {
		r := kubectlMeshrole(t, append([]string{"native", "-f", files, "-n", ns, "-o", "yaml"}, kubeFlags...)...)
		var list unstructured.UnstructuredList
		if err := yaml.Unmarshal([]byte(r.stdout), &list.Object); err != nil || r.code != 0 {
			t.Fatalf("exit %d, %v", r.code, err)
		}
		items, _ := list.Object["items"].([]any)
		if list.GetKind() != "List" || len(items) != 2 || !strings.Contains(r.stdout, `"e2e-plugin/peers"`) {
			t.Fatalf("want a List of one MutatingAdmissionPolicy and its binding deciding e2e-plugin/peers")
		}
		// The API server accepts every object as printed (server-side dry run).
		for _, item := range items {
			m, _ := item.(map[string]any)
			obj := &unstructured.Unstructured{Object: m}
			if err := h.Client.Create(ctx, obj, client.DryRunAll); err != nil {
				t.Errorf("%s %s: the API server refuses it: %v", obj.GetKind(), obj.GetName(), err)
			}
		}
	})

	t.Run("audit", func(t *testing.T) {
		// Pods admitted before the policy that now makes them peers: stale
		// in both enabled namespaces.
		for _, namespace := range []string{ns, other} {
			p := newPod(namespace, "stale-0", map[string]string{"app": "stale"}, nil)
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "istio/proxyv2"})
			if err := h.Client.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
			applyYAML(t, ctx, namespace, `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata: {name: stale}
spec:
  workloads:
  - name: stale
    selector: {matchLabels: {app: stale}}
    role: peer-stateful
`)
		}
		audit := func(args ...string) ([]finding, pluginRun) {
			t.Helper()
			r := kubectlMeshrole(t, append(append([]string{"audit", "-o", "yaml"}, kubeFlags...), args...)...)
			var findings []finding
			if err := yaml.Unmarshal([]byte(r.stdout), &findings); err != nil {
				t.Fatalf("audit %q printed no YAML: %v", args, err)
			}
			return findings, r
		}
		objects := func(findings []finding) []string {
			var out []string
			for _, f := range findings {
				if strings.Contains(f.Object, "/e2e-plugin") {
					out = append(out, f.Check+" "+f.Object)
				}
			}
			slices.Sort(out)
			return out
		}

		findings, r := audit("-n", ns)
		if got := objects(findings); r.code != 1 || !slices.Equal(got, []string{"needs-restart Pod/e2e-plugin/stale-0"}) {
			t.Errorf("-n %s: exit %d, findings %q; want exit 1 and only its stale pod", ns, r.code, got)
		}
		for _, f := range findings {
			if strings.HasPrefix(f.Object, "Pod/") && !strings.HasPrefix(f.Object, "Pod/"+ns+"/") {
				t.Errorf("-n %s reported another namespace: %s %s", ns, f.Check, f.Object)
			}
		}
		findings, r = audit("-A")
		want := []string{"needs-restart Pod/e2e-plugin-other/stale-0", "needs-restart Pod/e2e-plugin/stale-0"}
		if got := objects(findings); r.code != 1 || !slices.Equal(got, want) {
			t.Errorf("-A: exit %d, findings %q; want exit 1 and %q", r.code, got, want)
		}
		_, r = audit("-n", off)
		if !strings.Contains(r.stderr, "namespace e2e-plugin-off is not labelled meshrole.io/enabled=true") {
			t.Errorf("-n %s: stderr %q, want the warning that the webhook never sees it", off, r.stderr)
		}

		// --as: the user it names is who reads the cluster.
		findings, r = audit("-n", ns, "--as", "jane", "--as-group", "system:masters")
		if got := objects(findings); r.code != 1 || !slices.Equal(got, []string{"needs-restart Pod/e2e-plugin/stale-0"}) {
			t.Errorf("--as jane --as-group system:masters: exit %d, findings %q", r.code, got)
		}
		r = kubectlMeshrole(t, append([]string{"audit", "-n", ns, "--as", "nobody"}, kubeFlags...)...)
		if r.code != 2 || !strings.Contains(r.stderr, `"nobody"`) || !strings.Contains(r.stderr, "forbidden") {
			t.Errorf("--as nobody: exit %d, stderr %q; want exit 2 and nobody forbidden", r.code, r.stderr)
		}
		// Without --context, the current context's unreachable cluster.
		r = kubectlMeshrole(t, "audit", "-n", ns, "--kubeconfig", kubeconfig, "--request-timeout", "5s")
		if r.code != 2 || !strings.Contains(r.stderr, "127.0.0.1:1") {
			t.Errorf("without --context: exit %d, stderr %q; want exit 2 naming the unreachable server", r.code, r.stderr)
		}
	})

	t.Run("version", func(t *testing.T) {
		r := kubectlMeshrole(t, append([]string{"version", "-n", ns, "-o", "yaml"}, kubeFlags...)...)
		var v struct{ Version, GoVersion, Platform string }
		if err := yaml.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 || v.Version == "" || v.Platform == "" {
			t.Errorf("exit %d, %v, %+v", r.code, err, v)
		}
	})

}
