package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The plugin prints exactly what pkg/native's golden pins for the same
// policies: one compiler, and the refusals on top.
func TestNativePrintsTheServersObjects(t *testing.T) {
	r := runPlugin("", "native", "-f", "../../pkg/native/testdata/policies.yaml", "--excluded-namespaces", "kube-system,meshrole-system")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	out := bytes.NewBufferString(r.stdout)
	want, err := os.ReadFile("../../pkg/native/testdata/policies.yaml.native")
	if err != nil {
		t.Fatal(err)
	}
	refused, objects, _ := strings.Cut(out.String(), "\n---\n")
	if refused != "# refused: hold/slow-start: workload web: holdApplicationUntilProxyStarts needs webhook mode (a MutatingAdmissionPolicy cannot merge it into an existing proxy.istio.io/config); remove it or run meshrole with mode: webhook" {
		t.Errorf("refusals:\n%s", refused)
	}
	if "---\n"+objects != string(want) {
		t.Errorf("kubectl meshrole native differs from pkg/native/testdata/policies.yaml.native")
	}
}
