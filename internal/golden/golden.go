// Package golden compares what a test produces with a golden file, as
// Istio's pkg/kube/inject tests do. One switch, -update, rewrites the golden
// files of every package that uses it: make golden.
package golden

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files with what the tests produce now (make golden), then review the diff")

// Updating reports whether the golden files are being rewritten.
func Updating() bool { return *update }

// Check compares got with the golden file at path. Under -update it writes
// got there first.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run make golden to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the test produces now (run make golden and review the diff):\n%s", path, Diff(string(want), string(got)))
	}
}

// Diff shows where two texts first differ, with a few lines around it.
func Diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	if i == len(w) && i == len(g) {
		return "(no difference)"
	}
	from := max(0, i-3)
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d:\n", i+1)
	for _, l := range w[from:min(len(w), i)] {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, l := range w[i:min(len(w), i+4)] {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	for _, l := range g[i:min(len(g), i+4)] {
		fmt.Fprintf(&b, "+ %s\n", l)
	}
	return b.String()
}
