// Package native is meshrole's native mode: it compiles the decision engine's
// Plan into MutatingAdmissionPolicies and bindings, which the API server runs
// before every mutating webhook, with no webhook hop on the pod path.
//
// The generated CEL evaluates label selectors and looks up answers that
// pkg/policy resolved in Go; it holds no rule of its own. Namespaces are
// split into shards by the first character of their name, a partition that
// never changes: every pod is decided by exactly one policy object, so any
// change to a namespace's decision is one object's update, and a pod sees
// either the old decision or the new one, never a mix.
package native

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

const (
	// NamePrefix starts the name of every generated policy and binding.
	NamePrefix = "meshrole-"
	// ManagedByLabel marks the generated objects; the reconciler owns
	// exactly the objects that carry it.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "meshrole"
	// ShardLabel names the shard an object decides for.
	ShardLabel = "meshrole.io/native-shard"
)

// shards are the first characters a namespace name can have (an RFC 1123
// label starts with a lower-case letter or a digit).
var shards = strings.Split("0123456789abcdefghijklmnopqrstuvwxyz", "")

// Options shape the generated objects.
type Options struct {
	// FailurePolicy applies when a policy cannot be evaluated; Fail when empty.
	FailurePolicy admissionregistrationv1.FailurePolicyType
	// ExcludedNamespaces are never mutated, even when labelled
	// meshrole.io/enabled=true (kube-system, meshrole's own namespace).
	ExcludedNamespaces []string
}

// Objects are the policies and bindings native mode keeps in the cluster.
type Objects struct {
	Policies []admissionregistrationv1.MutatingAdmissionPolicy
	Bindings []admissionregistrationv1.MutatingAdmissionPolicyBinding
}

// Compile turns a plan into one policy and one binding per shard that has
// something to decide.
func Compile(plan *policy.Plan, opts Options) (Objects, error) {
	var out Objects
	c := newCompiler(plan)
	for _, shard := range shards {
		var scopes []policy.Scope
		var fallback *policy.Scope
		for i := range plan.Scopes {
			sc := plan.Scopes[i]
			switch {
			case sc.Namespace == "":
				fallback = &plan.Scopes[i]
			case strings.HasPrefix(sc.Namespace, shard):
				scopes = append(scopes, sc)
			}
		}
		if len(scopes) == 0 && fallback == nil {
			continue
		}
		spec, err := c.shardSpec(shard, scopes, fallback, opts)
		if err != nil {
			return Objects{}, err
		}
		name := NamePrefix + "shard-" + shard
		meta := metav1.ObjectMeta{Name: name, Labels: map[string]string{ManagedByLabel: ManagedByValue, ShardLabel: shard}}
		out.Policies = append(out.Policies, admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: meta, Spec: spec})
		out.Bindings = append(out.Bindings, admissionregistrationv1.MutatingAdmissionPolicyBinding{
			ObjectMeta: *meta.DeepCopy(),
			Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
				PolicyName:     name,
				MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: enabledNamespaces(opts.ExcludedNamespaces)},
			},
		})
	}
	return out, nil
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

func (c *compiler) shardSpec(shard string, scopes []policy.Scope, fallback *policy.Scope, opts Options) (admissionregistrationv1.MutatingAdmissionPolicySpec, error) {
	all := slices.Clone(scopes)
	if fallback != nil {
		all = append(all, *fallback)
	}
	used := map[int]bool{}
	for _, sc := range all {
		for _, i := range sc.Policies {
			used[i] = true
		}
	}
	policyIndexes := slices.Sorted(maps.Keys(used))

	vars := []admissionregistrationv1.Variable{
		{Name: "labels", Expression: "has(object.metadata.labels) ? object.metadata.labels : {}"},
		{Name: "annotations", Expression: "has(object.metadata.annotations) ? object.metadata.annotations : {}"},
	}
	if slices.ContainsFunc(policyIndexes, func(i int) bool { return c.plan.Policies[i].NamespaceSelector != nil }) {
		vars = append(vars, admissionregistrationv1.Variable{
			Name:       "namespaceLabels",
			Expression: "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}",
		})
	}
	for _, i := range policyIndexes {
		expr, err := c.firstMatch(i)
		if err != nil {
			return admissionregistrationv1.MutatingAdmissionPolicySpec{}, err
		}
		vars = append(vars, admissionregistrationv1.Variable{Name: policyVar(i), Expression: expr})
	}

	// winner and dryRun: per scope, a chain in precedence order.
	winner := c.byNamespace(scopes, fallback, func(sc policy.Scope) string {
		var b strings.Builder
		for _, i := range sc.Policies {
			if c.plan.Policies[i].Mode == v1alpha1.ModeDryRun {
				continue
			}
			fmt.Fprintf(&b, "variables.%s >= 0 ? %d + variables.%s : ", policyVar(i), c.firstID[i], policyVar(i))
		}
		b.WriteString("-1")
		return b.String()
	})
	vars = append(vars, admissionregistrationv1.Variable{Name: "winner", Expression: winner})
	winners := c.reachable(all, func(p *policy.PlannedPolicy) bool { return p.Mode != v1alpha1.ModeDryRun })

	var mutations []admissionregistrationv1.Mutation
	mutations = append(mutations, applyChain("winner", winners, func(id int) string {
		e := c.entries[id]
		return metadataObject(e.Effect.Labels, e.Effect.Annotations)
	}))

	// Conflicts: which entries tie with the winner depends only on the winner.
	var conflictArms []string
	for _, id := range winners {
		e := c.entries[id]
		if len(e.Conflicts) == 0 {
			continue
		}
		parts := make([]string, len(e.Conflicts))
		for n, ref := range e.Conflicts {
			other := &c.plan.Policies[ref.Policy].Entries[ref.Entry]
			parts[n] = fmt.Sprintf("variables.%s == %d ? [%s] : []", policyVar(ref.Policy), ref.Entry, quote(other.ConflictText))
		}
		conflictArms = append(conflictArms, fmt.Sprintf("variables.winner == %d ? (%s) : ", id, "("+strings.Join(parts, ") + (")+")"))
	}
	if len(conflictArms) > 0 {
		vars = append(vars, admissionregistrationv1.Variable{Name: "conflicts", Expression: strings.Join(conflictArms, "") + "[]"})
		mutations = append(mutations, applyConfiguration(fmt.Sprintf(
			"variables.conflicts.size() > 0 ? Object{metadata: Object.metadata{annotations: {%s: variables.conflicts.join(\",\")}}} : Object{}",
			quote(policy.ConflictAnnotation))))
	}

	// DryRun: the first matching policy, when it is a DryRun one.
	dryRuns := c.reachable(all, func(p *policy.PlannedPolicy) bool { return p.Mode == v1alpha1.ModeDryRun })
	if len(dryRuns) > 0 {
		dryRun := c.byNamespace(scopes, fallback, func(sc policy.Scope) string {
			var b strings.Builder
			for _, i := range sc.Policies {
				v := policyVar(i)
				if c.plan.Policies[i].Mode == v1alpha1.ModeDryRun {
					fmt.Fprintf(&b, "variables.%s >= 0 ? %d + variables.%s : ", v, c.firstID[i], v)
				} else {
					fmt.Fprintf(&b, "variables.%s >= 0 ? -1 : ", v)
				}
			}
			b.WriteString("-1")
			return b.String()
		})
		vars = append(vars, admissionregistrationv1.Variable{Name: "dryRun", Expression: dryRun})
		mutations = append(mutations, applyChain("dryRun", dryRuns, func(id int) string {
			e := c.entries[id]
			return metadataObject(nil, map[string]string{policy.DryRunAnnotation: e.DryRunReport})
		}))
	}

	// Port lists, merged as sets into what the pod already has.
	for n, key := range []string{policy.IstioExcludeInboundPorts, policy.IstioExcludeOutboundPorts} {
		var arms []string
		for _, id := range winners {
			e := c.entries[id]
			if ports := e.Effect.Ports[key]; len(ports) > 0 {
				list := make([]string, len(ports))
				for j, p := range ports {
					list[j] = strconv.Itoa(int(p))
				}
				arms = append(arms, fmt.Sprintf("variables.winner == %d ? [%s] : ", id, strings.Join(list, ", ")))
			}
		}
		if len(arms) == 0 {
			continue
		}
		v, merge := portListMerge(fmt.Sprintf("ports%d", n), key, strings.Join(arms, "")+"[]")
		vars = append(vars, v...)
		mutations = append(mutations, merge)
	}

	failurePolicy := opts.FailurePolicy
	if failurePolicy == "" {
		failurePolicy = admissionregistrationv1.Fail
	}
	return admissionregistrationv1.MutatingAdmissionPolicySpec{
		MatchConstraints: &admissionregistrationv1.MatchResources{
			ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				},
			}},
		},
		MatchConditions: []admissionregistrationv1.MatchCondition{
			{Name: "shard", Expression: fmt.Sprintf("request.namespace.startsWith(%s)", quote(shard))},
			{Name: "not-injected-by-istio", Expression: notInjected},
		},
		Variables:          vars,
		Mutations:          mutations,
		FailurePolicy:      &failurePolicy,
		ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
	}, nil
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

// byNamespace picks the scope of the pod's namespace: a chain over this
// shard's namespaces with MeshRolePolicies, then the default scope.
func (c *compiler) byNamespace(scopes []policy.Scope, fallback *policy.Scope, body func(policy.Scope) string) string {
	var b strings.Builder
	for _, sc := range scopes {
		fmt.Fprintf(&b, "request.namespace == %s ? (%s) : ", quote(sc.Namespace), body(sc))
	}
	if fallback != nil {
		fmt.Fprintf(&b, "(%s)", body(*fallback))
	} else {
		b.WriteString("-1")
	}
	return b.String()
}

// reachable lists the ids of the entries of the policies in the scopes that
// keep selects, in ascending order.
func (c *compiler) reachable(scopes []policy.Scope, keep func(*policy.PlannedPolicy) bool) []int {
	seen := map[int]bool{}
	for _, sc := range scopes {
		for _, i := range sc.Policies {
			if !keep(&c.plan.Policies[i]) {
				continue
			}
			for k := range c.plan.Policies[i].Entries {
				seen[c.firstID[i]+k] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// applyChain is an ApplyConfiguration mutation choosing, by the value of a
// variable, one of the given entries' objects.
func applyChain(variable string, ids []int, object func(id int) string) admissionregistrationv1.Mutation {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "variables.%s == %d ? %s : ", variable, id, object(id))
	}
	b.WriteString("Object{}")
	return applyConfiguration(b.String())
}

func applyConfiguration(expr string) admissionregistrationv1.Mutation {
	return admissionregistrationv1.Mutation{
		PatchType:          admissionregistrationv1.PatchTypeApplyConfiguration,
		ApplyConfiguration: &admissionregistrationv1.ApplyConfiguration{Expression: expr},
	}
}

// metadataObject is an apply configuration that sets these labels and
// annotations.
func metadataObject(labelValues, annotationValues map[string]string) string {
	var fields []string
	if len(labelValues) > 0 {
		fields = append(fields, "labels: "+stringMap(labelValues))
	}
	if len(annotationValues) > 0 {
		fields = append(fields, "annotations: "+stringMap(annotationValues))
	}
	if len(fields) == 0 {
		return "Object{}"
	}
	return "Object{metadata: Object.metadata{" + strings.Join(fields, ", ") + "}}"
}

func stringMap(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, quote(k)+": "+quote(m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// portListMerge adds the winner's ports to a port-list annotation as a set,
// like policy.MergePortList: existing entries keep their order, new ports
// follow in ascending order, and a value Istio would not parse (anything but
// comma-separated 16-bit unsigned integers) is left exactly as it is.
func portListMerge(prefix, key, portsExpr string) ([]admissionregistrationv1.Variable, admissionregistrationv1.Mutation) {
	k := quote(key)
	vars := []admissionregistrationv1.Variable{
		{Name: prefix, Expression: portsExpr},
		{Name: prefix + "Existing", Expression: fmt.Sprintf(
			"%[1]s in variables.annotations && variables.annotations[%[1]s].trim() != '' ? variables.annotations[%[1]s].split(',').map(s, s.trim()) : []", k)},
		{Name: prefix + "Valid", Expression: fmt.Sprintf(
			"variables.%sExisting.all(s, s.matches('^0*[0-9]{1,5}$') && int(s) <= 65535)", prefix)},
		{Name: prefix + "Added", Expression: fmt.Sprintf(
			"variables.%[1]s.filter(p, !variables.%[1]sExisting.exists(s, int(s) == p))", prefix)},
	}
	merge := applyConfiguration(fmt.Sprintf(
		"variables.%[1]s.size() > 0 && variables.%[1]sValid && variables.%[1]sAdded.size() > 0 ? "+
			"Object{metadata: Object.metadata{annotations: {%[2]s: (variables.%[1]sExisting + variables.%[1]sAdded.map(p, string(p))).join(',')}}} : Object{}",
		prefix, k))
	return vars, merge
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
		quoted := make([]string, len(values))
		for j, v := range values {
			quoted[j] = quote(v)
		}
		in := fmt.Sprintf("%s[%s] in [%s]", m, key, strings.Join(quoted, ", "))
		if len(values) == 1 {
			in = fmt.Sprintf("%s[%s] == %s", m, key, quoted[0])
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

// quote is a CEL string literal; CEL's escapes are a superset of Go's.
func quote(s string) string { return strconv.Quote(s) }
