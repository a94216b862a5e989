// Package native is meshrole's native mode: it compiles the decision engine's
// Plan into MutatingAdmissionPolicies and bindings, which the API server runs
// before every mutating webhook, with no webhook hop on the pod path.
//
// The generated CEL evaluates label selectors and looks up answers that
// pkg/policy resolved in Go; it holds no rule of its own.
//
// The namespaces with MeshRolePolicies are spread by a hash of their name
// over a fixed number of bucket objects (meshrole-bucket-NN, each bound to
// its namespaces by name); each namespace's whole decision, cluster policies
// included, is in its bucket. One more object, meshrole-cluster, decides
// every other enabled namespace with the cluster policies. A change to a
// namespace's decision is then one object's update: a pod sees the old
// decision or the new one, never a mix. The API server checks every binding
// on every pod create in the cluster, so the number of objects stays fixed
// however many namespaces have policies. When a namespace gets its first
// MeshRolePolicy or loses its last, its decision moves between the cluster
// object and its bucket; the Reconciler hands it over in steps during which
// both hold the same decision for it (see Coverage).
package native

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

const (
	// ClusterObjectName decides the namespaces that have no policies.
	ClusterObjectName = "meshrole-cluster"
	// Buckets is the number of bucket objects namespaces are spread over.
	Buckets = 16
	// ManagedByLabel marks the generated objects; the reconciler owns
	// exactly the objects that carry it.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "meshrole"
	// PhasesAnnotation records, on a bucket object, the phase of each of
	// its namespaces: JSON {"<namespace>": {"phase": ..., "since": ...}}.
	PhasesAnnotation = "meshrole.io/phases"
)

// BucketOf names the bucket object that holds a namespace's decision.
func BucketOf(namespace string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(namespace))
	return fmt.Sprintf("meshrole-bucket-%02d", h.Sum32()%Buckets)
}

// Phase of a namespace in its bucket object.
type Phase string

const (
	// PhaseArriving: the namespace just got its bucket entry; the cluster
	// object still decides it too, with the same decision.
	PhaseArriving Phase = "Arriving"
	// PhaseOwner: its bucket alone decides the namespace.
	PhaseOwner Phase = "Owner"
	// PhaseRetiring: the namespace lost its last MeshRolePolicy; its bucket
	// alone decides it still, with the cluster policies' decision.
	PhaseRetiring Phase = "Retiring"
	// PhaseReleased: the cluster object decides the namespace again, and its
	// bucket too, with the same decision, until the entry goes.
	PhaseReleased Phase = "Released"
)

// PhaseState is a namespace's phase in its bucket and since when.
type PhaseState struct {
	Phase Phase  `json:"phase"`
	Since string `json:"since,omitempty"`
}

// maxExpressionLength is the API server's limit on a CEL expression, in code
// points (k8s.io/apiserver/pkg/cel/environment).
const maxExpressionLength = 100_000

// maxSpecBytes keeps a generated policy well inside etcd's 1.5 MiB limit on
// a stored object.
const maxSpecBytes = 1 << 20

// Options shape the generated objects.
type Options struct {
	// FailurePolicy applies when a policy cannot be evaluated; Fail when empty.
	FailurePolicy admissionregistrationv1.FailurePolicyType
	// ExcludedNamespaces are never mutated, even when labelled
	// meshrole.io/enabled=true (kube-system, meshrole's own namespace).
	ExcludedNamespaces []string
}

// Coverage says which namespaces are being handed over between their bucket
// and the cluster object. A namespace with MeshRolePolicies that is in
// neither set is decided by its bucket alone.
type Coverage struct {
	// Arriving namespaces have MeshRolePolicies and a bucket entry, and the
	// cluster object decides them too, with the same decision, until the API
	// server surely sees the bucket entry.
	Arriving map[string]bool
	// Retiring namespaces have no MeshRolePolicies left; their bucket entry
	// holds the cluster policies' decision, and the cluster object still
	// leaves them alone.
	Retiring map[string]bool
	// Released namespaces are Retiring ones the cluster object decides
	// again; their bucket entry goes next.
	Released map[string]bool
	// Withheld namespaces have MeshRolePolicies but no bucket entry yet: a
	// Released one that got a policy again leaves its bucket first, and the
	// cluster object decides it with the cluster policies meanwhile.
	Withheld map[string]bool
}

// Object is one generated policy with its binding, and for a bucket the
// phase of each of its namespaces.
type Object struct {
	Policy  admissionregistrationv1.MutatingAdmissionPolicy
	Binding admissionregistrationv1.MutatingAdmissionPolicyBinding
	Phases  map[string]Phase
}

// Compile turns a plan into the objects that decide every enabled namespace:
// the buckets that hold namespaces with MeshRolePolicies (or retiring ones),
// and the cluster object when it has something to decide. It fails when a
// bucket or the cluster policies are more than one generated object can
// hold.
func Compile(plan *policy.Plan, opts Options, cov Coverage) ([]Object, error) {
	c := newCompiler(plan)
	var fallback *policy.Scope
	own := map[string]policy.Scope{}
	for i := range plan.Scopes {
		sc := plan.Scopes[i]
		if sc.Namespace == "" {
			fallback = &plan.Scopes[i]
			continue
		}
		if !slices.Contains(opts.ExcludedNamespaces, sc.Namespace) && !cov.Withheld[sc.Namespace] {
			own[sc.Namespace] = sc
		}
	}
	// A retiring namespace's bucket takes the cluster policies' decision.
	// So does a released one's, even when the namespace has policies again:
	// the cluster object decides it too, and the two must agree.
	for ns := range setUnion(cov.Retiring, cov.Released) {
		if slices.Contains(opts.ExcludedNamespaces, ns) {
			continue
		}
		if _, ok := own[ns]; ok && !cov.Released[ns] {
			continue
		}
		sc := policy.Scope{Namespace: ns}
		if fallback != nil {
			sc.Policies = fallback.Policies
		}
		own[ns] = sc
	}

	buckets := map[string][]string{}
	phases := map[string]Phase{}
	var excluded, arriving []string
	for _, ns := range slices.Sorted(maps.Keys(own)) {
		buckets[BucketOf(ns)] = append(buckets[BucketOf(ns)], ns)
		switch {
		case cov.Arriving[ns]:
			phases[ns] = PhaseArriving
			arriving = append(arriving, ns)
		case cov.Released[ns]:
			phases[ns] = PhaseReleased
		case cov.Retiring[ns]:
			phases[ns] = PhaseRetiring
			excluded = append(excluded, ns)
		default:
			phases[ns] = PhaseOwner
			excluded = append(excluded, ns)
		}
	}

	var out []Object
	for _, name := range slices.Sorted(maps.Keys(buckets)) {
		namespaces := buckets[name]
		scopes := make([]policy.Scope, len(namespaces))
		bucketPhases := map[string]Phase{}
		for i, ns := range namespaces {
			scopes[i] = own[ns]
			bucketPhases[ns] = phases[ns]
		}
		spec, err := c.spec(scopes, nil, nil, opts)
		if err != nil {
			return nil, fmt.Errorf("%s (namespaces %s): %w", name, strings.Join(namespaces, ", "), err)
		}
		selector := &metav1.LabelSelector{
			MatchLabels: map[string]string{policy.EnabledNamespaceLabel: "true"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: namespaces,
			}},
		}
		o := object(name, spec, selector)
		o.Phases = bucketPhases
		out = append(out, o)
	}

	if fallback != nil || len(arriving) > 0 {
		var branches []policy.Scope
		for _, ns := range arriving {
			branches = append(branches, own[ns])
		}
		spec, err := c.spec(branches, fallback, excluded, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ClusterObjectName, err)
		}
		out = append(out, object(ClusterObjectName, spec, enabledNamespaces(opts.ExcludedNamespaces)))
	}
	return out, nil
}

func setUnion(a, b map[string]bool) map[string]bool {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]bool{}
	}
	maps.Copy(out, b)
	return out
}

func object(name string, spec admissionregistrationv1.MutatingAdmissionPolicySpec, namespaces *metav1.LabelSelector) Object {
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Labels: map[string]string{ManagedByLabel: ManagedByValue}}
	}
	return Object{
		Policy: admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: meta(), Spec: spec},
		Binding: admissionregistrationv1.MutatingAdmissionPolicyBinding{
			ObjectMeta: meta(),
			Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
				PolicyName:     name,
				MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: namespaces},
			},
		},
	}
}

// enabledNamespaces is the webhook configuration's namespace selector.
func enabledNamespaces(excluded []string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{policy.EnabledNamespaceLabel: "true"}}
	if len(excluded) > 0 {
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: slices.Sorted(slices.Values(excluded)),
		}}
	}
	return s
}

type compiler struct {
	plan *policy.Plan
	// firstID numbers entries across the plan: entry k of policy i has the
	// id firstID[i]+k, the value the CEL variables winner and dryRun hold.
	firstID []int
	entries []*policy.PlannedEntry // by id
}

func newCompiler(plan *policy.Plan) *compiler {
	c := &compiler{plan: plan, firstID: make([]int, len(plan.Policies))}
	for i := range plan.Policies {
		c.firstID[i] = len(c.entries)
		for k := range plan.Policies[i].Entries {
			c.entries = append(c.entries, &plan.Policies[i].Entries[k])
		}
	}
	return c
}

// spec is one generated policy: branches decide the namespaces they name,
// fallback (may be nil) every other namespace the binding selects, except
// the excluded ones.
func (c *compiler) spec(branches []policy.Scope, fallback *policy.Scope, excluded []string, opts Options) (admissionregistrationv1.MutatingAdmissionPolicySpec, error) {
	scopes := slices.Clone(branches)
	if fallback != nil {
		scopes = append(scopes, *fallback)
	}
	policies := usedPolicies(scopes)
	vars, err := c.matchVariables(policies, scopes, branches, fallback != nil)
	if err != nil {
		return admissionregistrationv1.MutatingAdmissionPolicySpec{}, err
	}
	writeVars, labelWrites, annotationWrites := c.writeVariables(policies)
	vars = append(vars, writeVars...)

	failurePolicy := opts.FailurePolicy
	if failurePolicy == "" {
		failurePolicy = admissionregistrationv1.Fail
	}
	spec := admissionregistrationv1.MutatingAdmissionPolicySpec{
		MatchConstraints: &admissionregistrationv1.MatchResources{
			ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				},
			}},
		},
		MatchConditions: matchConditions(excluded),
		Variables:       vars,
		Mutations: []admissionregistrationv1.Mutation{{
			PatchType: admissionregistrationv1.PatchTypeJSONPatch,
			JSONPatch: &admissionregistrationv1.JSONPatch{Expression: patchExpression(labelWrites, annotationWrites)},
		}},
		FailurePolicy:      &failurePolicy,
		ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
	}
	return spec, checkLengths(&spec)
}

// usedPolicies are the indexes of the policies any of the scopes uses, sorted.
func usedPolicies(scopes []policy.Scope) []int {
	used := map[int]bool{}
	for _, sc := range scopes {
		for _, i := range sc.Policies {
			used[i] = true
		}
	}
	return slices.Sorted(maps.Keys(used))
}

func (c *compiler) isDryRun(i int) bool { return c.plan.Policies[i].Mode == v1alpha1.ModeDryRun }

// writesDifferInAmbient reports whether an entry of policy i writes other
// keys in an ambient namespace, so that the CEL must tell them apart.
func (c *compiler) writesDifferInAmbient(i int) bool {
	return slices.ContainsFunc(c.plan.Policies[i].Entries, func(e policy.PlannedEntry) bool { return e.Ambient != nil })
}

// variants are what an entry writes, in sidecar namespaces and, where it
// differs, in ambient ones.
func variants(e *policy.PlannedEntry) []*policy.EntryWrites {
	if e.Ambient == nil {
		return []*policy.EntryWrites{&e.EntryWrites}
	}
	return []*policy.EntryWrites{&e.EntryWrites, e.Ambient}
}

// leaf is entry id's value of one write: f of what the entry writes, chosen
// by the namespace's data-plane mode where that makes a difference.
func (c *compiler) leaf(id int, f func(*policy.EntryWrites) string) string {
	e := c.entries[id]
	sidecar := f(&e.EntryWrites)
	if e.Ambient == nil {
		return sidecar
	}
	if ambient := f(e.Ambient); ambient != sidecar {
		return "(variables.ambient ? " + ambient + " : " + sidecar + ")"
	}
	return sidecar
}

// matchVariables find the entry that decides the pod: the pod's labels and
// annotations, each policy's first matching entry (p<i>), and from those,
// by the pod's namespace, the winner (the first Enforce match in the
// scope's order) and dryRun (the first match, when it is a DryRun one).
func (c *compiler) matchVariables(policies []int, scopes, branches []policy.Scope, hasFallback bool) ([]admissionregistrationv1.Variable, error) {
	vars := []admissionregistrationv1.Variable{
		{Name: "labels", Expression: "has(object.metadata.labels) ? object.metadata.labels : {}"},
		{Name: "annotations", Expression: "has(object.metadata.annotations) ? object.metadata.annotations : {}"},
	}
	if slices.ContainsFunc(policies, func(i int) bool { return c.plan.Policies[i].NamespaceSelector != nil }) {
		vars = append(vars, admissionregistrationv1.Variable{
			Name:       "namespaceLabels",
			Expression: "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}",
		})
	}
	if slices.ContainsFunc(policies, c.writesDifferInAmbient) {
		vars = append(vars, admissionregistrationv1.Variable{Name: "ambient", Expression: ambientNamespace})
	}
	for _, i := range policies {
		expr, err := c.firstMatch(i)
		if err != nil {
			return nil, err
		}
		vars = append(vars, admissionregistrationv1.Variable{Name: policyVar(i), Expression: expr})
	}

	// Flat lists rather than nested conditionals, so that no expression
	// nests deeper with more policies.
	var winners, dryRuns []string
	for s, sc := range scopes {
		var w, d []string
		for _, i := range sc.Policies {
			v := "variables." + policyVar(i)
			if c.isDryRun(i) {
				d = append(d, fmt.Sprintf("%s >= 0 ? %d + %s : -1", v, c.firstID[i], v))
			} else {
				w = append(w, fmt.Sprintf("%s >= 0 ? %d + %s : -1", v, c.firstID[i], v))
				d = append(d, fmt.Sprintf("%s >= 0 ? -2 : -1", v))
			}
		}
		vars = append(vars,
			admissionregistrationv1.Variable{Name: fmt.Sprintf("winners%d", s), Expression: "[" + strings.Join(w, ", ") + "].filter(x, x >= 0)"},
			admissionregistrationv1.Variable{Name: fmt.Sprintf("firstMatches%d", s), Expression: "[" + strings.Join(d, ", ") + "].filter(x, x != -1)"},
		)
		winners = append(winners, fmt.Sprintf("variables.winners%[1]d.size() > 0 ? variables.winners%[1]d[0] : -1", s))
		dryRuns = append(dryRuns, fmt.Sprintf("variables.firstMatches%[1]d.size() > 0 && variables.firstMatches%[1]d[0] >= 0 ? variables.firstMatches%[1]d[0] : -1", s))
	}
	return append(vars,
		admissionregistrationv1.Variable{Name: "winner", Expression: byNamespace(branches, hasFallback, winners)},
		admissionregistrationv1.Variable{Name: "dryRun", Expression: byNamespace(branches, hasFallback, dryRuns)},
	), nil
}

// write is one key the pod may get, and the variable that holds the
// optional string to write for it.
type write struct{ key, value string }

// writeVariables decide what the pod gets, given the winner (or the DryRun
// match): each key's value is a variable, optional.none() when the pod gets
// nothing for it, chosen through a balanced tree of conditionals, so that
// no expression nests deeper than log2 of the entries.
func (c *compiler) writeVariables(policies []int) (vars []admissionregistrationv1.Variable, labelWrites, annotationWrites []write) {
	var winnable, dryRunnable []int
	for _, i := range policies {
		for k := range c.plan.Policies[i].Entries {
			if c.isDryRun(i) {
				dryRunnable = append(dryRunnable, c.firstID[i]+k)
			} else {
				winnable = append(winnable, c.firstID[i]+k)
			}
		}
	}
	collect := func(v []admissionregistrationv1.Variable, w []write) []write {
		vars = append(vars, v...)
		return w
	}
	labelWrites = collect(c.keyWrites("label", winnable, func(w *policy.EntryWrites) map[string]string { return w.Effect.Labels }))
	annotationWrites = collect(c.keyWrites("annotation", winnable, func(w *policy.EntryWrites) map[string]string { return w.Effect.Annotations }))
	annotationWrites = append(annotationWrites, collect(c.conflictWrites(winnable))...)
	annotationWrites = append(annotationWrites, collect(c.dryRunWrites(dryRunnable))...)
	annotationWrites = append(annotationWrites, collect(c.portWrites(winnable))...)
	return vars, labelWrites, annotationWrites
}

// keyWrites are the keys any winnable entry writes into one map (kind is
// "label" or "annotation"), each with the variable <kind><n> that holds its
// value for the winner.
func (c *compiler) keyWrites(kind string, winnable []int, keyOf func(*policy.EntryWrites) map[string]string) ([]admissionregistrationv1.Variable, []write) {
	keys := map[string]bool{}
	for _, id := range winnable {
		for _, w := range variants(c.entries[id]) {
			for k := range keyOf(w) {
				keys[k] = true
			}
		}
	}
	var vars []admissionregistrationv1.Variable
	var writes []write
	for n, key := range slices.Sorted(maps.Keys(keys)) {
		name := fmt.Sprintf("%s%d", kind, n)
		vars = append(vars, admissionregistrationv1.Variable{Name: name, Expression: choose("variables.winner", winnable, func(id int) string {
			return c.leaf(id, func(w *policy.EntryWrites) string {
				if v, ok := keyOf(w)[key]; ok {
					return "optional.of(" + quote(v) + ")"
				}
				return "optional.none()"
			})
		}, "optional.none()")})
		writes = append(writes, write{key, "variables." + name})
	}
	return vars, writes
}

// conflictWrites write the conflict annotation: which entries tie with the
// winner depends only on the winner.
func (c *compiler) conflictWrites(winnable []int) ([]admissionregistrationv1.Variable, []write) {
	var conflicted []int
	for _, id := range winnable {
		if slices.ContainsFunc(variants(c.entries[id]), func(w *policy.EntryWrites) bool { return len(w.Conflicts) > 0 }) {
			conflicted = append(conflicted, id)
		}
	}
	if len(conflicted) == 0 {
		return nil, nil
	}
	return []admissionregistrationv1.Variable{
		{Name: "conflicts", Expression: choose("variables.winner", conflicted, func(id int) string {
			return c.leaf(id, func(w *policy.EntryWrites) string {
				if len(w.Conflicts) == 0 {
					return "[]"
				}
				parts := make([]string, len(w.Conflicts))
				for n, ref := range w.Conflicts {
					other := &c.plan.Policies[ref.Policy].Entries[ref.Entry]
					parts[n] = fmt.Sprintf("variables.%s == %d ? %s : ''", policyVar(ref.Policy), ref.Entry, quote(other.ConflictText))
				}
				return "[" + strings.Join(parts, ", ") + "].filter(s, s != '')"
			})
		}, "[]")},
		{Name: "conflict", Expression: "variables.conflicts.size() > 0 ? optional.of(variables.conflicts.join(',')) : optional.none()"},
	}, []write{{policy.ConflictAnnotation, "variables.conflict"}}
}

// dryRunWrites write the DryRun match's report.
func (c *compiler) dryRunWrites(dryRunnable []int) ([]admissionregistrationv1.Variable, []write) {
	if len(dryRunnable) == 0 {
		return nil, nil
	}
	return []admissionregistrationv1.Variable{{Name: "dryRunReport", Expression: choose("variables.dryRun", dryRunnable, func(id int) string {
		return c.leaf(id, func(w *policy.EntryWrites) string { return "optional.of(" + quote(w.DryRunReport) + ")" })
	}, "optional.none()")}}, []write{{policy.DryRunAnnotation, "variables.dryRunReport"}}
}

// portWrites write the winner's port lists, merged as sets into what the
// pod already has.
func (c *compiler) portWrites(winnable []int) ([]admissionregistrationv1.Variable, []write) {
	var vars []admissionregistrationv1.Variable
	var writes []write
	for n, key := range []string{policy.IstioExcludeInboundPorts, policy.IstioExcludeOutboundPorts} {
		var withPorts []int
		for _, id := range winnable {
			if slices.ContainsFunc(variants(c.entries[id]), func(w *policy.EntryWrites) bool { return len(w.Effect.Ports[key]) > 0 }) {
				withPorts = append(withPorts, id)
			}
		}
		if len(withPorts) == 0 {
			continue
		}
		prefix := fmt.Sprintf("ports%d", n)
		vars = append(vars, portListMerge(prefix, key, choose("variables.winner", withPorts, func(id int) string {
			return c.leaf(id, func(w *policy.EntryWrites) string {
				ports := w.Effect.Ports[key]
				list := make([]string, len(ports))
				for j, p := range ports {
					list[j] = strconv.Itoa(int(p))
				}
				return "[" + strings.Join(list, ", ") + "]"
			})
		}, "[]"))...)
		writes = append(writes, write{key, "variables." + prefix + "Merged"})
	}
	return vars, writes
}

// patchExpression is one JSON patch that writes everything: an
// ApplyConfiguration mutation is merged into the pod through its schema,
// which costs the API server milliseconds per mutation. JSONPatch values
// exist only in a mutation's expression, not in variables. An "add" also
// replaces; the map a key goes into must exist first.
func patchExpression(labelWrites, annotationWrites []write) string {
	var ops []string
	for _, field := range []struct {
		name   string
		writes []write
	}{{"labels", labelWrites}, {"annotations", annotationWrites}} {
		if len(field.writes) == 0 {
			continue
		}
		hasValue := make([]string, len(field.writes))
		for n, w := range field.writes {
			hasValue[n] = w.value + ".hasValue()"
		}
		ops = append(ops, fmt.Sprintf("(!has(object.metadata.%s) && (%s) ? [JSONPatch{op: 'add', path: '/metadata/%s', value: {}}] : [])",
			field.name, strings.Join(hasValue, " || "), field.name))
		for _, w := range field.writes {
			path := "/metadata/" + field.name + "/" + policy.KeyPointerToken(w.key)
			ops = append(ops, fmt.Sprintf("(%[1]s.hasValue() ? [JSONPatch{op: 'add', path: %[2]s, value: %[1]s.value()}] : [])", w.value, quote(path)))
		}
	}
	ops = append(ops, removeUnwritten(annotationWrites))
	return strings.Join(ops, " + ")
}

// removeUnwritten removes the pod's meshrole.io/* annotations that the
// verdict does not write: they are meshrole's record, and any other is stale
// or forged (policy.Effect.Apply does the same in webhook mode).
func removeUnwritten(annotationWrites []write) string {
	var written []string
	for _, w := range annotationWrites {
		if strings.HasPrefix(w.key, policy.KeyPrefix) {
			written = append(written, fmt.Sprintf("%s.hasValue() ? %s : ''", w.value, quote(w.key)))
		}
	}
	return fmt.Sprintf("variables.annotations.filter(k, k.startsWith(%s) && !(k in [%s])).map(k, JSONPatch{op: 'remove', path: '/metadata/annotations/' + jsonpatch.escapeKey(k)})",
		quote(policy.KeyPrefix), strings.Join(written, ", "))
}

// matchConditions leave alone pods Istio has already injected and the
// namespaces with objects of their own, the latter in chunks that keep each
// expression under the API server's limit.
func matchConditions(excluded []string) []admissionregistrationv1.MatchCondition {
	conditions := []admissionregistrationv1.MatchCondition{{Name: "not-injected-by-istio", Expression: notInjected}}
	for n, chunk := range chunks(excluded, 2000) {
		conditions = append(conditions, admissionregistrationv1.MatchCondition{
			Name:       fmt.Sprintf("decided-elsewhere-%d", n),
			Expression: "!(request.namespace in " + stringList(chunk) + ")",
		})
	}
	return conditions
}

// checkLengths refuses what the API server would refuse: an expression over
// its length limit, or an object too big to store (a namespace or the
// cluster with a thousand policies or more).
func checkLengths(spec *admissionregistrationv1.MutatingAdmissionPolicySpec) error {
	check := func(what, expr string) error {
		if n := utf8.RuneCountInString(expr); n > maxExpressionLength {
			return fmt.Errorf("the generated %s is %d characters long, over the API server's limit of %d: too many policies for native mode here; use webhook mode",
				what, n, maxExpressionLength)
		}
		return nil
	}
	for _, v := range spec.Variables {
		if err := check("variable "+v.Name, v.Expression); err != nil {
			return err
		}
	}
	for i, m := range spec.Mutations {
		if err := check(fmt.Sprintf("mutation %d", i), m.JSONPatch.Expression); err != nil {
			return err
		}
	}
	if b, err := json.Marshal(spec); err != nil || len(b) > maxSpecBytes {
		return fmt.Errorf("the generated policy is %d bytes, over meshrole's limit of %d (etcd stores at most 1.5 MiB): too many policies for native mode here; use webhook mode: %w",
			len(b), maxSpecBytes, err)
	}
	return nil
}

func chunks(list []string, n int) [][]string {
	var out [][]string
	for len(list) > 0 {
		k := min(n, len(list))
		out = append(out, list[:k])
		list = list[k:]
	}
	return out
}

func policyVar(i int) string { return "p" + strconv.Itoa(i) }

// firstMatch is the index of the policy's first workload entry whose
// selector matches the pod, or -1; for a cluster policy, -1 also when its
// namespace selector does not match the pod's namespace.
func (c *compiler) firstMatch(i int) (string, error) {
	p := &c.plan.Policies[i]
	var b strings.Builder
	for k := range p.Entries {
		sel, err := selectorCEL(p.Entries[k].Selector, "variables.labels")
		if err != nil {
			return "", fmt.Errorf("policy %s, workload %s: %w", p.Ref, p.Entries[k].Name, err)
		}
		fmt.Fprintf(&b, "(%s) ? %d : ", sel, k)
	}
	b.WriteString("-1")
	if p.NamespaceSelector == nil {
		return b.String(), nil
	}
	ns, err := selectorCEL(p.NamespaceSelector, "variables.namespaceLabels")
	if err != nil {
		return "", fmt.Errorf("policy %s, namespaceSelector: %w", p.Ref, err)
	}
	return fmt.Sprintf("!(%s) ? -1 : %s", ns, b.String()), nil
}
