package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// A policy and a workload that name no namespace: where they are decided
// shows which namespace the plugin took.
const unnamespaced = `apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata: {name: peers}
spec:
  workloads:
  - name: db
    selector: {matchLabels: {app: db}}
    role: peer-stateful
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres}]}
`

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeconfigWithNamespace is a kubeconfig whose two contexts set namespaces;
// its current context is "home".
func kubeconfigWithNamespace(t *testing.T) string {
	return writeFile(t, t.TempDir(), "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts:
- {name: home, context: {cluster: c, user: u, namespace: from-home}}
- {name: work, context: {cluster: c, user: u, namespace: from-work}}
current-context: home
`)
}

// explainJSON runs explain -o json and returns what it printed.
func explainJSON(t *testing.T, args ...string) []Explanation {
	t.Helper()
	r := runPlugin("", append([]string{"explain", "-o", "json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("explain %q: exit %d: %s", args, r.code, r.stderr)
	}
	var out []Explanation
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("explain %q printed no JSON: %v\n%s", args, err, r.stdout)
	}
	return out
}

// Objects that name no namespace are decided in -n's, else the current
// context's, else default; --context picks the context.
func TestExplainNamespace(t *testing.T) {
	file := writeFile(t, t.TempDir(), "db.yaml", unnamespaced)
	kubeconfig := kubeconfigWithNamespace(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-f", file}, "default"},
		{[]string{"-f", file, "-n", "shop"}, "shop"},
		{[]string{"-f", file, "--namespace", "shop"}, "shop"},
		{[]string{"-f", file, "--kubeconfig", kubeconfig}, "from-home"},
		{[]string{"-f", file, "--kubeconfig", kubeconfig, "--context", "work"}, "from-work"},
		{[]string{"-f", file, "--kubeconfig", kubeconfig, "--context", "work", "-n", "shop"}, "shop"},
	} {
		out := explainJSON(t, tt.args...)
		if len(out) != 1 {
			t.Fatalf("%q: %d explanations, want 1", tt.args, len(out))
		}
		if e := out[0]; e.Namespace != tt.want || e.Policy != tt.want+"/peers" || e.Role != "peer-stateful" {
			t.Errorf("%q: StatefulSet decided in %q by %q (%s), want namespace %q, policy %s/peers, peer-stateful",
				tt.args, e.Namespace, e.Policy, e.Role, tt.want, tt.want)
		}
	}
}

// -f reads files, directories (-R for their subdirectories) and stdin.
func TestExplainFiles(t *testing.T) {
	dir := t.TempDir()
	policyAndDB := strings.SplitN(unnamespaced, "---\n", 2)
	writeFile(t, dir, "policy.yaml", policyAndDB[0])
	writeFile(t, dir, "nested/db.yaml", policyAndDB[1])
	writeFile(t, dir, "nested/README.md", "not a manifest")

	if out := explainJSON(t, "-f", dir); len(out) != 0 {
		t.Errorf("-f DIR read a subdirectory without -R: %+v", out)
	}
	out := explainJSON(t, "-f", dir, "-R")
	if len(out) != 1 || out[0].Name != "db" || out[0].Policy != "default/peers" {
		t.Errorf("-f DIR -R: %+v, want StatefulSet db decided by default/peers", out)
	}

	// resource.Builder reads - from the process's standard input.
	stdin := writeFile(t, dir, "stdin.yaml", policyAndDB[1])
	f, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	saved := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = saved }()
	out = explainJSON(t, "-f", filepath.Join(dir, "policy.yaml"), "-f", "-")
	if len(out) != 1 || out[0].Name != "db" || out[0].Policy != "default/peers" {
		t.Errorf("-f -: %+v, want StatefulSet db decided by default/peers", out)
	}
}

// native's -o goes through kubectl's printers; refusals then go to stderr.
func TestNativePrinters(t *testing.T) {
	policies := "../../pkg/native/testdata/policies.yaml"
	r := runPlugin("", "native", "-f", policies, "-o", "name")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	names := strings.Fields(r.stdout)
	if len(names) != 10 || names[0] != "mutatingadmissionpolicy.admissionregistration.k8s.io/meshrole-bucket-02" ||
		names[1] != "mutatingadmissionpolicybinding.admissionregistration.k8s.io/meshrole-bucket-02" {
		t.Errorf("-o name printed %d names, want 10 starting with bucket 02's policy and binding:\n%s", len(names), r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "# refused: hold/slow-start: ") || strings.Contains(r.stdout, "refused") {
		t.Errorf("refusals: stderr %q, want them there and not on stdout", r.stderr)
	}

	r = runPlugin("", "native", "-f", policies, "-o", "yaml")
	var list struct {
		APIVersion, Kind string
		Items            []struct {
			APIVersion, Kind string
			Metadata         struct{ Name string }
		}
	}
	if err := yaml.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("-o yaml: %v\n%s", err, r.stdout)
	}
	if list.APIVersion != "v1" || list.Kind != "List" || len(list.Items) != 10 ||
		list.Items[0].APIVersion != "admissionregistration.k8s.io/v1" || list.Items[0].Kind != "MutatingAdmissionPolicy" ||
		list.Items[1].Kind != "MutatingAdmissionPolicyBinding" || list.Items[0].Metadata.Name != "meshrole-bucket-02" {
		t.Errorf("-o yaml: %+v, want a v1 List of 10 objects with their kinds", list)
	}

	r = runPlugin("", "native", "-f", policies, "-o", "jsonpath={.items[*].metadata.name}")
	if got := strings.Fields(r.stdout); len(got) != 10 || got[9] != "meshrole-cluster" {
		t.Errorf("-o jsonpath: %q", r.stdout)
	}

	r = runPlugin("", "native", "-f", policies, "-o", "wide")
	if r.code != 2 || !strings.Contains(r.stderr, `"wide"`) || r.stdout != "" {
		t.Errorf("-o wide: exit %d, stdout %q, stderr %q; want exit 2 naming the format", r.code, r.stdout, r.stderr)
	}
}

func TestAuditFlags(t *testing.T) {
	r := runPlugin("", "audit", "-n", "shop", "-A")
	if r.code != 2 || !strings.Contains(r.stderr, "-n shop and -A: pass one of them") {
		t.Errorf("audit -n -A: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runPlugin("", "audit", "-o", "wide")
	if r.code != 2 || !strings.Contains(r.stderr, "-o wide: use one of table, json, yaml") {
		t.Errorf("audit -o wide: exit %d, stderr %q", r.code, r.stderr)
	}
	// The kubeconfig's server refuses connections: the error says so, exit 2.
	r = runPlugin("", "audit", "--kubeconfig", kubeconfigWithNamespace(t), "--request-timeout", "2s")
	if r.code != 2 || !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("audit against a closed port: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestVersion(t *testing.T) {
	r := runPlugin("", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "kubectl-meshrole dev ") {
		t.Errorf("version: exit %d, %q", r.code, r.stdout)
	}
	r = runPlugin("", "version", "-o", "json")
	var v Version
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Version != "dev" || v.GoVersion == "" || v.Platform == "" {
		t.Errorf("version -o json: %v, %+v", err, v)
	}
}

// completion prints each shell's script, and the completions it asks for
// know the plugin's flags and the kubeconfig's contexts.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := runPlugin("", "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, "kubectl-meshrole") || !strings.Contains(r.stdout, "__complete") {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", shell, r.code, len(r.stdout), r.stderr)
		}
	}
	complete := func(args ...string) []string {
		t.Helper()
		r := runPlugin("", append([]string{"__complete"}, args...)...)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		return lines[:len(lines)-1] // the last line is cobra's directive
	}
	if got := complete(""); !slices.Equal(got, []string{
		"audit\tAgainst a live cluster: where meshrole's traps still are; exits 1 on findings",
		"completion\tGenerate the autocompletion script for the specified shell",
		"explain\tOffline: what the webhook would do to the pods of the workloads in the files",
		"help\tHelp about any command",
		"native\tOffline: the MutatingAdmissionPolicies native mode would keep for the policies in the files",
		"rollout\tRestart, without losing a quorum, only the pods that disagree with their verdict",
		"suggest\tFind the peer-replicating workloads and the clients that dial them, and write their policies",
		"version\tThe plugin's version",
	}) {
		t.Errorf("subcommands: %q", got)
	}
	if got := complete("explain", "-o", ""); !slices.Equal(got, []string{"table", "json", "yaml"}) {
		t.Errorf("explain -o: %q", got)
	}
	if got := complete("audit", "--kubeconfig", kubeconfigWithNamespace(t), "--context", ""); !slices.Equal(got, []string{"home", "work"}) {
		t.Errorf("--context: %q", got)
	}
}
