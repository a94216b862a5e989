package golden

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	got := Diff("a\nb\nc\nd\n", "a\nb\nX\nd\n")
	for _, want := range []string{"first difference at line 3", "  a", "  b", "- c", "+ X"} {
		if !strings.Contains(got, want) {
			t.Errorf("Diff output lacks %q:\n%s", want, got)
		}
	}
	if got := Diff("same", "same"); got != "(no difference)" {
		t.Errorf("Diff of equal texts: %q", got)
	}
	if got := Diff("a\n", "a\nb\n"); !strings.Contains(got, "+ b") {
		t.Errorf("Diff of an added line:\n%s", got)
	}
}
