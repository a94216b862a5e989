package e2e

import (
	"fmt"
	"math/rand/v2"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// corpus is a generated set of namespaces, policies and pods for the
// differential test of native mode against webhook mode: the fixed part
// holds every row of docs/design.md, "What a verdict writes", and the awkward existing values; the random
// part (seeded, so a failure is reproducible) mixes priorities, modes,
// conflicts, namespaced and cluster policies, label selectors with every
// operator, ambient namespaces and pods that carry meshrole.io/* keys of
// their own.
type corpus struct {
	namespaces []*corev1.Namespace
	policies   []client.Object
	pods       []*corev1.Pod
}

// Label values the generator draws from; small sets so that selectors and
// pods meet often.
var (
	corpusApps   = []string{"eureka", "zookeeper", "kafka", "web", "api"}
	corpusTiers  = []string{"db", "frontend"}
	corpusPorts  = []v1alpha1.Port{2888, 3888, 8761, 9092}
	corpusTracks = []string{"stable", "canary"}
)

// corpusLabel marks a corpus's namespaces.
const corpusLabel = "meshrole-corpus"

func newCorpus(seed uint64, prefix string) *corpus {
	r := rand.New(rand.NewPCG(seed, 0x6d657368726f6c65))
	c := &corpus{}
	// Namespaces over several shards (first characters), two of them
	// selected by the cluster policies' namespace selectors.
	nsLabels := []map[string]string{
		{"tier": "apps"},
		{"tier": "apps", "team": "infra"},
		{"team": "infra"},
		{policy.IstioDataplaneModeLabel: policy.IstioDataplaneModeAmbient},
		{"tier": "apps", "team": "payments", policy.IstioDataplaneModeLabel: policy.IstioDataplaneModeAmbient},
	}
	for i, first := range []string{"a", "k", "m", "s", "9"} {
		lbls := map[string]string{policy.EnabledNamespaceLabel: "true", corpusLabel: prefix}
		for k, v := range nsLabels[i] {
			lbls[k] = v
		}
		c.namespaces = append(c.namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("%s%s-%d", first, prefix, i), Labels: lbls,
		}})
	}

	c.fixed()

	// Random policies: up to three per namespace, three cluster policies.
	for _, ns := range c.namespaces {
		for j := range r.IntN(4) {
			c.policies = append(c.policies, &v1alpha1.MeshRolePolicy{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("random-%d", j), Namespace: ns.Name},
				Spec:       randomSpec(r),
			})
		}
	}
	for j := range 3 {
		// Only this corpus's namespaces, whatever else the API server holds.
		nsSel := metav1.LabelSelector{MatchLabels: map[string]string{corpusLabel: prefix, "tier": "apps"}}
		if r.IntN(2) == 0 {
			nsSel.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"infra"}}}
		}
		c.policies = append(c.policies, &v1alpha1.ClusterMeshRolePolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-random-%d", prefix, j)},
			Spec:       v1alpha1.ClusterMeshRolePolicySpec{NamespaceSelector: nsSel, PolicySpec: randomSpec(r)},
		})
	}

	// Random pods: every namespace, random labels and existing annotations.
	for _, ns := range c.namespaces {
		for j := range 8 {
			c.pods = append(c.pods, newPod(ns.Name, fmt.Sprintf("random-%d", j), randomPodLabels(r), randomAnnotations(r)))
		}
	}
	return c
}

// fixed adds, in the first namespace, a policy for every row of docs/design.md, "What a verdict writes",
// and pods with the existing values meshrole must merge into or leave alone.
func (c *corpus) fixed() {
	ns := c.namespaces[0].Name
	c.policies = append(c.policies, &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "rows", Namespace: ns},
		Spec: v1alpha1.PolicySpec{Priority: 100, Workloads: []v1alpha1.Workload{
			{Name: "skip", Selector: sel("row", "skip"), Role: v1alpha1.RolePeerStateful},
			{Name: "bypass", Selector: sel("row", "bypass"), Role: v1alpha1.RolePeerStateful,
				Peer: &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{3888, 2888}}},
			{Name: "inject", Selector: sel("row", "inject"), Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{ExcludeOutboundPorts: []v1alpha1.Port{8761}}},
			{Name: "unchanged", Selector: sel("row", "unchanged"), Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged}},
		}},
	})
	// A tie at priority 100 with another role: a conflict on every skip row.
	c.policies = append(c.policies, &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "rows-tie", Namespace: ns},
		Spec: v1alpha1.PolicySpec{Priority: 100, Workloads: []v1alpha1.Workload{
			{Name: "skip-as-client", Selector: sel("row", "skip"), Role: v1alpha1.RoleClientStateless},
		}},
	})
	// A DryRun policy outranking everything for the web pods of another namespace.
	c.policies = append(c.policies, &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "preview", Namespace: c.namespaces[3].Name},
		Spec: v1alpha1.PolicySpec{Priority: 50, Mode: v1alpha1.ModeDryRun, Workloads: []v1alpha1.Workload{
			{Name: "web-peers", Selector: sel("app", "web"), Role: v1alpha1.RolePeerStateful,
				Peer: &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{9092}}},
		}},
	})
	c.pods = append(c.pods, newPod(c.namespaces[3].Name, "fixed-web", map[string]string{"app": "web"}, nil))
	for _, row := range []string{"skip", "bypass", "inject", "unchanged"} {
		c.pods = append(c.pods, newPod(ns, "row-"+row, map[string]string{"row": row}, nil))
	}
	existing := []map[string]string{
		{policy.IstioExcludeOutboundPorts: " 80 , 8761"},                                     // already there, blanks kept
		{policy.IstioExcludeOutboundPorts: "9090", policy.IstioExcludeInboundPorts: "2888"},  // merged as sets
		{policy.IstioExcludeOutboundPorts: "http", policy.IstioExcludeInboundPorts: "70000"}, // not port lists: left alone
		{policy.IstioExcludeInboundPorts: "", policy.IstioExcludeOutboundPorts: "000080"},    // empty and zero-padded
		{policy.IstioInjectKey: "true", policy.PolicyAnnotation: "forged"},                   // the author cannot escape
		{policy.IstioSidecarStatus: "{}"},                                                    // already injected
	}
	for i, ann := range existing {
		for _, row := range []string{"bypass", "inject"} {
			c.pods = append(c.pods, newPod(ns, fmt.Sprintf("existing-%d-%s", i, row), map[string]string{"row": row}, ann))
		}
	}
	injected := newPod(ns, "istio-proxy-present", map[string]string{"row": "skip"}, nil)
	injected.Spec.InitContainers = []corev1.Container{{Name: policy.IstioProxyContainer, Image: "proxy"}}
	c.pods = append(c.pods, injected)
}

func sel(k, v string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
}

func pick[T any](r *rand.Rand, from []T) T { return from[r.IntN(len(from))] }

func subset[T any](r *rand.Rand, from []T) []T {
	var out []T
	for _, v := range from {
		if r.IntN(2) == 0 {
			out = append(out, v)
		}
	}
	return out
}

func randomSpec(r *rand.Rand) v1alpha1.PolicySpec {
	spec := v1alpha1.PolicySpec{Priority: pick(r, []int32{0, 0, 1, 5})}
	if r.IntN(6) == 0 {
		spec.Mode = v1alpha1.ModeDryRun
	}
	for k := range 1 + r.IntN(3) {
		w := v1alpha1.Workload{Name: fmt.Sprintf("w%d", k), Selector: randomSelector(r)}
		if r.IntN(2) == 0 {
			w.Role = v1alpha1.RolePeerStateful
			if r.IntN(2) == 0 {
				ports := subset(r, corpusPorts)
				if len(ports) == 0 {
					ports = corpusPorts[:1]
				}
				w.Peer = &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: ports}
			}
		} else {
			w.Role = v1alpha1.RoleClientStateless
			w.Client = &v1alpha1.ClientSettings{ExcludeOutboundPorts: subset(r, corpusPorts)}
			switch r.IntN(6) {
			case 0:
				w.Client.Proxy = v1alpha1.ClientProxyUnchanged
			case 1:
				w.Client.Proxy = v1alpha1.ClientProxySidecar
			}
		}
		spec.Workloads = append(spec.Workloads, w)
	}
	return spec
}

func randomSelector(r *rand.Rand) metav1.LabelSelector {
	var s metav1.LabelSelector
	switch r.IntN(6) {
	case 0: // empty: every pod
	case 1:
		s.MatchLabels = map[string]string{"app": pick(r, corpusApps)}
	case 2:
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: subsetAtLeastOne(r, corpusApps)}}
	case 3:
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{pick(r, corpusTiers)}}}
	case 4:
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "track", Operator: metav1.LabelSelectorOpExists}}
	case 5:
		s.MatchLabels = map[string]string{"app": pick(r, corpusApps)}
		s.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "track", Operator: metav1.LabelSelectorOpDoesNotExist}}
	}
	return s
}

func subsetAtLeastOne(r *rand.Rand, from []string) []string {
	out := subset(r, from)
	if len(out) == 0 {
		out = []string{pick(r, from)}
	}
	return out
}

func randomPodLabels(r *rand.Rand) map[string]string {
	l := map[string]string{"app": pick(r, corpusApps)}
	if r.IntN(2) == 0 {
		l["tier"] = pick(r, corpusTiers)
	}
	if r.IntN(3) == 0 {
		l["track"] = pick(r, corpusTracks)
	}
	return l
}

func randomAnnotations(r *rand.Rand) map[string]string {
	a := map[string]string{}
	switch r.IntN(6) {
	case 0:
		a[policy.IstioExcludeOutboundPorts] = "8761,15020"
	case 1:
		a[policy.IstioExcludeInboundPorts] = "x,2888"
	case 2:
		a[policy.IstioInjectKey] = pick(r, []string{"true", "false"})
	case 3: // copied from a pod meshrole admitted elsewhere, or forged
		a[policy.RoleAnnotation] = "peer-stateful"
		a[policy.ConflictAnnotation] = "cluster/x/y=client-stateless"
		a[policy.DryRunAnnotation] = "{}"
	}
	if len(a) == 0 {
		return nil
	}
	return a
}

// ambient reports whether a namespace of the corpus is in Istio's ambient
// data plane.
func (c *corpus) ambient(namespace string) bool {
	for _, ns := range c.namespaces {
		if ns.Name == namespace {
			return policy.IsAmbient(labels.Set(ns.Labels))
		}
	}
	return false
}

// namespaceNames lists the corpus's namespaces.
func (c *corpus) namespaceNames() []string {
	names := make([]string, len(c.namespaces))
	for i, ns := range c.namespaces {
		names[i] = ns.Name
	}
	return slices.Clone(names)
}
