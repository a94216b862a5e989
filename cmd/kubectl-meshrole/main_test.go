package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// TestMain keeps the tests away from the user's kubeconfig: the offline
// commands take their default namespace from it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kubectl-meshrole-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = os.Setenv("KUBECONFIG", filepath.Join(dir, "no-kubeconfig"))
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// result is what a run of the plugin printed and its exit code.
type result struct {
	stdout, stderr string
	code           int
}

// runPlugin runs the plugin as kubectl would, with stdin.
func runPlugin(stdin string, args ...string) result {
	var stdout, stderr bytes.Buffer
	streams := genericiooptions.IOStreams{In: bytes.NewBufferString(stdin), Out: &stdout, ErrOut: &stderr}
	code := exitCode(execute(args, streams), &stderr)
	return result{stdout.String(), stderr.String(), code}
}
