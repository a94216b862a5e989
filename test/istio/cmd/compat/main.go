// Command compat runs meshrole's compatibility matrix and writes it as one
// Markdown document, docs/compatibility.md, via `make compat`:
//
//   - Kubernetes: the core end-to-end scenarios (test/e2e, selected with
//     -run; native mode's proof where the API server serves
//     MutatingAdmissionPolicy) and the Helm install suite (test/install) on
//     each control plane given with -kubernetes;
//   - Istio: the Istio suite (test/istio) once per Istio version in
//     test/istio/injectors/versions.txt on the newest control plane, and the
//     oldest supported pairing (-oldest) that `make test` also runs.
//
// Each suite runs as `go test -json` in its own process; the document holds
// every test's and subtest's outcome per version, the date and the pins.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/istio/injector"
)

func main() {
	out := flag.String("out", "", "Markdown file to write (required)")
	timeout := flag.Duration("timeout", 20*time.Minute, "go test -timeout of each suite run")
	kube := flag.String("kubernetes", "", "the Kubernetes matrix: comma-separated control plane directories, oldest first, e.g. bin/k8s-1.32,bin/k8s (required)")
	oldest := flag.String("oldest", "", "the oldest supported pairing, also run by make test: <Istio version>@<Kubernetes major.minor>, e.g. 1.26.0@1.32")
	only := flag.String("only", "", "run only this part: kubernetes or istio (the document then holds only it)")
	flag.Parse()
	if err := run(*out, *kube, *oldest, *only, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "compat:", err)
		os.Exit(1)
	}
}

// coreScenarios selects the end-to-end scenarios run on every Kubernetes
// version: the admission scenarios of TestMeshrole (peer skipped and client
// ports excluded with the policy's status, unlabelled namespaces, the cold
// namespace cache, forged keys, BypassPorts, precedence and conflicts,
// DryRun, policy edits, client options, already-injected pods, the API
// server's validation of policies, selector status, namespace isolation)
// and, where the API server serves MutatingAdmissionPolicy, native mode's
// proof (TestNativeMatchesWebhook, every subtest). Left out: the examples,
// the kubectl plugin, TLS, certificate rotation and the load scenarios, which
// exercise meshrole's own server and plugin rather than the API server, and
// the rollout, drift and suggest scenarios, which need nodes and pods that
// run (kube-scheduler and kwok) and are proven on the newest pins by make
// test.
const (
	coreScenarios = `^TestMeshrole$/^(` +
		`eureka_seed|namespace_without_meshrole|a_labelled_namespace_and_at_once|meshrole\.io|BypassPorts|precedence|DryRun|` +
		`policy_edit|client_options|pod_already_injected|invalid_policies|a_selector_the_schema|a_MeshRolePolicy_never_decides)`
	coreScenariosNative = `^(TestMeshrole|TestNativeMatchesWebhook)$/^(` +
		`eureka_seed|namespace_without_meshrole|a_labelled_namespace_and_at_once|meshrole\.io|BypassPorts|precedence|DryRun|` +
		`policy_edit|client_options|pod_already_injected|invalid_policies|a_selector_the_schema|a_MeshRolePolicy_never_decides|` +
		`seed-|no_churn|policy_native_mode|a_namespace's_first)`
)

// nativeMinor is the first Kubernetes minor serving MutatingAdmissionPolicy
// in admissionregistration.k8s.io/v1, which native mode needs.
const nativeMinor = 36

// kubeVersion is one control plane of the Kubernetes matrix.
type kubeVersion struct {
	name string // 1.32
	dir  string // absolute
	// version is what its kube-apiserver --version says (v1.32.12).
	version string
}

// native reports whether native mode runs on this control plane.
func (k kubeVersion) native() bool {
	var major, minor int
	if _, err := fmt.Sscanf(k.name, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 1 || minor >= nativeMinor
}

// suite is one go test run: a suite on one version.
type suite struct {
	dir  string   // where go test runs
	args []string // packages and flags after -json
	env  []string
}

// result is one suite run's outcome.
type result struct {
	column string
	// module is the istio.io/istio version the injector reported; build is
	// how long building the injector took ("" when it was cached).
	module, build string
	// outcomes maps a test or subtest name to pass, fail or skip.
	outcomes map[string]string
	// skips holds the reason each skipped test logged.
	skips map[string]string
	// failure is why the suite did not run (it did not build, TestMain
	// failed, ...).
	failure string
	// errors holds, for each failed test, the lines it logged from the
	// suite's files (its t.Error and t.Fatal messages among them).
	errors   map[string][]string
	order    []string
	log      string
	output   []string
	duration time.Duration
}

// table is one part of the document: suites × versions.
type table struct {
	title, intro string
	results      []*result
}

func run(out, kube, oldest, only string, timeout time.Duration) error {
	if out == "" {
		return errors.New("-out is required")
	}
	if only != "" && only != "kubernetes" && only != "istio" {
		return fmt.Errorf("-only=%q: want kubernetes or istio", only)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	kubes, err := parseKubernetes(root, kube)
	if err != nil {
		return err
	}
	newest := kubes[len(kubes)-1]
	webhookBin, err := harness.WebhookBinary(root)
	if err != nil {
		return err
	}
	started := time.Now().UTC()
	goTest := func(timeout time.Duration, extra ...string) []string {
		return append([]string{"-count=1", "-timeout", timeout.String()}, extra...)
	}
	env := func(k kubeVersion, more ...string) []string {
		return append([]string{harness.EnvK8sBin + "=" + k.dir, harness.EnvWebhookBin + "=" + webhookBin}, more...)
	}

	var tables []table
	if only != "istio" {
		e2e := table{title: "Kubernetes: core end-to-end scenarios (test/e2e)", intro: e2eIntro}
		install := table{title: "Kubernetes: the Helm chart installed (test/install)", intro: installIntro}
		for _, k := range kubes {
			scenarios := coreScenarios
			if k.native() {
				scenarios = coreScenariosNative
			}
			r := runSuite(root, "e2e "+k.name, k.name, suite{
				dir: root, args: goTest(timeout, "-run", scenarios, "./test/e2e/"), env: env(k),
			})
			e2e.results = append(e2e.results, r)
			r = runSuite(root, "install "+k.name, k.name, suite{
				dir: filepath.Join(root, "test", "install"), args: goTest(timeout, "."), env: env(k),
			})
			install.results = append(install.results, r)
		}
		tables = append(tables, e2e, install)
	}
	var refused []string
	if only != "kubernetes" {
		versions, err := injector.Versions(root)
		if err != nil {
			return err
		}
		istio := table{title: "Istio: the Istio suite (test/istio)", intro: istioIntro}
		for _, v := range versions {
			column := v.Name
			if len(kubes) > 1 {
				column += " on " + newest.name
			}
			istio.results = append(istio.results, runSuite(root, "istio "+v.Name, column, suite{
				dir: filepath.Join(root, "test", "istio"), args: goTest(timeout, "."),
				env: env(newest, injector.EnvVersion+"="+v.Name),
			}))
		}
		if oldest != "" {
			name, kname, ok := strings.Cut(oldest, "@")
			i := slices.IndexFunc(kubes, func(k kubeVersion) bool { return k.name == kname })
			if !ok || i < 0 || !slices.ContainsFunc(versions, func(v injector.Version) bool { return v.Name == name }) {
				return fmt.Errorf("-oldest=%q: want <Istio version of versions.txt>@<major.minor of a -kubernetes control plane>", oldest)
			}
			istio.results = append(istio.results, runSuite(root, "istio "+name+" on "+kname, name+" on "+kname, suite{
				dir: filepath.Join(root, "test", "istio"), args: goTest(timeout, "."),
				env: env(kubes[i], injector.EnvVersion+"="+name),
			}))
		}
		tables = append(tables, istio)
		if refused, err = unavailable(root); err != nil {
			return err
		}
	}

	commit, _ := command(root, "git", "describe", "--always", "--dirty")
	pins, err := controlPlanePins(kubes)
	if err != nil {
		return err
	}
	doc := render(tables, kubes, pins, refused, started, commit)
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		return err
	}
	var failed []string
	for _, t := range tables {
		for _, r := range t.results {
			if r.failed() {
				failed = append(failed, t.title+", "+r.column)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "compat: wrote %s in %v\n", out, time.Since(started).Round(time.Second))
	if len(failed) > 0 {
		return fmt.Errorf("some runs fail: %s", strings.Join(failed, "; "))
	}
	return nil
}

// parseKubernetes reads -kubernetes and names each control plane after
// its kube-apiserver's major and minor version.
func parseKubernetes(root, flagValue string) ([]kubeVersion, error) {
	if flagValue == "" {
		return nil, errors.New("-kubernetes is required")
	}
	var kubes []kubeVersion
	for dir := range strings.SplitSeq(flagValue, ",") {
		if dir = strings.TrimSpace(dir); dir == "" {
			continue
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(root, dir)
		}
		out, err := command(root, filepath.Join(dir, "kube-apiserver"), "--version")
		if err != nil {
			return nil, fmt.Errorf("-kubernetes %s: %w (build it with make testenv-matrix)", dir, err)
		}
		m := apiserverVersion.FindStringSubmatch(out)
		if m == nil {
			return nil, fmt.Errorf("-kubernetes %s: kube-apiserver --version says %q", dir, out)
		}
		kubes = append(kubes, kubeVersion{name: m[2], dir: dir, version: m[1]})
	}
	if len(kubes) == 0 {
		return nil, errors.New("-kubernetes names no control plane")
	}
	return kubes, nil
}

// apiserverVersion matches kube-apiserver --version: "Kubernetes v1.32.12".
var apiserverVersion = regexp.MustCompile(`^Kubernetes (v(\d+\.\d+)\.\d+\S*)$`)

// controlPlanePins is what each control plane was built from: the
// k8s.io/kubernetes version and the etcd and kwok binaries' versions.
func controlPlanePins(kubes []kubeVersion) ([]string, error) {
	var pins []string
	for _, k := range kubes {
		etcd, err := command(k.dir, filepath.Join(k.dir, "etcd"), "--version")
		if err != nil {
			return nil, err
		}
		etcdVersion := ""
		for line := range strings.SplitSeq(etcd, "\n") {
			if v, ok := strings.CutPrefix(line, "etcd Version: "); ok {
				etcdVersion = v
			}
		}
		pins = append(pins, fmt.Sprintf("`%s`: `%s`, kube-apiserver, kube-controller-manager and kubectl `k8s.io/kubernetes %s`, etcd %s",
			k.name, relative(k.dir), k.version, etcdVersion))
	}
	return pins, nil
}

func relative(dir string) string {
	root, err := harness.RepoRoot()
	if err != nil {
		return dir
	}
	if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return dir
}

// unavailable reads test/istio/injectors/unavailable.txt: the Istio releases
// tried that cannot be built here, each with why.
func unavailable(root string) ([]string, error) {
	f, err := os.Open(filepath.Join(injector.InjectorsDir(root), "unavailable.txt"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, why, _ := strings.Cut(line, " ")
		out = append(out, fmt.Sprintf("`%s`: %s", name, strings.TrimSpace(why)))
	}
	return out, s.Err()
}

// testEvent is one line of go test -json.
type testEvent struct {
	Action string
	Test   string
	Output string
}

var (
	builtLine  = regexp.MustCompile(`built Istio \S+'s injector into \S+ in (\S+)`)
	moduleLine = regexp.MustCompile(`Istio's injector: istio\.io/istio (\S+),`)
	suiteLine  = regexp.MustCompile(`^\s+\w+_test\.go:\d+: `)
	// skipLine is a logged line, trimmed: the last one of a skipped test is
	// its t.Skip message.
	skipLine = regexp.MustCompile(`^\w+_test\.go:\d+: (.*)$`)
)

// runSuite runs go test -json and collects every test's outcome in the order
// the tests started; its output goes to bin/compat/<name>.log.
func runSuite(root, name, column string, s suite) *result {
	fmt.Fprintf(os.Stderr, "compat: %s ...\n", name)
	r := &result{column: column, outcomes: map[string]string{}, skips: map[string]string{}, errors: map[string][]string{}}
	r.log = filepath.Join("bin", "compat", strings.ReplaceAll(name, " ", "-")+".log")
	start := time.Now()
	defer func() {
		r.duration = time.Since(start)
		if err := writeLog(filepath.Join(root, r.log), r.output); err != nil && r.failure == "" {
			r.failure = err.Error()
		}
		fmt.Fprintf(os.Stderr, "compat: %s: %s in %v (log %s)\n", name, summary(r), r.duration.Round(time.Second), r.log)
	}()

	cmd := exec.CommandContext(context.Background(), "go", append([]string{"test", "-json"}, s.args...)...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.failure = err.Error()
		return r
	}
	if err := cmd.Start(); err != nil {
		r.failure = err.Error()
		return r
	}
	logged := map[string][]string{}
	var output strings.Builder
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev testEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			r.output = append(r.output, sc.Text()+"\n")
			continue
		}
		switch ev.Action {
		case "run":
			r.order = append(r.order, ev.Test)
		case "pass", "fail", "skip":
			if ev.Test == "" {
				break
			}
			r.outcomes[ev.Test] = ev.Action
			switch ev.Action {
			case "fail":
				r.errors[ev.Test] = logged[ev.Test]
			case "skip":
				r.skips[ev.Test] = skipReason(logged[ev.Test])
			}
		case "output":
			r.output = append(r.output, ev.Output)
			if ev.Test != "" && suiteLine.MatchString(ev.Output) {
				logged[ev.Test] = append(logged[ev.Test], strings.TrimSpace(ev.Output))
			}
			if ev.Test == "" {
				output.WriteString(ev.Output)
			}
			if m := builtLine.FindStringSubmatch(ev.Output); m != nil {
				r.build = m[1]
			}
			if m := moduleLine.FindStringSubmatch(ev.Output); m != nil && r.module == "" {
				r.module = m[1]
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	r.output = append(r.output, stderr.String())
	switch {
	case err != nil && len(r.outcomes) == 0:
		// The suite did not build, or TestMain failed before any test.
		r.failure = firstLines(output.String()+stderr.String(), 3)
	case err == nil && len(r.outcomes) == 0:
		r.failure = "no test ran"
	}
	return r
}

// skipReason is the message of a skipped test's t.Skip: its last logged line.
func skipReason(logged []string) string {
	if len(logged) == 0 {
		return ""
	}
	if m := skipLine.FindStringSubmatch(logged[len(logged)-1]); m != nil {
		return m[1]
	}
	return ""
}

// failed reports whether the suite did not run or a test failed.
func (r *result) failed() bool {
	if r.failure != "" {
		return true
	}
	for _, o := range r.outcomes {
		if o == "fail" {
			return true
		}
	}
	return false
}

func summary(r *result) string {
	if r.failure != "" {
		return "did not run: " + r.failure
	}
	n := map[string]int{}
	for _, o := range r.outcomes {
		n[o]++
	}
	return fmt.Sprintf("%d pass, %d fail, %d skip", n["pass"], n["fail"], n["skip"])
}

const (
	header = `# Compatibility: meshrole × Kubernetes × Istio

<!-- Generated by ` + "`make compat`" + ` (test/istio/cmd/compat); do not edit. -->

Every cell is a test or subtest that ran against real binaries of that version: kube-apiserver,
etcd and kube-controller-manager built from the module proxy into ` + "`bin/k8s-<minor>`" + `
(` + "`test/controlplane/build.sh --kubernetes`" + `), and Istio's injector built from each release's own
module (` + "`test/istio/injectors/<version>`" + `), registered with its own chart's webhook configuration.
` + "`skip`" + ` is a test that does not apply to that version (the reason is listed under the table).

**Supported**: Kubernetes 1.32 to 1.37 in webhook mode (the chart's ` + "`kubeVersion`" + `); native mode
(` + "`mode: native`" + `) on Kubernetes 1.36 and later only, where MutatingAdmissionPolicy is
` + "`admissionregistration.k8s.io/v1`" + `. On an older API server the server refuses to start in native mode,
exits non-zero and says "native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy
admissionregistration.k8s.io/v1); this API server is v1.34.4; use mode: webhook"
(` + "`TestNativeModeRefusedOnOlderAPIServer`" + `); it never runs with no policy enforced. Istio: 1.26.0 and
the development line (master, 1.31) on the newest Kubernetes, and 1.26.0 on the oldest; ` + "`make test`" + ` runs
the newest pins and that oldest pairing (Kubernetes 1.32 with Istio 1.26.0) on every change.

Behaviour that differs between versions, and how meshrole and the suites handle it:

- MutatingAdmissionPolicy is alpha (` + "`v1alpha1`" + `, off by default) in 1.32, beta (` + "`v1beta1`" + `, off by
  default) in 1.34 and GA (` + "`v1`" + `) from 1.36. Native mode uses ` + "`v1`" + ` only; before 1.36 it refuses to
  start (above). The native-mode tests are skipped there and the refusal is tested instead (install
  suite, Istio suite).
- The chart's ` + "`kubeVersion: \">=1.32.0-0\"`" + ` makes Helm refuse older clusters before rendering. ` + "`helm template`" + `
  renders for Helm's own default Kubernetes version, which older Helm clients set below 1.32: pass
  ` + "`--kube-version`" + ` there.
`
	e2eIntro = "`go test ./test/e2e -run '" + coreScenarios + "'`: the admission scenarios " +
		"(the API server calling the webhook for pods made by the real StatefulSet and Deployment controllers); " +
		"on Kubernetes 1.36 and later also native mode's proof against webhook mode, `TestNativeMatchesWebhook` with every subtest " +
		"(`-run '" + coreScenariosNative + "'`; before 1.36 native mode's refusal to start is proven by the install and Istio suites). " +
		"Left out: the examples, the kubectl plugin, TLS, certificate rotation and load, which exercise meshrole's own " +
		"server rather than the API server, and rollout, which needs running pods (kube-scheduler and kwok); " +
		"those run on the newest pins in `make test`."
	installIntro = "`go test ./test/install`: Helm lint and render, `helm install` with cert-manager's real controllers and CA injector " +
		"and with Helm-generated certificates, RBAC, upgrades between certificate modes, native mode where served, " +
		"and native mode's refusal to start where not."
	istioIntro = "`go test ./test/istio` with `MESHROLE_ISTIO_VERSION`: Istio's real injector of each version configured from its own " +
		"istiod chart (default profile) and registered with that chart's own webhook configuration; each Istio version on the newest " +
		"control plane, and the oldest supported pairing."
)

func render(tables []table, kubes []kubeVersion, pins, refused []string, started time.Time, commit string) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("\n## This run\n\n")
	fmt.Fprintf(&b, "- %s, meshrole `%s`, %s, %s/%s, %v in all\n", started.Format("2006-01-02 15:04 UTC"), commit,
		runtime.Version(), runtime.GOOS, runtime.GOARCH, time.Since(started).Round(time.Second))
	b.WriteString("- Control planes:\n")
	for _, p := range pins {
		fmt.Fprintf(&b, "  - %s\n", p)
	}
	for _, t := range tables {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", t.title, t.intro)
		renderTable(&b, t)
	}
	if len(refused) > 0 {
		b.WriteString("\n## Istio releases not built here\n\n")
		b.WriteString("Tried through the Go module proxy (`go list -m istio.io/istio@<tag>`) and left out of the matrix:\n\n")
		for _, r := range refused {
			fmt.Fprintf(&b, "- %s\n", r)
		}
	}
	return b.String()
}

func renderTable(b *strings.Builder, t table) {
	for _, r := range t.results {
		fmt.Fprintf(b, "- `%s`: %s in %v", r.column, summary(r), r.duration.Round(time.Second))
		if r.module != "" {
			build := "cached"
			if r.build != "" {
				build = "built in " + r.build
			}
			fmt.Fprintf(b, "; `istio.io/istio %s` (injector %s)", r.module, build)
		}
		b.WriteString("\n")
	}
	var order []string
	seen := map[string]bool{}
	for _, r := range t.results {
		for _, n := range r.order {
			if !seen[n] {
				seen[n] = true
				order = append(order, n)
			}
		}
	}
	rows := treeOf(order)
	b.WriteString("\n| scenario |")
	for _, r := range t.results {
		fmt.Fprintf(b, " %s |", r.column)
	}
	b.WriteString("\n|---|")
	for range t.results {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, row := range rows {
		label := "**" + row.label + "**"
		if row.parent != "" {
			label = strings.ReplaceAll(row.label, "_", " ")
		}
		fmt.Fprintf(b, "| %s |", strings.ReplaceAll(label, "|", `\|`))
		for _, r := range t.results {
			fmt.Fprintf(b, " %s |", cell(r, row))
		}
		b.WriteString("\n")
	}
	// Why tests were skipped, once per reason and test.
	var notes []string
	for _, name := range order {
		var reasons []string
		cols := map[string][]string{}
		for _, r := range t.results {
			if reason := r.skips[name]; r.outcomes[name] == "skip" && reason != "" {
				if cols[reason] == nil {
					reasons = append(reasons, reason)
				}
				cols[reason] = append(cols[reason], r.column)
			}
		}
		for _, reason := range reasons {
			notes = append(notes, fmt.Sprintf("- %s skipped on %s: %s", name, strings.Join(cols[reason], ", "), reason))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	for _, r := range t.results {
		if r.failure != "" {
			fmt.Fprintf(b, "\n`%s` did not run (full output in `%s` of the run): %s\n", r.column, r.log, strings.ReplaceAll(r.failure, "\n", " "))
		}
	}
	for _, r := range t.results {
		for _, name := range r.order {
			if r.outcomes[name] != "fail" {
				continue
			}
			if len(r.errors[name]) == 0 && slices.ContainsFunc(r.order, func(n string) bool {
				return strings.HasPrefix(n, name+"/") && r.outcomes[n] == "fail"
			}) {
				continue // failed because a subtest did, which is listed
			}
			fmt.Fprintf(b, "\n`%s`, %s failed (full output in `%s` of the run):\n\n```\n", r.column, name, r.log)
			lines := r.errors[name]
			// The test's last lines hold its failure.
			if len(lines) > 12 {
				lines = lines[len(lines)-12:]
			}
			for _, l := range lines {
				fmt.Fprintln(b, l)
			}
			b.WriteString("```\n")
		}
	}
}

// row is one line of a table: a test, or a subtest of a test, with the
// subtests below it (folded into its cell).
type row struct {
	name, label, parent string
	nested              []string
}

// treeOf makes the rows of a table from test names in the order they
// started: top-level tests and their direct subtests; deeper subtests are
// counted in their ancestor's row. A subtest's parent is the longest test
// name that prefixes it (a subtest name may itself hold a "/").
func treeOf(order []string) []*row {
	var rows []*row
	byName := map[string]*row{}
	depth := map[string]int{}
	for _, name := range order {
		parent := parentOf(order, name)
		if parent == "" {
			r := &row{name: name, label: name}
			rows, byName[name] = append(rows, r), r
			continue
		}
		depth[name] = depth[parent] + 1
		if depth[name] == 1 {
			// Right after the parent's last row: a subtest that only a
			// later run has stays under its own test.
			r := &row{name: name, label: name[len(parent)+1:], parent: parent}
			at := slices.IndexFunc(rows, func(x *row) bool { return x.name == parent }) + 1
			for at < len(rows) && rows[at].parent == parent {
				at++
			}
			rows, byName[name] = slices.Insert(rows, at, r), r
			continue
		}
		ancestor := parent
		for depth[ancestor] > 1 {
			ancestor = parentOf(order, ancestor)
		}
		byName[ancestor].nested = append(byName[ancestor].nested, name)
	}
	return rows
}

// parentOf is the longest name of order that prefixes name as a test.
func parentOf(order []string, name string) string {
	parent := ""
	for _, p := range order {
		if len(p) > len(parent) && strings.HasPrefix(name, p+"/") {
			parent = p
		}
	}
	return parent
}

// cell is a row's outcome in one run: with its nested subtests counted
// ("pass, 45 checks"; "fail, 2 of 45 checks fail").
func cell(r *result, row *row) string {
	if r.failure != "" {
		return "did not run"
	}
	outcome := r.outcomes[row.name]
	if outcome == "" {
		return "—"
	}
	if len(row.nested) == 0 || outcome == "skip" {
		return outcome
	}
	failed := 0
	for _, n := range row.nested {
		if r.outcomes[n] == "fail" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Sprintf("%s, %d of %d checks fail", outcome, failed, len(row.nested))
	}
	return fmt.Sprintf("%s, %d checks", outcome, len(row.nested))
}

func writeLog(path string, lines []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)
}

func command(dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(context.Background(), name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
