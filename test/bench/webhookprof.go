package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// gcTrace is one line of the Go runtime's GODEBUG=gctrace=1 output, which
// the webhook writes to its log during the memory phase:
//
//	gc 12 @3.456s 2%: 0.1+1.2+0.01 ms clock, ..., 30->31->15 MB, 32 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)
//
// The third heap figure is what the collection found live ("MB" is MiB).
var gcTrace = regexp.MustCompile(`^gc (\d+) @[0-9.]+s \d+%: .* (\d+)->(\d+)->(\d+) MB, (\d+) MB goal.*?( \(forced\))?$`)

// lastGC is the most recent collection in a webhook log.
type lastGC struct {
	Number   int
	LiveMiB  int64 // live heap the collection found
	GoalMiB  int64 // heap size that triggers the next one
	Forced   bool  // runtime.GC, as /debug/pprof/heap?gc=1 calls it
	Observed bool  // a gctrace line was found
}

func (g lastGC) live() int64 { return g.LiveMiB << 20 }

// readLastGC returns the last gctrace line of the log at path, from offset
// on: the log is appended to across restarts, and only the running
// process's lines count.
func readLastGC(path string, offset int64) (lastGC, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return lastGC{}, err
	}
	if offset > int64(len(data)) {
		offset = 0
	}
	return parseLastGC(string(data[offset:])), nil
}

// logSize is where a process started now begins writing to the log at path.
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func parseLastGC(log string) lastGC {
	var g lastGC
	for _, line := range strings.Split(log, "\n") {
		m := gcTrace.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		live, _ := strconv.ParseInt(m[4], 10, 64)
		goal, _ := strconv.ParseInt(m[5], 10, 64)
		g = lastGC{Number: n, LiveMiB: live, GoalMiB: goal, Forced: m[6] != "", Observed: true}
	}
	return g
}

// withGCTrace makes the processes started from now on (the webhook's
// restarts) log every collection, and returns the function that undoes it.
func withGCTrace() (restore func()) {
	old, had := os.LookupEnv("GODEBUG")
	v := "gctrace=1"
	if had && old != "" {
		v = old + ",gctrace=1"
	}
	_ = os.Setenv("GODEBUG", v)
	return func() {
		if had {
			_ = os.Setenv("GODEBUG", old)
		} else {
			_ = os.Unsetenv("GODEBUG")
		}
	}
}

// webhookProfiler fetches profiles from a webhook built with net/http/pprof
// on its metrics server (-webhook-pprof; the product's build does not serve
// it). A nil profiler does nothing.
type webhookProfiler struct {
	dir string
}

func pprofBase(metricsURL string) string {
	return strings.TrimSuffix(metricsURL, "/metrics") + "/debug/pprof/"
}

// heap forces a collection in the webhook (?gc=1), so that the next gctrace
// line is the live heap right now, and saves the heap profile as name.
func (p *webhookProfiler) heap(ctx context.Context, metricsURL, name string) (string, error) {
	if p == nil {
		return "", nil
	}
	file := filepath.Join(p.dir, name)
	if err := fetch(ctx, pprofBase(metricsURL)+"heap?gc=1", file); err != nil {
		return "", err
	}
	return file, nil
}

// cpu profiles the webhook for d and saves the profile as name.
func (p *webhookProfiler) cpu(ctx context.Context, metricsURL, name string, d time.Duration) (string, error) {
	if p == nil {
		return "", nil
	}
	file := filepath.Join(p.dir, name)
	secs := max(1, int(d.Seconds()))
	return file, fetch(ctx, fmt.Sprintf("%sprofile?seconds=%d", pprofBase(metricsURL), secs), file)
}

func fetch(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: -webhook-pprof needs a webhook built with net/http/pprof on its metrics server", url, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// pprofTop is go tool pprof -top of a profile.
func pprofTop(ctx context.Context, file string, args ...string) (string, error) {
	args = append(append([]string{"tool", "pprof", "-top", "-nodecount", "25"}, args...), file)
	cmd := exec.CommandContext(ctx, "go", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
