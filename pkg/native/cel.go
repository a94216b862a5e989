package native

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/meshrole/meshrole/pkg/policy"
)

// The builders of CEL text the compiler assembles: each is a pure function
// of its arguments.

// quote is a CEL string literal; CEL's escapes are a superset of Go's.
func quote(s string) string { return strconv.Quote(s) }

// stringList is a CEL list literal of the strings, in their order.
func stringList(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = quote(v)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

// selectorCEL is a label selector as a CEL condition over a map variable,
// with labels.Selector's semantics: NotIn and != also match when the key is
// absent; a selector that selects nothing is false.
func selectorCEL(sel labels.Selector, m string) (string, error) {
	reqs, selectable := sel.Requirements()
	if !selectable {
		return "false", nil
	}
	if len(reqs) == 0 {
		return "true", nil
	}
	parts := make([]string, len(reqs))
	for i, r := range reqs {
		key := quote(r.Key())
		values := r.ValuesUnsorted()
		slices.Sort(values)
		in := fmt.Sprintf("%s[%s] in %s", m, key, stringList(values))
		if len(values) == 1 {
			in = fmt.Sprintf("%s[%s] == %s", m, key, quote(values[0]))
		}
		switch r.Operator() {
		case selection.In, selection.Equals, selection.DoubleEquals:
			parts[i] = fmt.Sprintf("%s in %s && %s", key, m, in)
		case selection.NotIn, selection.NotEquals:
			parts[i] = fmt.Sprintf("(!(%s in %s) || !(%s))", key, m, in)
		case selection.Exists:
			parts[i] = fmt.Sprintf("%s in %s", key, m)
		case selection.DoesNotExist:
			parts[i] = fmt.Sprintf("!(%s in %s)", key, m)
		default:
			return "", fmt.Errorf("label selector operator %q has no CEL form", r.Operator())
		}
	}
	return strings.Join(parts, " && "), nil
}

// choose is a balanced tree of conditionals on an int variable: the leaf of
// the id it equals, else fallback. ids must be sorted.
func choose(variable string, ids []int, leaf func(id int) string, fallback string) string {
	switch len(ids) {
	case 0:
		return fallback
	case 1:
		return fmt.Sprintf("%s == %d ? %s : %s", variable, ids[0], leaf(ids[0]), fallback)
	}
	mid := len(ids) / 2
	return fmt.Sprintf("%s < %d ? (%s) : (%s)", variable, ids[mid], choose(variable, ids[:mid], leaf, fallback), choose(variable, ids[mid:], leaf, fallback))
}

// byNamespace picks, by the pod's namespace, one of the branches' values
// (through a balanced tree of comparisons on the sorted names), else the
// fallback's (the last value), else -1.
func byNamespace(branches []policy.Scope, hasFallback bool, values []string) string {
	fallback := "-1"
	if hasFallback {
		fallback = "(" + values[len(values)-1] + ")"
	}
	var tree func(lo, hi int) string
	tree = func(lo, hi int) string {
		switch hi - lo {
		case 0:
			return fallback
		case 1:
			return fmt.Sprintf("request.namespace == %s ? (%s) : %s", quote(branches[lo].Namespace), values[lo], fallback)
		}
		mid := (lo + hi) / 2
		return fmt.Sprintf("request.namespace < %s ? (%s) : (%s)", quote(branches[mid].Namespace), tree(lo, mid), tree(mid, hi))
	}
	return tree(0, len(branches))
}

// portListMerge adds the winner's ports to a port-list annotation as a set,
// like policy.MergePortList: existing entries keep their order, new ports
// follow in ascending order, and a value Istio would not parse (anything but
// comma-separated 16-bit unsigned integers) is left exactly as it is. The
// variable <prefix>Merged is the value to write, or optional.none().
func portListMerge(prefix, key, portsExpr string) []admissionregistrationv1.Variable {
	k := quote(key)
	return []admissionregistrationv1.Variable{
		{Name: prefix, Expression: portsExpr},
		{Name: prefix + "Existing", Expression: fmt.Sprintf(
			"%[1]s in variables.annotations && variables.annotations[%[1]s].trim() != '' ? variables.annotations[%[1]s].split(',').map(s, s.trim()) : []", k)},
		{Name: prefix + "Valid", Expression: fmt.Sprintf(
			"variables.%sExisting.all(s, s.matches('^0*[0-9]{1,5}$') && int(s) <= 65535)", prefix)},
		{Name: prefix + "Added", Expression: fmt.Sprintf(
			"variables.%[1]s.filter(p, !variables.%[1]sExisting.exists(s, int(s) == p))", prefix)},
		{Name: prefix + "Merged", Expression: fmt.Sprintf(
			"variables.%[1]s.size() > 0 && variables.%[1]sValid && variables.%[1]sAdded.size() > 0 ? "+
				"optional.of((variables.%[1]sExisting + variables.%[1]sAdded.map(p, string(p))).join(',')) : optional.none()", prefix)},
	}
}

// notInjected mirrors the webhook: a pod Istio has already injected (its
// proxy among the containers or init containers, or its status annotation)
// gets nothing. With native mode this only happens to pods created already
// injected (istioctl kube-inject), since policies run before every webhook.
var notInjected = fmt.Sprintf(
	"!(has(object.metadata.annotations) && %[1]s in object.metadata.annotations) && "+
		"!object.spec.containers.exists(c, c.name == %[2]s) && "+
		"!(has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == %[2]s))",
	quote(policy.IstioSidecarStatus), quote(policy.IstioProxyContainer))

// ambientNamespace is true in a namespace in Istio's ambient data plane.
var ambientNamespace = fmt.Sprintf("has(namespaceObject.metadata.labels) && %[1]s in namespaceObject.metadata.labels && namespaceObject.metadata.labels[%[1]s] == %[2]s",
	quote(policy.IstioDataplaneModeLabel), quote(policy.IstioDataplaneModeAmbient))
