package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrole/meshrole/internal/golden"
)

// TestExplainGolden runs the command as a user would and compares its whole
// output with testdata/<name>.golden (make golden rewrites them).
func TestExplainGolden(t *testing.T) {
	eureka := []string{"-f", "../../examples/eureka/namespace.yaml", "-f", "../../examples/eureka/policy.yaml",
		"-f", "../../examples/eureka/service.yaml", "-f", "../../examples/eureka/statefulset.yaml", "-f", "../../examples/eureka/deployment.yaml"}
	tests := []struct {
		name string
		args []string
	}{
		{"eureka.table", append([]string{"explain"}, eureka...)},
		{"eureka.json", append([]string{"explain", "-o", "json"}, eureka...)},
		{"mixed.table", []string{"explain", "-f", "testdata/mixed.yaml"}},
		{"mixed.yaml", []string{"explain", "-f", "testdata/mixed.yaml", "-o", "yaml"}},
		{"namespace-labels-flag.table", []string{"explain", "-f", "testdata/mixed.yaml", "--namespace-labels", "meshrole.io/enabled=true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runPlugin("", tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".golden"), []byte(r.stdout))
		})
	}
}

// Errors exit 2 and say what is wrong on stderr.
func TestExplainErrors(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{nil, ""},
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "kubectl meshrole"`},
		{[]string{"explain"}, "explain needs at least one -f file"},
		{[]string{"explain", "-f", "testdata/does-not-exist.yaml"}, "testdata/does-not-exist.yaml"},
		{[]string{"explain", "-f", "testdata/mixed.yaml", "-o", "xml"}, "-o xml: use one of table, json, yaml"},
		{[]string{"explain", "-f", "testdata/mixed.yaml", "--namespace-labels", "=broken"}, "--namespace-labels"},
		{[]string{"explain", "-f", "testdata/mixed.yaml", "--no-such-flag"}, "unknown flag: --no-such-flag\nSee 'kubectl meshrole explain --help' for usage"},
		{[]string{"explain", "-f", "testdata/mixed.yaml", "--context", "nowhere"}, "context was not found for specified context: nowhere"},
	} {
		r := runPlugin("", tt.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.stderr) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", tt.args, r.code, r.stderr, tt.stderr)
		}
	}
	if r := runPlugin(""); !strings.Contains(r.stdout, "Available Commands:") {
		t.Errorf("kubectl meshrole without a command prints no usage:\n%s", r.stdout)
	}
}
