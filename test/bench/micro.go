package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// benchLine is one result line of `go test -bench -benchmem`.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([0-9.]+) ns/op(.*)$`)

var (
	mbPerSec    = regexp.MustCompile(`([0-9.]+) MB/s`)
	bytesPerOp  = regexp.MustCompile(`([0-9.]+) B/op`)
	allocsPerOp = regexp.MustCompile(`([0-9.]+) allocs/op`)
)

// benchStat is the median over -count runs of one benchmark.
type benchStat struct {
	Name     string
	Runs     int
	NsPerOp  float64
	MBPerS   float64
	BPerOp   float64
	Allocs   float64
	AllNsOps []float64
}

// parseBenchOutput collects the runs of each benchmark and returns their
// medians, keyed by name without the -GOMAXPROCS suffix.
func parseBenchOutput(out []byte) map[string]*benchStat {
	type runs struct{ ns, mbs, b, allocs []float64 }
	all := map[string]*runs{}
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(s.Text()))
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		r := all[m[1]]
		if r == nil {
			r = &runs{}
			all[m[1]] = r
		}
		r.ns = append(r.ns, ns)
		if v := mbPerSec.FindStringSubmatch(m[4]); v != nil {
			f, _ := strconv.ParseFloat(v[1], 64)
			r.mbs = append(r.mbs, f)
		}
		if b := bytesPerOp.FindStringSubmatch(m[4]); b != nil {
			v, _ := strconv.ParseFloat(b[1], 64)
			r.b = append(r.b, v)
		}
		if a := allocsPerOp.FindStringSubmatch(m[4]); a != nil {
			v, _ := strconv.ParseFloat(a[1], 64)
			r.allocs = append(r.allocs, v)
		}
	}
	stats := map[string]*benchStat{}
	for name, r := range all {
		stats[name] = &benchStat{Name: name, Runs: len(r.ns), NsPerOp: median(r.ns), MBPerS: median(r.mbs), BPerOp: median(r.b), Allocs: median(r.allocs), AllNsOps: r.ns}
	}
	return stats
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// microResult is what the micro-benchmarks gave: medians over Count runs,
// and the medians of the per-run ratios (each run measures both sides of a
// ratio back to back, so drift in the machine's load cancels out).
type microResult struct {
	Floor, Meshrole *benchStat
	// NamespacePolicies[i]: the pod's namespace holds namespacePolicyCounts[i]
	// policies (of 10,000).
	NamespacePolicies []*benchStat
	// ClusterNone[i] and ClusterHalf[i]: clusterPolicyCounts[i] cluster
	// policies, none or half of them selecting the pod's namespace.
	ClusterNone, ClusterHalf []*benchStat
	Count                    int
	HandlerRatio             []float64
	// Per run: the largest case over the smallest.
	NamespaceRatio, ClusterNoneRatio, ClusterHalfRatio []float64
}

// The cases of BenchmarkDecideNamespacePolicies and BenchmarkDecideClusterPolicies.
var (
	namespacePolicyCounts = []int{1, 10, 100, 1000}
	clusterPolicyCounts   = []int{10, 100, 1000, 5000}
	// clusterNoneTarget is the case the target compares with the first:
	// 1,000 cluster policies (docs/design.md, "Performance targets").
	clusterNoneTarget = 2
)

// microBenchmarks are the benchmarks of pkg/mutate the table reports.
const microBenchmarks = "^(BenchmarkAdmission|BenchmarkDecideNamespacePolicies|BenchmarkDecideClusterPolicies)$"

// buildMutateTest compiles pkg/mutate's test binary into dir.
func buildMutateTest(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "mutate.test")
	args := []string{"test", "-c", "-o", bin, "./pkg/mutate"}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// runMicro runs pkg/mutate's benchmarks count times, one after the other
// (not go test -count, which repeats each benchmark back to back), and
// parses them.
func runMicro(ctx context.Context, root, bin string, count int) (*microResult, error) {
	var all []byte
	r := &microResult{Count: count}
	for range count {
		args := []string{"-test.run", "^$", "-test.bench", microBenchmarks, "-test.benchmem", "-test.count", "1"}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = filepath.Join(root, "pkg", "mutate") // the benchmarks read testdata/
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w\n%s%s", bin, strings.Join(args, " "), err, out, stderr.Bytes())
		}
		one, err := pickMicro(parseBenchOutput(out), out)
		if err != nil {
			return nil, err
		}
		r.HandlerRatio = append(r.HandlerRatio, one.Meshrole.NsPerOp/one.Floor.NsPerOp)
		r.NamespaceRatio = append(r.NamespaceRatio, lastOverFirst(one.NamespacePolicies))
		r.ClusterNoneRatio = append(r.ClusterNoneRatio, one.ClusterNone[clusterNoneTarget].NsPerOp/one.ClusterNone[0].NsPerOp)
		r.ClusterHalfRatio = append(r.ClusterHalfRatio, lastOverFirst(one.ClusterHalf))
		all = append(all, out...)
	}
	m, err := pickMicro(parseBenchOutput(all), all)
	if err != nil {
		return nil, err
	}
	m.Count, m.HandlerRatio = count, r.HandlerRatio
	m.NamespaceRatio, m.ClusterNoneRatio, m.ClusterHalfRatio = r.NamespaceRatio, r.ClusterNoneRatio, r.ClusterHalfRatio
	return m, nil
}

func lastOverFirst(s []*benchStat) float64 {
	return s[len(s)-1].NsPerOp / s[0].NsPerOp
}

func pickMicro(stats map[string]*benchStat, out []byte) (*microResult, error) {
	r := &microResult{}
	var missing []error
	// Exact names: namespace=1 is a prefix of namespace=10.
	pick := func(name string) *benchStat {
		st := stats[name]
		if st == nil {
			missing = append(missing, fmt.Errorf("no %s in the output of go test", name))
		}
		return st
	}
	r.Floor = pick("BenchmarkAdmission/floor")
	r.Meshrole = pick("BenchmarkAdmission/meshrole")
	for _, n := range namespacePolicyCounts {
		r.NamespacePolicies = append(r.NamespacePolicies, pick(fmt.Sprintf("BenchmarkDecideNamespacePolicies/namespace=%d", n)))
	}
	for _, n := range clusterPolicyCounts {
		r.ClusterNone = append(r.ClusterNone, pick(fmt.Sprintf("BenchmarkDecideClusterPolicies/cluster=%d/selecting=0", n)))
		r.ClusterHalf = append(r.ClusterHalf, pick(fmt.Sprintf("BenchmarkDecideClusterPolicies/cluster=%d/selecting=%d", n, n/2)))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w\n%s", errors.Join(missing...), out)
	}
	return r, nil
}

// profileHandler profiles BenchmarkAdmission/meshrole and returns the top of
// go tool pprof, the evidence for where the handler's time goes.
func profileHandler(ctx context.Context, root, bin string) (string, error) {
	prof := filepath.Join(filepath.Dir(bin), "cpu.out")
	run := func(dir, name string, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
		}
		return out, nil
	}
	if _, err := run(filepath.Join(root, "pkg", "mutate"), bin, "-test.run", "^$", "-test.bench", "^BenchmarkAdmission$/^meshrole$",
		"-test.benchtime", "3s", "-test.cpuprofile", prof); err != nil {
		return "", err
	}
	flat, err := run(root, "go", "tool", "pprof", "-top", "-nodecount", "30", bin, prof)
	if err != nil {
		return "", err
	}
	cum, err := run(root, "go", "tool", "pprof", "-top", "-cum", "-nodecount", "45", bin, prof)
	if err != nil {
		return "", err
	}
	return string(flat) + "\n--- sorted by cumulative time\n" + string(cum), nil
}
