package status

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// The Drifted condition.
const (
	ConditionDrifted  = "Drifted"
	ReasonPodsDrifted = "PodsDrifted"
	ReasonNoDrift     = "NoDrift"
)

// verdictIndex: the policy a pod's verdict names (meshrole.io/policy). It
// finds the pods of a policy that is gone, whose reach is unknown.
const verdictIndex = "meshrole.io/verdict"

func indexVerdict(o client.Object) []string {
	if p := o.GetAnnotations()[policy.PolicyAnnotation]; p != "" {
		return []string{p}
	}
	return nil
}

// DriftedPodsMetric is the gauge's name.
const DriftedPodsMetric = "meshrole_drifted_pods"

const driftedPodsHelp = `Pods that differ from what the current policies would give them if created now (see kubectl meshrole audit), by namespace and by the policy that decides them ("<namespace>/<name>" or "cluster/<name>"); policy="none" counts pods whose recorded verdict no enforced policy gives any more. They converge when restarted: kubectl meshrole rollout. Reported by the leader replica.`

// NoPolicy is the gauge's policy label for the drifted pods that record a
// verdict no enforced policy gives any more (policy.DriftVerdictGone): its
// policy was deleted, or edited so that it no longer selects them, and no
// other policy decides them. They are counted per namespace, whichever
// policy they record.
const NoPolicy = "none"

// driftGauge is meshrole_drifted_pods{namespace, policy}: the drifted pods of
// a namespace by the policy that decides them now (policy.Ref's form), and
// those no policy decides under NoPolicy, exported while above zero. Each
// policy's reconcile reports its series, one per namespace it reaches, and
// the NoPolicy series of those namespaces, which it counts from the same pods.
type driftGauge struct {
	gauge *prometheus.GaugeVec

	mu sync.Mutex
	// reached: cluster policy ref → namespace it reaches → drifted pods it
	// decides. A MeshRolePolicy reaches its own namespace at most, so none
	// is kept for it: a small map per policy was 2.5 MB at 10,000 policies.
	reached map[string]map[string]int
}

func newDriftGauge(registerer prometheus.Registerer) (*driftGauge, error) {
	g := &driftGauge{
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: DriftedPodsMetric,
			Help: driftedPodsHelp,
		}, []string{"namespace", "policy"}),
		reached: map[string]map[string]int{},
	}
	if err := registerer.Register(g.gauge); err != nil {
		return nil, fmt.Errorf("registering %s: %w", DriftedPodsMetric, err)
	}
	return g, nil
}

// namespacesOf lists the namespaces ref reached when it last reported; for
// a MeshRolePolicy, its own namespace.
func (g *driftGauge) namespacesOf(ref policy.Ref) []string {
	if g == nil {
		return nil
	}
	if !ref.Cluster() {
		return []string{ref.Namespace}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Sorted(maps.Keys(g.reached[ref.String()]))
}

// report replaces one policy's series: decided holds every namespace the
// policy reaches (zero included, which removes its series), nil once the
// policy is gone. orphaned sets the NoPolicy series of the namespaces it
// holds; zero removes one.
func (g *driftGauge) report(policyRef policy.Ref, decided, orphaned map[string]int) {
	if g == nil {
		return
	}
	ref := policyRef.String()
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := decided[policyRef.Namespace]; !policyRef.Cluster() && !ok {
		g.gauge.DeleteLabelValues(policyRef.Namespace, ref)
	}
	for ns := range g.reached[ref] {
		if _, ok := decided[ns]; !ok {
			g.gauge.DeleteLabelValues(ns, ref)
		}
	}
	for ns, n := range decided {
		if n == 0 {
			// Only drift is exported: a zero series for each namespace
			// every policy reaches would hold a series per policy and
			// namespace in memory, most of the webhook's at 10,000
			// policies, to say nothing.
			g.gauge.DeleteLabelValues(ns, ref)
		} else {
			g.gauge.WithLabelValues(ns, ref).Set(float64(n))
		}
	}
	if decided == nil || !policyRef.Cluster() {
		delete(g.reached, ref)
	} else {
		g.reached[ref] = maps.Clone(decided)
	}
	for ns, n := range orphaned {
		if n == 0 {
			g.gauge.DeleteLabelValues(ns, NoPolicy)
		} else {
			g.gauge.WithLabelValues(ns, NoPolicy).Set(float64(n))
		}
	}
}

// namespaceInfo is a namespace's name and labels, from the cache.
type namespaceInfo struct {
	name   string
	labels map[string]string
}

// reachedNamespaces lists the namespaces reach covers. A MeshRolePolicy's
// is its own namespace at most; a cluster policy's come from listing the
// cached namespaces.
func reachedNamespaces(ctx context.Context, c client.Reader, ref policy.Ref, reach policy.Reach) ([]namespaceInfo, error) {
	var candidates []metav1.PartialObjectMetadata
	if ref.Cluster() {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
		if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing namespaces: %w", err)
		}
		candidates = list.Items
	} else {
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		err := c.Get(ctx, client.ObjectKey{Name: ref.Namespace}, ns)
		if client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("reading namespace %s: %w", ref.Namespace, err)
		}
		if err == nil {
			candidates = append(candidates, *ns)
		}
	}
	var out []namespaceInfo
	for i := range candidates {
		ns := &candidates[i]
		if reach.Namespace(ns.Name, labels.Set(ns.Labels)) {
			out = append(out, namespaceInfo{name: ns.Name, labels: ns.Labels})
		}
	}
	return out, nil
}

// policyStore loads the policies that decide for pods of these namespaces
// into a Store, from the cache, so drift is decided by the engine the
// webhook runs. Drift only reads what it lists (the Store and DetectDrift
// write to no policy or pod), so the lists share the cache's objects rather
// than copy every policy and pod at each reconcile. In native mode the
// policies it refuses take no part in any decision (policy.Plan), so they
// are left out here too.
func policyStore(ctx context.Context, c client.Reader, namespaces []namespaceInfo, nativeMode bool) (*policy.Store, error) {
	refused := func(spec *v1alpha1.PolicySpec) bool { return nativeMode && len(policy.NativeProblems(spec)) > 0 }
	store := policy.NewStore()
	for _, ns := range namespaces {
		list := &v1alpha1.MeshRolePolicyList{}
		if err := c.List(ctx, list, client.InNamespace(ns.name), client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing the MeshRolePolicies of %s: %w", ns.name, err)
		}
		for i := range list.Items {
			if !refused(&list.Items[i].Spec) {
				store.SetMeshRolePolicy(&list.Items[i])
			}
		}
	}
	cluster := &v1alpha1.ClusterMeshRolePolicyList{}
	if err := c.List(ctx, cluster, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing ClusterMeshRolePolicies: %w", err)
	}
	for i := range cluster.Items {
		if !refused(&cluster.Items[i].Spec.PolicySpec) {
			store.SetClusterMeshRolePolicy(&cluster.Items[i])
		}
	}
	return store, nil
}

// driftReport is what one policy's reconcile found.
type driftReport struct {
	// byEntry: drifted pods per workload entry of the policy.
	byEntry map[string]int32
	// byNamespace: drifted pods the policy decides, per namespace it
	// reaches, zero included.
	byNamespace map[string]int
	// orphaned: drifted pods no policy decides, per namespace looked at,
	// zero included.
	orphaned map[string]int
	// reasons: pods per drift reason (a pod may have several).
	reasons map[policy.DriftReason]int
	total   int
}

// counts reports whether a pod takes part in drift. A terminating pod is on
// its way out. A Pending pod counts: it was admitted, and its metadata is
// what it will run with. Finished pods (Succeeded, Failed) cannot be told
// apart in metadata, and count until they are deleted.
func counts(pod *metav1.PartialObjectMetadata) bool {
	return pod.DeletionTimestamp == nil
}

// findDrift finds, in the namespaces given, the drifted pods ref decides
// now, and those no policy decides; the zero Ref finds only the latter.
// Pods are listed by namespace from the cache's namespace index, not by
// meshrole's annotations: a pod created before any policy carries none.
func findDrift(ctx context.Context, c client.Reader, store *policy.Store, ref policy.Ref, namespaces []namespaceInfo) (driftReport, error) {
	report := driftReport{byEntry: map[string]int32{}, byNamespace: map[string]int{}, orphaned: map[string]int{}, reasons: map[policy.DriftReason]int{}}
	for _, ns := range namespaces {
		report.byNamespace[ns.name] = 0
		report.orphaned[ns.name] = 0
		pods := &metav1.PartialObjectMetadataList{}
		pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
		if err := c.List(ctx, pods, client.InNamespace(ns.name), client.UnsafeDisableDeepCopy); err != nil {
			return report, fmt.Errorf("listing the pods of %s: %w", ns.name, err)
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if !counts(pod) {
				continue
			}
			d := store.Decide(policy.Input{Namespace: ns.name, NamespaceLabels: labels.Set(ns.labels), PodLabels: labels.Set(pod.Labels)})
			switch {
			case d.Winner == nil:
				// Only a pod with a verdict can have lost it; most pods no
				// policy decides have none, and cost no DetectDrift.
				if pod.Annotations[policy.PolicyAnnotation] != "" && slices.ContainsFunc(policy.DetectDrift(pod.Labels, pod.Annotations, d), verdictGone) {
					report.orphaned[ns.name]++
				}
			case d.Winner != nil && d.Winner.Policy == ref:
				drift := policy.DetectDrift(pod.Labels, pod.Annotations, d)
				if len(drift) == 0 {
					continue
				}
				report.byEntry[d.Winner.Workload.Name]++
				report.byNamespace[ns.name]++
				report.total++
				for _, r := range drift {
					report.reasons[r.Reason]++
				}
			}
		}
	}
	return report, nil
}

func verdictGone(d policy.Drift) bool { return d.Reason == policy.DriftVerdictGone }

// orphansIn counts the drifted pods no policy decides in the namespaces
// named; a namespace gone or no longer enabled counts zero.
func orphansIn(ctx context.Context, c client.Reader, names []string, nativeMode bool) (map[string]int, error) {
	var namespaces []namespaceInfo
	orphaned := map[string]int{}
	for _, name := range names {
		orphaned[name] = 0
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		err := c.Get(ctx, client.ObjectKey{Name: name}, ns)
		if client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("reading namespace %s: %w", name, err)
		}
		if err == nil && ns.Labels[policy.EnabledNamespaceLabel] == "true" {
			namespaces = append(namespaces, namespaceInfo{name: name, labels: ns.Labels})
		}
	}
	if len(namespaces) == 0 {
		return orphaned, nil
	}
	store, err := policyStore(ctx, c, namespaces, nativeMode)
	if err != nil {
		return nil, err
	}
	report, err := findDrift(ctx, c, store, policy.Ref{}, namespaces)
	if err != nil {
		return nil, err
	}
	maps.Copy(orphaned, report.orphaned)
	return orphaned, nil
}

// namespacesRecording lists the namespaces of the pods whose verdict names ref.
func namespacesRecording(ctx context.Context, c client.Reader, ref policy.Ref) ([]string, error) {
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := c.List(ctx, pods, client.MatchingFields{verdictIndex: ref.String()}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the pods that record %s: %w", ref, err)
	}
	var out []string
	for i := range pods.Items {
		if !slices.Contains(out, pods.Items[i].Namespace) {
			out = append(out, pods.Items[i].Namespace)
		}
	}
	return out, nil
}

// driftedCondition is the Drifted condition of a report.
func driftedCondition(ref policy.Ref, spec *v1alpha1.PolicySpec, report driftReport, generation int64) metav1.Condition {
	c := metav1.Condition{Type: ConditionDrifted, Status: metav1.ConditionFalse, Reason: ReasonNoDrift,
		Message: "every running pod this policy decides carries its verdict", ObservedGeneration: generation}
	if report.total == 0 {
		return c
	}
	scope := "-n " + ref.Namespace
	if ref.Cluster() {
		scope = "-A"
	}
	command := fmt.Sprintf("kubectl meshrole rollout %s --policy %s", scope, ref)
	var reasons []string
	for _, r := range slices.Sorted(maps.Keys(report.reasons)) {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, report.reasons[r]))
	}
	pods, them := fmt.Sprintf("%d pods this policy decides carry", report.total), "them"
	if report.total == 1 {
		pods, them = "1 pod this policy decides carries", "it"
	}
	fix := fmt.Sprintf("restart %s with `%s`, or set spec.rollout: Automatic to let meshrole do it", them, command)
	if spec.Rollout == v1alpha1.RolloutAutomatic {
		fix = fmt.Sprintf("spec.rollout is Automatic: meshrole restarts %s, one pod per owner at a time (`%s --dry-run` shows the plan)", them, command)
	}
	c.Status, c.Reason = metav1.ConditionTrue, ReasonPodsDrifted
	c.Message = fmt.Sprintf("%s something else than its verdict (%s): admitted before the policy or its last change, or injected by Istio; %s",
		pods, strings.Join(reasons, ", "), fix)
	return c
}
