// Command compat runs the Istio suite (test/istio) once per Istio version in
// test/istio/injectors/versions.txt and writes the outcome of every
// scenario for every version as a Markdown table: docs/compatibility.md,
// via `make compat`. The control plane is $MESHROLE_K8S_BIN's, as for the
// suite.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/istio/injector"
)

func main() {
	out := flag.String("out", "", "Markdown file to write (required)")
	timeout := flag.Duration("timeout", 20*time.Minute, "go test -timeout for each version")
	flag.Parse()
	if err := run(*out, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "compat:", err)
		os.Exit(1)
	}
}

// result is one version's run.
type result struct {
	version injector.Version
	// module is the istio.io/istio version the injector reported.
	module string
	// build is how long building the injector took ("" when it was cached).
	build string
	// outcomes maps a test or subtest name to pass, fail or skip.
	outcomes map[string]string
	// failure is why the suite did not run (the injector did not build, ...).
	failure string
	// errors holds, for each failed test, the lines it logged from the
	// suite's files (its t.Error and t.Fatal messages among them).
	errors   map[string][]string
	log      string
	output   []string
	duration time.Duration
}

func run(out string, timeout time.Duration) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	versions, err := injector.Versions(root)
	if err != nil {
		return err
	}
	k8sBin, err := harness.K8sBinDir(root)
	if err != nil {
		return err
	}
	k8sVersion, err := command(root, filepath.Join(k8sBin, "kube-apiserver"), "--version")
	if err != nil {
		return err
	}

	started := time.Now().UTC()
	var results []*result
	var order []string
	seen := map[string]bool{}
	for _, v := range versions {
		fmt.Fprintf(os.Stderr, "compat: Istio %s (%s)\n", v.Name, v.Ref)
		r, names := runSuite(root, v, timeout)
		r.log = filepath.Join("bin", "compat", v.Name+".log")
		if err := writeLog(filepath.Join(root, r.log), r.output); err != nil {
			return err
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				order = append(order, n)
			}
		}
		fmt.Fprintf(os.Stderr, "compat: Istio %s: %s in %v\n", v.Name, summary(r), r.duration.Round(time.Second))
		results = append(results, r)
	}

	commit, _ := command(root, "git", "describe", "--always", "--dirty")
	doc := render(results, order, started, k8sVersion, commit)
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		return err
	}
	for _, r := range results {
		if r.failed() {
			return fmt.Errorf("wrote %s; some versions fail", out)
		}
	}
	return nil
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
)

// runSuite runs go test -json on the suite with MESHROLE_ISTIO_VERSION set
// and returns the outcomes and the test names in the order they started.
func runSuite(root string, v injector.Version, timeout time.Duration) (*result, []string) {
	r := &result{version: v, outcomes: map[string]string{}, errors: map[string][]string{}}
	logged := map[string][]string{}
	start := time.Now()
	defer func() { r.duration = time.Since(start) }()

	cmd := exec.CommandContext(context.Background(), "go", "test", "-count=1", "-json", "-timeout", timeout.String(), ".")
	cmd.Dir = filepath.Join(root, "test", "istio")
	cmd.Env = append(os.Environ(), injector.EnvVersion+"="+v.Name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.failure = err.Error()
		return r, nil
	}
	if err := cmd.Start(); err != nil {
		r.failure = err.Error()
		return r, nil
	}
	var names []string
	var output strings.Builder
	s := bufio.NewScanner(stdout)
	s.Buffer(make([]byte, 1<<20), 1<<24)
	for s.Scan() {
		var ev testEvent
		if json.Unmarshal(s.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Action {
		case "run":
			names = append(names, ev.Test)
		case "pass", "fail", "skip":
			if ev.Test != "" {
				r.outcomes[ev.Test] = ev.Action
			}
			if ev.Action == "fail" && ev.Test != "" {
				r.errors[ev.Test] = logged[ev.Test]
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
	if err != nil && len(r.outcomes) == 0 {
		// TestMain failed: the injector did not build or start.
		r.failure = firstLines(output.String()+stderr.String(), 3)
	}
	return r, names
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

func render(results []*result, order []string, started time.Time, k8sVersion, commit string) string {
	var b strings.Builder
	b.WriteString("# Compatibility: meshrole × Istio\n\n")
	b.WriteString("<!-- Generated by `make compat` (test/istio/cmd/compat); do not edit. -->\n\n")
	fmt.Fprintf(&b, "The Istio suite (`test/istio`, see [istio.md](istio.md)) run against Istio's real injector of each version, "+
		"each built from its own module (`test/istio/injectors/<version>`), configured from that version's own istiod chart "+
		"(default profile) and registered with that chart's own webhook configuration.\n\n")
	fmt.Fprintf(&b, "- Run: %s, meshrole `%s`, %s, %s/%s\n", started.Format("2006-01-02 15:04 UTC"), commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "- Control plane: %s (kube-apiserver, etcd, kube-controller-manager)\n", k8sVersion)
	b.WriteString("- Istio:\n")
	for _, r := range results {
		module := r.module
		if module == "" {
			module = r.version.Ref
		}
		build := "cached"
		if r.build != "" {
			build = "built in " + r.build
		}
		fmt.Fprintf(&b, "  - `%s`: `istio.io/istio %s` (injector %s; suite %s in %v)\n", r.version.Name, module, build, summary(r), r.duration.Round(time.Second))
	}
	b.WriteString("\n| scenario |")
	for _, r := range results {
		fmt.Fprintf(&b, " %s |", r.version.Name)
	}
	b.WriteString("\n|---|")
	for range results {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, name := range order {
		top, sub, isSub := strings.Cut(name, "/")
		label := "**" + top + "**"
		if isSub {
			label = strings.ReplaceAll(sub, "_", " ")
		}
		fmt.Fprintf(&b, "| %s |", strings.ReplaceAll(label, "|", `\|`))
		for _, r := range results {
			cell := r.outcomes[name]
			switch {
			case r.failure != "":
				cell = "not built"
			case cell == "":
				cell = "—"
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	for _, r := range results {
		if r.failure != "" {
			fmt.Fprintf(&b, "\n`%s` did not run: %s\n", r.version.Name, strings.ReplaceAll(r.failure, "\n", " "))
		}
	}
	for _, r := range results {
		for _, name := range order {
			if r.outcomes[name] != "fail" {
				continue
			}
			fmt.Fprintf(&b, "\n`%s`, %s failed (full output in `%s` of the run):\n\n```\n", r.version.Name, name, r.log)
			lines := r.errors[name]
			// The test's last lines hold its failure.
			if len(lines) > 12 {
				lines = lines[len(lines)-12:]
			}
			for _, l := range lines {
				fmt.Fprintln(&b, l)
			}
			b.WriteString("```\n")
		}
	}
	return b.String()
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
