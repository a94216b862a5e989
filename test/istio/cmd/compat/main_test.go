package main

import (
	"strings"
	"testing"
)

func TestTableFoldsDeepSubtestsIntoTheirAncestor(t *testing.T) {
	order := []string{
		"TestInstall",
		"TestInstall/every_object_accepted",
		"TestInstall/rbac",
		"TestInstall/rbac/can_get_pods",
		// A subtest name holding a "/" is one level, not two.
		"TestInstall/rbac/can_update_meshrolepolicies.meshrole.io/status",
		"TestInstall/rbac/can_update_meshrolepolicies.meshrole.io/status/deeper",
		"TestNative",
	}
	r := &result{column: "1.32", outcomes: map[string]string{
		"TestInstall":                       "fail",
		"TestInstall/every_object_accepted": "pass",
		"TestInstall/rbac":                  "fail",
		"TestInstall/rbac/can_get_pods":     "pass",
		"TestInstall/rbac/can_update_meshrolepolicies.meshrole.io/status":        "fail",
		"TestInstall/rbac/can_update_meshrolepolicies.meshrole.io/status/deeper": "pass",
		"TestNative": "skip",
	}, skips: map[string]string{"TestNative": "native mode needs Kubernetes 1.36 or later"},
		errors: map[string][]string{"TestInstall/rbac/can_update_meshrolepolicies.meshrole.io/status": {"rbac_test.go:1: denied"}},
		order:  order}
	var b strings.Builder
	renderTable(&b, table{results: []*result{r}})
	got := b.String()
	for _, want := range []string{
		"| **TestInstall** | fail |\n",
		"| every object accepted | pass |\n",
		"| rbac | fail, 1 of 3 checks fail |\n",
		"| **TestNative** | skip |\n",
		"- TestNative skipped on 1.32: native mode needs Kubernetes 1.36 or later\n",
		"`1.32`, TestInstall/rbac/can_update_meshrolepolicies.meshrole.io/status failed",
		"rbac_test.go:1: denied\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n| "); n != 5 {
		t.Errorf("%d rows (header included), want 5 (header, TestInstall, 2 subtests, TestNative):\n%s", n, got)
	}
	// The parents failed only because the subtest did: listed once.
	if n := strings.Count(got, "failed (full output"); n != 1 {
		t.Errorf("%d failures listed, want 1:\n%s", n, got)
	}
}

func TestSkipReasonIsTheLastLoggedLine(t *testing.T) {
	// As runSuite keeps them: go test's output lines, trimmed.
	logged := []string{
		"env_test.go:73: control plane up in 27.026s",
		"native_test.go:210: native mode needs Kubernetes 1.36 or later; this API server is v1.34.4",
	}
	if got, want := skipReason(logged), "native mode needs Kubernetes 1.36 or later; this API server is v1.34.4"; got != want {
		t.Errorf("skipReason = %q, want %q", got, want)
	}
	if got := skipReason(nil); got != "" {
		t.Errorf("skipReason(nil) = %q, want none", got)
	}
}

func TestTableKeepsASubtestUnderItsTest(t *testing.T) {
	// The second run has a subtest the first has not, and a different skip
	// reason for the same test.
	first := &result{column: "1.37", order: []string{"TestA", "TestA/one", "TestB", "TestC"},
		outcomes: map[string]string{"TestA": "pass", "TestA/one": "pass", "TestB": "pass", "TestC": "skip"},
		skips:    map[string]string{"TestC": "serves it (v1.37.2)"}}
	second := &result{column: "1.32", order: []string{"TestA", "TestA/refused", "TestB", "TestC"},
		outcomes: map[string]string{"TestA": "pass", "TestA/refused": "pass", "TestB": "pass", "TestC": "skip"},
		skips:    map[string]string{"TestC": "too old (v1.32.13)"}}
	var b strings.Builder
	renderTable(&b, table{results: []*result{first, second}})
	got := b.String()
	want := "| **TestA** | pass | pass |\n| one | pass | — |\n| refused | — | pass |\n| **TestB** | pass | pass |\n"
	if !strings.Contains(got, want) {
		t.Errorf("rows not in test order; want\n%s\ngot:\n%s", want, got)
	}
	for _, want := range []string{"- TestC skipped on 1.37: serves it (v1.37.2)\n", "- TestC skipped on 1.32: too old (v1.32.13)\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
