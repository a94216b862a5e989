package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestExplainGolden runs the command as a user would and compares its whole
// output with testdata/<name>.golden.
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
			var out bytes.Buffer
			if err := run(tt.args, &out); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/kubectl-meshrole -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("output differs from %s (rerun with -update and review the diff):\n%s", golden, out.String())
			}
		})
	}
}

func TestExplainErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"explain"},
		{"explain", "-f", "testdata/does-not-exist.yaml"},
		{"explain", "-f", "testdata/mixed.yaml", "-o", "xml"},
		{"explain", "-f", "testdata/mixed.yaml", "--namespace-labels", "=broken"},
	} {
		if err := run(args, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}
