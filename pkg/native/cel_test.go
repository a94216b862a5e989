package native

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
)

func TestSelectorCEL(t *testing.T) {
	for _, tc := range []struct {
		name     string
		selector metav1.LabelSelector
		want     string
	}{
		{"empty selects everything", metav1.LabelSelector{}, "true"},
		{"matchLabels", metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka"}},
			`"app" in m && m["app"] == "eureka"`},
		{"In", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "In", Values: []string{"users", "orders"}}}},
			`"app" in m && m["app"] in ["orders", "users"]`},
		{"In with one value", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "In", Values: []string{"users"}}}},
			`"app" in m && m["app"] == "users"`},
		{"NotIn matches an absent key", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "NotIn", Values: []string{"db"}}}},
			`(!("tier" in m) || !(m["tier"] == "db"))`},
		{"NotIn with several values", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "NotIn", Values: []string{"db", "cache"}}}},
			`(!("tier" in m) || !(m["tier"] in ["cache", "db"]))`},
		{"Exists", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a/b", Operator: "Exists"}}},
			`"a/b" in m`},
		{"DoesNotExist", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "DoesNotExist"}}},
			`!("x" in m)`},
		{"requirements are ANDed in key order", metav1.LabelSelector{
			MatchLabels:      map[string]string{"b": "2"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Exists"}}},
			`"a" in m && "b" in m && m["b"] == "2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := metav1.LabelSelectorAsSelector(&tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			got, err := selectorCEL(sel, "m")
			if err != nil || got != tc.want {
				t.Errorf("selectorCEL = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if got, _ := selectorCEL(labels.Nothing(), "m"); got != "false" {
		t.Errorf("Nothing() = %q, want false", got)
	}
}

// TestSelectorCELParsedOperators covers the operators only a parsed
// selector has (=, ==, !=), and one with no CEL form.
func TestSelectorCELParsedOperators(t *testing.T) {
	for _, tc := range []struct{ selector, want, wantErr string }{
		{"app=web", `"app" in m && m["app"] == "web"`, ""},
		{"app==web", `"app" in m && m["app"] == "web"`, ""},
		{"app!=web", `(!("app" in m) || !(m["app"] == "web"))`, ""},
		{"weight>3", "", `label selector operator "gt" has no CEL form`},
	} {
		t.Run(tc.selector, func(t *testing.T) {
			sel, err := labels.Parse(tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			got, err := selectorCEL(sel, "m")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("selectorCEL = %q, %v; want the error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("selectorCEL = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"shop", `"shop"`},
		{"", `""`},
		{`say "hi"`, `"say \"hi\""`},
		{`C:\dir`, `"C:\\dir"`},
		{"line\nbreak\ttab", `"line\nbreak\ttab"`},
		{"it's", `"it's"`},
		{"café", `"café"`},
		{"nul\x00", `"nul\x00"`},
	} {
		if got := quote(tc.in); got != tc.want {
			t.Errorf("quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := stringList([]string{"b", `a"`}); got != `["b", "a\""]` {
		t.Errorf("stringList = %s", got)
	}
	if got := stringList(nil); got != "[]" {
		t.Errorf("stringList(nil) = %s, want []", got)
	}
}

// evalChoose evaluates what choose generates, for leaves and a fallback
// without spaces or parentheses, with v = x.
func evalChoose(t *testing.T, expr string, x int) string {
	t.Helper()
	if rest, ok := strings.CutPrefix(expr, "v < "); ok {
		num, rest, _ := strings.Cut(rest, " ? ")
		n, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("bad bound in %q", expr)
		}
		end := closingParen(t, rest)
		then := rest[1:end]
		els, ok := strings.CutPrefix(rest[end+1:], " : (")
		if !ok || !strings.HasSuffix(els, ")") {
			t.Fatalf("bad else branch in %q", expr)
		}
		if x < n {
			return evalChoose(t, then, x)
		}
		return evalChoose(t, strings.TrimSuffix(els, ")"), x)
	}
	var n int
	var leaf, fallback string
	if _, err := fmt.Sscanf(expr, "v == %d ? %s : %s", &n, &leaf, &fallback); err != nil {
		t.Fatalf("neither a comparison nor a leaf: %q", expr)
	}
	if x == n {
		return leaf
	}
	return fallback
}

func closingParen(t *testing.T, s string) int {
	t.Helper()
	depth := 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	t.Fatalf("unbalanced %q", s)
	return 0
}

func maxDepth(s string) int {
	depth, deepest := 0, 0
	for _, r := range s {
		switch r {
		case '(':
			depth++
			deepest = max(deepest, depth)
		case ')':
			depth--
		}
	}
	return deepest
}

// TestChoose: every id gets its leaf, anything else the fallback, and the
// tree is balanced: it nests ceil(log2 n) deep for n ids.
func TestChoose(t *testing.T) {
	leaf := func(id int) string { return "L" + strconv.Itoa(id) }
	if got := choose("v", nil, leaf, "F"); got != "F" {
		t.Errorf("no ids: %q, want the fallback", got)
	}
	if got := choose("v", []int{4}, leaf, "F"); got != "v == 4 ? L4 : F" {
		t.Errorf("one id: %q", got)
	}
	if got := choose("v", []int{4, 6}, leaf, "F"); got != "v < 6 ? (v == 4 ? L4 : F) : (v == 6 ? L6 : F)" {
		t.Errorf("two ids: %q", got)
	}
	for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 100, 1000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			ids := make([]int, n)
			for i := range ids {
				ids[i] = 2 * i // even ids, so that odd values fall between them
			}
			expr := choose("v", ids, leaf, "F")
			if got, want := maxDepth(expr), bits.Len(uint(n-1)); got != want {
				t.Errorf("nests %d deep, want %d", got, want)
			}
			for x := -1; x <= 2*n; x++ {
				want := "F"
				if x >= 0 && x%2 == 0 && x < 2*n {
					want = leaf(x)
				}
				if got := evalChoose(t, expr, x); got != want {
					t.Fatalf("v = %d chooses %s, want %s", x, got, want)
				}
			}
		})
	}
}

func TestByNamespace(t *testing.T) {
	scopes := func(names ...string) []policy.Scope {
		out := make([]policy.Scope, len(names))
		for i, n := range names {
			out[i] = policy.Scope{Namespace: n}
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		branches    []policy.Scope
		hasFallback bool
		values      []string
		want        string
	}{
		{"nothing", nil, false, nil, "-1"},
		{"only the fallback", nil, true, []string{"f"}, "(f)"},
		{"one branch", scopes("a"), false, []string{"x"}, `request.namespace == "a" ? (x) : -1`},
		{"one branch and the fallback", scopes("a"), true, []string{"x", "f"}, `request.namespace == "a" ? (x) : (f)`},
		{"three branches compare on the middle name", scopes("a", "b", "c"), true, []string{"x", "y", "z", "f"},
			`request.namespace < "b" ? (request.namespace == "a" ? (x) : (f)) : ` +
				`(request.namespace < "c" ? (request.namespace == "b" ? (y) : (f)) : (request.namespace == "c" ? (z) : (f)))`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := byNamespace(tc.branches, tc.hasFallback, tc.values); got != tc.want {
				t.Errorf("byNamespace =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestPortListMerge(t *testing.T) {
	vars := portListMerge("ports0", policy.IstioExcludeInboundPorts, "[8080]")
	var names []string
	byName := map[string]string{}
	for _, v := range vars {
		names = append(names, v.Name)
		byName[v.Name] = v.Expression
	}
	// In order: each variable refers to the ones before it.
	if want := []string{"ports0", "ports0Existing", "ports0Valid", "ports0Added", "ports0Merged"}; !slices.Equal(names, want) {
		t.Fatalf("variables %v, want %v", names, want)
	}
	if byName["ports0"] != "[8080]" {
		t.Errorf("ports0 = %q, want the ports expression", byName["ports0"])
	}
	key := quote(policy.IstioExcludeInboundPorts)
	if got := byName["ports0Existing"]; strings.Count(got, "variables.annotations["+key+"]") != 2 || !strings.HasPrefix(got, key+" in variables.annotations") {
		t.Errorf("ports0Existing does not read the %s annotation: %s", key, got)
	}
	for _, v := range []admissionregistrationv1.Variable{vars[2], vars[3], vars[4]} {
		if strings.Contains(v.Expression, "ports1") || !strings.Contains(v.Expression, "variables.ports0") {
			t.Errorf("%s does not refer to its own prefix: %s", v.Name, v.Expression)
		}
	}
}
