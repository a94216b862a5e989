package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/suggest"
	"github.com/meshrole/meshrole/test/harness"
)

// suggestExpectKey annotates pkg/suggest's fixtures' workloads with what
// must be found: "peer <system>", "client <system>[,<system>...]" or "none".
const suggestExpectKey = "test.suggest.meshrole.io/expect"

// What pkg/suggest's 16 fixtures hold once applied to one cluster (the unit
// tests take them one at a time): 22 peers of the 14 catalogue systems, 19
// of them decided by no policy, one covered and two that a policy treats
// otherwise (covered.yaml); 24 clients, one covered and one disagreeing,
// and 10 of the others with ports to exclude (shop/cart dials two Redis
// clusters: 11 findings); 7 negatives. One negative, zookeeper-exporter,
// names zookeeper.zk.svc:2181 and, with the ZooKeeper fixture in the same
// cluster, is a client that needs no entry.
const (
	suggestPeers           = 22
	suggestClients         = 24
	suggestNegatives       = 7
	suggestPeerEntries     = 19
	suggestClientEntries   = 10
	suggestPolicies        = 22
	suggestAnnouncements   = suggestPeerEntries + 11 + 3 // Peer, Client with ports, Disagrees
	suggestFixtureWorkload = suggestPeers + suggestClients + suggestNegatives
)

// suggestFixtures are the fixtures as applied.
type suggestFixtures struct {
	namespaces []string
	// expect maps "<Kind> <namespace>/<name>" to the annotation.
	expect map[string]string
}

func (fx *suggestFixtures) has(namespace string) bool {
	return slices.Contains(fx.namespaces, namespace)
}

// applySuggestFixtures applies every file of pkg/suggest/testdata as it is
// (the clients' configuration names the peers' Services by namespace), each
// namespace labelled meshrole.io/enabled=true.
func applySuggestFixtures(t *testing.T, ctx context.Context) *suggestFixtures {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(h.Root, "pkg", "suggest", "testdata", "*.yaml"))
	if err != nil || len(files) != 16 {
		t.Fatalf("want the 16 fixtures of pkg/suggest/testdata, found %d (%v)", len(files), err)
	}
	objs, err := harness.ReadManifests(files...)
	if err != nil {
		t.Fatal(err)
	}
	fx := &suggestFixtures{expect: map[string]string{}}
	declared := map[string]bool{}
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			declared[u.GetName()] = true
			lbls := u.GetLabels()
			if lbls == nil {
				lbls = map[string]string{}
			}
			lbls[enabledNsLabel] = "true" // nacos.yaml's mall is not enabled
			u.SetLabels(lbls)
		}
		if ns := u.GetNamespace(); ns != "" && !slices.Contains(fx.namespaces, ns) {
			fx.namespaces = append(fx.namespaces, ns)
		}
		if e, ok := u.GetAnnotations()[suggestExpectKey]; ok {
			fx.expect[u.GetKind()+" "+u.GetNamespace()+"/"+u.GetName()] = e
		}
	}
	slices.Sort(fx.namespaces)
	for _, ns := range fx.namespaces {
		if !declared[ns] {
			createNamespace(t, ctx, ns, true, nil)
		}
	}
	if err := h.Apply(ctx, "", objs...); err != nil {
		t.Fatal(err)
	}
	if len(fx.expect) != suggestFixtureWorkload {
		t.Fatalf("%d workloads annotated, want %d", len(fx.expect), suggestFixtureWorkload)
	}
	return fx
}

// suggestOutput is `kubectl meshrole suggest -o json`.
type suggestOutput struct {
	Findings []suggest.Finding         `json:"findings"`
	Policies []v1alpha1.MeshRolePolicy `json:"policies"`
}

// suggestLive runs suggest -A -o json against the suite's API server and
// keeps what is in the fixtures' namespaces (the suite's other tests leave
// their own objects).
func suggestLive(t *testing.T, fx *suggestFixtures) suggestOutput {
	t.Helper()
	r := kubectlMeshrole(t, "suggest", "--kubeconfig", h.Kubeconfig, "-A", "-o", "json")
	var out, kept suggestOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 {
		t.Fatalf("suggest -A -o json: exit %d, %v", r.code, err)
	}
	for _, f := range out.Findings {
		if fx.has(f.Workload.Namespace) {
			kept.Findings = append(kept.Findings, f)
		}
	}
	for _, p := range out.Policies {
		if fx.has(p.Namespace) {
			kept.Policies = append(kept.Policies, p)
		}
	}
	return kept
}

func findingKey(r suggest.WorkloadRef) string { return r.Kind + " " + r.Namespace + "/" + r.Name }

func countKinds(findings []suggest.Finding) map[suggest.Kind]int {
	out := map[suggest.Kind]int{}
	for _, f := range findings {
		out[f.Kind]++
	}
	return out
}

// TestSuggest applies pkg/suggest's fixtures to the live cluster, runs
// kubectl meshrole suggest against it, applies what it prints, and checks
// the verdicts the webhook then gives the workloads' new pods; and runs the
// in-cluster publisher of the same findings as Events.
func TestSuggest(t *testing.T) {
	ctx := scenario(t, 5*time.Minute)
	fx := applySuggestFixtures(t, ctx)

	t.Run("--context and -o yaml: the context's namespace, policies the API server accepts", func(t *testing.T) {
		kubeconfig := contextKubeconfig(t, "zk")
		r := kubectlMeshrole(t, "suggest", "--kubeconfig", kubeconfig, "--context", "meshrole-e2e", "-o", "yaml")
		docs, err := harness.DecodeYAML([]byte(r.stdout))
		if err != nil || r.code != 0 {
			t.Fatalf("exit %d, %v", r.code, err)
		}
		if len(docs) != 1 || docs[0].GetKind() != "MeshRolePolicy" || docs[0].GetNamespace() != "zk" || docs[0].GetName() != suggest.PolicyName {
			t.Fatalf("want one MeshRolePolicy zk/%s, got %d documents", suggest.PolicyName, len(docs))
		}
		var p v1alpha1.MeshRolePolicy
		if err := runtimeFromUnstructured(docs[0], &p); err != nil {
			t.Fatal(err)
		}
		if w := p.Spec.Workloads; len(w) != 1 || w[0].Name != "zookeeper-peers" || w[0].Role != v1alpha1.RolePeerStateful ||
			w[0].Peer == nil || w[0].Peer.Proxy != v1alpha1.PeerProxyBypassPorts || fmt.Sprint(w[0].Peer.Ports) != "[2888 3888]" {
			t.Errorf("entries %+v, want zookeeper-peers, peer-stateful, BypassPorts [2888 3888]", p.Spec.Workloads)
		}
		if err := h.Client.Create(ctx, docs[0].DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("the API server refuses the suggested policy: %v", err)
		}

		// -n names the namespace; what a policy covers is reported, not suggested.
		r = kubectlMeshrole(t, "suggest", "--kubeconfig", kubeconfig, "--context", "meshrole-e2e", "-n", "zk2", "-o", "yaml")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "" || !strings.Contains(r.stderr, "No policy to suggest.") {
			t.Errorf("-n zk2: exit %d, stdout %q, stderr %q; want nothing to suggest", r.code, r.stdout, r.stderr)
		}
		r = kubectlMeshrole(t, "suggest", "--kubeconfig", kubeconfig, "--context", "meshrole-e2e", "-n", "zk2")
		if !strings.Contains(r.stdout, "statefulset/zk") || !strings.Contains(r.stdout, "Covered") {
			t.Errorf("-n zk2: the table does not report statefulset/zk as Covered")
		}
	})

	publisherEvents := startPublisher(t, ctx, fx)

	t.Run("publisher: one Event per finding, none per pass without a change, one more when a finding changes", func(t *testing.T) {
		events := waitForAnnouncements(t, ctx, publisherEvents, suggestAnnouncements)
		count := map[string]int{}
		for _, e := range events {
			count[e.Reason]++
			if e.Series != nil || e.Type != corev1.EventTypeNormal || e.Regarding.UID == "" {
				t.Errorf("event %s/%s: series %v, type %s, regarding %+v", e.Namespace, e.Name, e.Series, e.Type, e.Regarding)
			}
		}
		want := map[string]int{suggest.ReasonPeerReplicating: suggestPeerEntries, suggest.ReasonPeerClient: 11, suggest.ReasonPeerPolicyDisagrees: 3}
		if fmt.Sprint(count) != fmt.Sprint(want) {
			t.Errorf("events by reason %v, want %v", count, want)
		}
		zk := eventsOn(events, "StatefulSet", "zk", "zookeeper")
		if len(zk) != 1 || zk[0].Reason != suggest.ReasonPeerReplicating || !strings.Contains(zk[0].Note, "BypassPorts [2888, 3888]") {
			t.Errorf("StatefulSet zk/zookeeper: %+v, want one PeerReplicating suggesting BypassPorts [2888, 3888]", zk)
		}
		for _, quiet := range [][3]string{{"StatefulSet", "zk2", "zk"}, {"StatefulSet", "db", "postgresql"}, {"Deployment", "jobs", "scheduler"}} {
			if es := eventsOn(events, quiet[0], quiet[1], quiet[2]); len(es) > 0 {
				t.Errorf("%v: announced %q, want nothing (covered, negative, client needing no entry)", quiet, es[0].Note)
			}
		}

		// A change that changes no finding: a pass, no Event.
		touchAndWaitForPass(t, ctx)
		if es := publisherEvents(t); len(es) != suggestAnnouncements {
			t.Errorf("after a pass over an unchanged finding: %d events, want still %d:\n%s", len(es), suggestAnnouncements, describeEvents(es))
		}

		// A changed finding (another image): one more Event, on it.
		sts := &appsv1.StatefulSet{}
		if err := h.Client.Get(ctx, client.ObjectKey{Namespace: "zk", Name: "zookeeper"}, sts); err != nil {
			t.Fatal(err)
		}
		sts.Spec.Template.Spec.Containers[0].Image = "docker.io/bitnami/zookeeper:3.9.4"
		if err := h.Client.Update(ctx, sts); err != nil {
			t.Fatal(err)
		}
		events = waitForAnnouncements(t, ctx, publisherEvents, suggestAnnouncements+1)
		zk = eventsOn(events, "StatefulSet", "zk", "zookeeper")
		if len(zk) != 2 || !slices.ContainsFunc(zk, func(e eventsv1.Event) bool { return strings.Contains(e.Note, "zookeeper:3.9.4") }) {
			t.Errorf("after the image change: %d events on zk/zookeeper, want 2, one naming zookeeper:3.9.4", len(zk))
		}
	})

	t.Run("suggest -A live: every fixture workload found as annotated, the policies applied, the recreated pods get their verdicts", func(t *testing.T) {
		out := suggestLive(t, fx)
		checkFindings(t, fx, out)
		applied := applySuggested(t, ctx, fx, out)
		pods := recreatePods(t, ctx, fx)
		checkVerdicts(t, fx, out, applied, pods)
	})

	t.Run("after the apply: nothing more to suggest, and the publisher announces nothing", func(t *testing.T) {
		out := suggestLive(t, fx)
		kinds := countKinds(out.Findings)
		// Every Peer and every Client with an entry is now Covered, by the
		// suggested policies (and the fixtures' own two).
		want := map[suggest.Kind]int{suggest.KindCovered: suggestPeerEntries + 11 + 2, suggest.KindDisagrees: 3, suggest.KindClient: 13}
		if fmt.Sprint(kinds) != fmt.Sprint(want) || len(out.Policies) != 0 {
			t.Errorf("findings by kind %v and %d policies, want %v and none", kinds, len(out.Policies), want)
		}
		for _, f := range out.Findings {
			if f.Kind == suggest.KindClient && len(f.Treatment.ExcludeOutboundPorts) > 0 {
				t.Errorf("%s: still suggested: %+v", f.Workload, f.Treatment)
			}
		}
		touchAndWaitForPass(t, ctx)
		if es := publisherEvents(t); len(es) != suggestAnnouncements+1 {
			t.Errorf("after the policies: %d events, want still %d: covered workloads are not announced:\n%s", len(es), suggestAnnouncements+1, describeEvents(es))
		}
	})
}

func runtimeFromUnstructured(u *unstructured.Unstructured, into any) error {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, into)
}

// checkFindings compares what suggest found live with the fixtures'
// annotations, workload by workload, and counts.
func checkFindings(t *testing.T, fx *suggestFixtures, out suggestOutput) {
	t.Helper()
	byWorkload := map[string][]suggest.Finding{}
	for _, f := range out.Findings {
		byWorkload[findingKey(f.Workload)] = append(byWorkload[findingKey(f.Workload)], f)
	}
	peers, clients, negatives := 0, 0, 0
	for workload, expect := range fx.expect {
		fs := byWorkload[workload]
		role, systems, _ := strings.Cut(expect, " ")
		var gotRoles, gotSystems []string
		for _, f := range fs {
			gotRoles = append(gotRoles, string(f.Role))
			gotSystems = append(gotSystems, f.System)
		}
		gotRoles, gotSystems = slices.Compact(slices.Sorted(slices.Values(gotRoles))), slices.Compact(slices.Sorted(slices.Values(gotSystems)))
		switch role {
		case "peer":
			peers++
			if len(fs) != 1 || fs[0].Role != v1alpha1.RolePeerStateful || fs[0].System != systems {
				t.Errorf("%s: found %v %v, want peer %s", workload, gotRoles, gotSystems, systems)
			}
		case "client":
			clients++
			want := strings.Split(systems, ",")
			slices.Sort(want)
			if !slices.Equal(gotRoles, []string{string(v1alpha1.RoleClientStateless)}) || !slices.Equal(gotSystems, want) {
				t.Errorf("%s: found %v %v, want client of %v", workload, gotRoles, gotSystems, want)
			}
		default:
			negatives++
			for _, f := range fs {
				if f.Role == v1alpha1.RolePeerStateful || f.Policy != "" {
					t.Errorf("%s: a negative found as %s %s (%s) with entry %q", workload, f.Kind, f.System, f.Role, f.Policy)
				}
			}
		}
		delete(byWorkload, workload)
	}
	for workload, fs := range byWorkload {
		t.Errorf("%s: found as %s %s, and not annotated in the fixtures", workload, fs[0].Kind, fs[0].System)
	}
	if peers != suggestPeers || clients != suggestClients || negatives != suggestNegatives {
		t.Errorf("annotated: %d peers, %d clients, %d negatives; want %d, %d, %d", peers, clients, negatives, suggestPeers, suggestClients, suggestNegatives)
	}
	want := map[suggest.Kind]int{suggest.KindPeer: suggestPeerEntries, suggest.KindClient: 24, suggest.KindCovered: 2, suggest.KindDisagrees: 3}
	if got := countKinds(out.Findings); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("findings by kind: %v, want %v", got, want)
	}
	peerEntries, clientEntries := 0, 0
	for _, p := range out.Policies {
		for _, w := range p.Spec.Workloads {
			if w.Role == v1alpha1.RolePeerStateful {
				peerEntries++
			} else {
				clientEntries++
			}
		}
	}
	if len(out.Policies) != suggestPolicies || peerEntries != suggestPeerEntries || clientEntries != suggestClientEntries {
		t.Errorf("%d policies with %d peer and %d client entries, want %d with %d and %d",
			len(out.Policies), peerEntries, clientEntries, suggestPolicies, suggestPeerEntries, suggestClientEntries)
	}
}

// applySuggested runs suggest -A -o yaml, checks that it prints the
// policies -o json did, and applies those of the fixtures' namespaces, once
// the webhook enforces each (harness.Apply).
func applySuggested(t *testing.T, ctx context.Context, fx *suggestFixtures, out suggestOutput) map[string]v1alpha1.MeshRolePolicy {
	t.Helper()
	r := kubectlMeshrole(t, "suggest", "--kubeconfig", h.Kubeconfig, "-A", "-o", "yaml")
	docs, err := harness.DecodeYAML([]byte(r.stdout))
	if err != nil || r.code != 0 {
		t.Fatalf("suggest -A -o yaml: exit %d, %v", r.code, err)
	}
	var mine []*unstructured.Unstructured
	applied := map[string]v1alpha1.MeshRolePolicy{}
	for _, d := range docs {
		if !fx.has(d.GetNamespace()) {
			continue
		}
		mine = append(mine, d)
		var p v1alpha1.MeshRolePolicy
		if err := runtimeFromUnstructured(d, &p); err != nil {
			t.Fatal(err)
		}
		applied[p.Namespace+"/"+p.Name] = p
	}
	for _, p := range out.Policies {
		a, ok := applied[p.Namespace+"/"+p.Name]
		fromYAML, _ := json.Marshal(a.Spec)
		fromJSON, _ := json.Marshal(p.Spec)
		if !ok || string(fromYAML) != string(fromJSON) {
			t.Errorf("policy %s/%s: -o yaml printed %s, -o json %s", p.Namespace, p.Name, fromYAML, fromJSON)
		}
	}
	if len(mine) != len(out.Policies) {
		t.Fatalf("-o yaml printed %d policies in the fixtures' namespaces, -o json %d", len(mine), len(out.Policies))
	}
	if err := h.Apply(ctx, "", mine...); err != nil {
		t.Fatal(err)
	}
	return applied
}

// recreatePods deletes every pod of the fixtures' namespaces and returns,
// per workload, the pods its controller creates anew; a DaemonSet's pod
// (the suite has no nodes) is created from its template.
func recreatePods(t *testing.T, ctx context.Context, fx *suggestFixtures) map[string][]corev1.Pod {
	t.Helper()
	old := map[types.UID]bool{}
	for _, ns := range fx.namespaces {
		var pods corev1.PodList
		if err := h.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			old[p.UID] = true
		}
		if err := h.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	var daemonSets appsv1.DaemonSetList
	if err := h.Client.List(ctx, &daemonSets); err != nil {
		t.Fatal(err)
	}
	for _, ds := range daemonSets.Items {
		if !fx.has(ds.Namespace) {
			continue
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ds.Namespace, Name: ds.Name + "-e2e", Labels: ds.Spec.Template.Labels, Annotations: ds.Spec.Template.Annotations,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID}}},
			Spec: ds.Spec.Template.Spec,
		}
		if err := h.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		pods, missing, err := newPodsByWorkload(ctx, fx, old)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 0 {
			return pods
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new pod after 60s for %v", missing)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// newPodsByWorkload maps each annotated workload to its pods not in old,
// by owner (a Deployment's pods through its ReplicaSets).
func newPodsByWorkload(ctx context.Context, fx *suggestFixtures, old map[types.UID]bool) (map[string][]corev1.Pod, []string, error) {
	owners := map[types.UID]string{}
	for _, l := range []struct {
		list client.ObjectList
		kind string
	}{{&appsv1.StatefulSetList{}, "StatefulSet"}, {&appsv1.DeploymentList{}, "Deployment"}, {&appsv1.DaemonSetList{}, "DaemonSet"}} {
		if err := h.Client.List(ctx, l.list); err != nil {
			return nil, nil, err
		}
		items, err := metaItems(l.list)
		if err != nil {
			return nil, nil, err
		}
		for _, o := range items {
			owners[o.GetUID()] = l.kind + " " + o.GetNamespace() + "/" + o.GetName()
		}
	}
	var replicaSets appsv1.ReplicaSetList
	if err := h.Client.List(ctx, &replicaSets); err != nil {
		return nil, nil, err
	}
	for _, rs := range replicaSets.Items {
		if c := metav1.GetControllerOf(&rs); c != nil && owners[c.UID] != "" {
			owners[rs.UID] = owners[c.UID]
		}
	}
	var pods corev1.PodList
	if err := h.Client.List(ctx, &pods); err != nil {
		return nil, nil, err
	}
	out := map[string][]corev1.Pod{}
	for _, p := range pods.Items {
		c := metav1.GetControllerOf(&p)
		if c == nil && len(p.OwnerReferences) > 0 {
			c = &p.OwnerReferences[0]
		}
		if c == nil || old[p.UID] || p.DeletionTimestamp != nil || !fx.has(p.Namespace) {
			continue
		}
		if w := owners[c.UID]; w != "" {
			out[w] = append(out[w], p)
		}
	}
	var missing []string
	for w := range fx.expect {
		if len(out[w]) == 0 {
			missing = append(missing, w)
		}
	}
	slices.Sort(missing)
	return out, missing, nil
}

func metaItems(list client.ObjectList) ([]metav1.Object, error) {
	var out []metav1.Object
	switch l := list.(type) {
	case *appsv1.StatefulSetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *appsv1.DeploymentList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *appsv1.DaemonSetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	default:
		return nil, fmt.Errorf("unexpected list %T", list)
	}
	return out, nil
}

func portSet(annotation string) []int32 {
	var out []int32
	for _, s := range strings.Split(annotation, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			out = append(out, int32(n))
		}
	}
	return out
}

func containsAll(have, want []int32) bool {
	for _, p := range want {
		if !slices.Contains(have, p) {
			return false
		}
	}
	return true
}

// checkVerdicts checks every new pod against its workload's findings: a
// peer skipped or its peer ports bypassed inbound and outbound, a client
// keeping its sidecar and excluding the ports it dials, by the suggested
// policy and the entry that selects it; a covered or disagreeing workload
// still decided by its own policy; everything else untouched.
func checkVerdicts(t *testing.T, fx *suggestFixtures, out suggestOutput, applied map[string]v1alpha1.MeshRolePolicy, pods map[string][]corev1.Pod) {
	t.Helper()
	byWorkload := map[string][]suggest.Finding{}
	for _, f := range out.Findings {
		byWorkload[findingKey(f.Workload)] = append(byWorkload[findingKey(f.Workload)], f)
	}
	skipped, bypassed, clients, kept, untouched := 0, 0, 0, 0, 0
	for workload := range fx.expect {
		fs := byWorkload[workload]
		for _, pod := range pods[workload] {
			a := pod.Annotations
			switch {
			case len(fs) > 0 && fs[0].Policy != "":
				f := fs[0]
				ref := f.Workload.Namespace + "/" + f.Policy
				p, ok := applied[ref]
				entry := ""
				if ok {
					for _, w := range p.Spec.Workloads {
						if s, err := metav1.LabelSelectorAsSelector(&w.Selector); err == nil && s.Matches(labels.Set(pod.Labels)) {
							entry = w.Name
							break
						}
					}
				}
				if a[policyKey] != ref || a[workloadKey] != entry || entry == "" || a[roleKey] != string(f.Role) {
					t.Errorf("%s: pod %s decided by %s entry %s as %s; want %s entry %q as %s", workload, pod.Name, a[policyKey], a[workloadKey], a[roleKey], ref, entry, f.Role)
					continue
				}
				switch {
				case f.Role == v1alpha1.RolePeerStateful && f.Treatment.Proxy == v1alpha1.PeerProxySkip:
					skipped++
					if a[injectKey] != "false" || pod.Labels[injectKey] != "false" {
						t.Errorf("%s: pod %s keeps its sidecar: inject %q/%q", workload, pod.Name, a[injectKey], pod.Labels[injectKey])
					}
				case f.Role == v1alpha1.RolePeerStateful:
					bypassed++
					// Every peer port of the evidence, inbound and outbound.
					var peerPorts []int32
					for _, e := range f.Evidence.Ports {
						peerPorts = append(peerPorts, e.Port)
					}
					in, outb := portSet(a[excludeInKey]), portSet(a[excludeOutKey])
					if len(peerPorts) == 0 || !containsAll(in, peerPorts) || !containsAll(outb, peerPorts) || !containsAll(in, f.Treatment.Ports) || a[injectKey] == "false" {
						t.Errorf("%s: pod %s: inject %q, excluded in %v out %v; want the sidecar, and the peer ports %v excluded both ways",
							workload, pod.Name, a[injectKey], in, outb, peerPorts)
					}
				default:
					clients++
					var want []int32
					for _, f := range fs {
						want = append(want, f.Treatment.ExcludeOutboundPorts...)
					}
					if got := portSet(a[excludeOutKey]); len(want) == 0 || !containsAll(got, want) || a[injectKey] != "true" {
						t.Errorf("%s: pod %s: inject %q, excludeOutboundPorts %v; want the sidecar and %v excluded", workload, pod.Name, a[injectKey], got, want)
					}
				}
			case len(fs) > 0 && fs[0].Existing != nil:
				kept++
				if a[policyKey] != fs[0].Existing.Policy || a[workloadKey] != fs[0].Existing.Workload {
					t.Errorf("%s (%s): pod %s decided by %s entry %s, want still %s entry %s", workload, fs[0].Kind, pod.Name, a[policyKey], a[workloadKey], fs[0].Existing.Policy, fs[0].Existing.Workload)
				}
			default:
				untouched++
				for k, v := range merge(pod.Labels, pod.Annotations) {
					if strings.HasPrefix(k, "meshrole.io/") {
						t.Errorf("%s: pod %s: want no verdict, got %s=%q", workload, pod.Name, k, v)
					}
				}
			}
		}
	}
	t.Logf("verdicts checked on pods: %d skipped peers, %d bypassing peers, %d clients, %d kept by their own policy, %d untouched", skipped, bypassed, clients, kept, untouched)
	// At least one pod of each: every workload has a new pod (recreatePods).
	workloads := map[string]int{}
	for workload := range fx.expect {
		fs := byWorkload[workload]
		switch {
		case len(fs) > 0 && fs[0].Policy != "" && fs[0].Role == v1alpha1.RolePeerStateful:
			workloads["peer"]++
		case len(fs) > 0 && fs[0].Policy != "":
			workloads["client"]++
		case len(fs) > 0 && fs[0].Existing != nil:
			workloads["kept"]++
		default:
			workloads["untouched"]++
		}
	}
	want := map[string]int{"peer": suggestPeerEntries, "client": suggestClientEntries, "kept": 5, "untouched": suggestFixtureWorkload - suggestPeerEntries - suggestClientEntries - 5}
	if fmt.Sprint(workloads) != fmt.Sprint(want) || skipped+bypassed < suggestPeerEntries || clients < suggestClientEntries {
		t.Errorf("workloads %v, want %v; pods: %d peers, %d clients", workloads, want, skipped+bypassed, clients)
	}
}

// startPublisher runs the publisher in this process, leader-elected, in a
// manager of its own against the suite's API server, until the test ends,
// and returns a function listing the Events it wrote in the fixtures'
// namespaces.
func startPublisher(t *testing.T, ctx context.Context, fx *suggestFixtures) func(*testing.T) []eventsv1.Event {
	t.Helper()
	const leaseNamespace = "e2e-suggest-publisher"
	createNamespace(t, ctx, leaseNamespace, false, nil)
	mgr, err := ctrl.NewManager(h.Config, manager.Options{
		Scheme:                  h.Scheme,
		Cache:                   cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionID:        "meshrole-suggest-publisher",
		LeaderElectionNamespace: leaseNamespace,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := suggest.SetupPublisher(mgr, suggest.PublisherOptions{Delay: 500 * time.Millisecond, Instance: "e2e"}); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("the publisher's manager: %v", err)
		}
	})
	select {
	case <-mgr.Elected():
	case err := <-done:
		t.Fatalf("the publisher's manager stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the publisher's manager was not elected within 30s")
	}
	return func(t *testing.T) []eventsv1.Event {
		t.Helper()
		var list eventsv1.EventList
		if err := h.Client.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		var out []eventsv1.Event
		for _, e := range list.Items {
			if e.ReportingController == suggest.PublisherController && fx.has(e.Namespace) {
				out = append(out, e)
			}
		}
		return out
	}
}

func describeEvents(events []eventsv1.Event) string {
	var lines []string
	for _, e := range events {
		lines = append(lines, fmt.Sprintf("%s %s/%s %s: %s", e.Regarding.Kind, e.Regarding.Namespace, e.Regarding.Name, e.Reason, e.Note))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func eventsOn(events []eventsv1.Event, kind, namespace, name string) []eventsv1.Event {
	var out []eventsv1.Event
	for _, e := range events {
		if r := e.Regarding; r.Kind == kind && r.Namespace == namespace && r.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// waitForAnnouncements waits until the publisher has written n Events, and
// then a while longer to see that it writes no more.
func waitForAnnouncements(t *testing.T, ctx context.Context, list func(*testing.T) []eventsv1.Event, n int) []eventsv1.Event {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		events := list(t)
		if len(events) >= n {
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(2 * time.Second): // four times the publisher's delay
			}
			if events = list(t); len(events) != n {
				t.Fatalf("%d events, want %d:\n%s", len(events), n, describeEvents(events))
			}
			return events
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events after 60s, want %d:\n%s", len(events), n, describeEvents(events))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// publisherPasses is how many passes the publisher has completed, from
// controller-runtime's metrics of this process.
func publisherPasses(t *testing.T) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "controller") == "suggest-publisher" {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// touchAndWaitForPass changes an annotation of a Service, which changes no
// finding, and waits until the publisher has made the pass it triggers: a
// pass over the whole cluster as it is now.
func touchAndWaitForPass(t *testing.T, ctx context.Context) {
	t.Helper()
	before := publisherPasses(t)
	svc := &corev1.Service{}
	if err := h.Client.Get(ctx, client.ObjectKey{Namespace: "zk", Name: "zookeeper-headless"}, svc); err != nil {
		t.Fatal(err)
	}
	svc.Annotations = map[string]string{"e2e.meshrole.io/touched": time.Now().Format(time.RFC3339Nano)}
	if err := h.Client.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for publisherPasses(t) < before+1 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("the publisher made no pass within 30s of a change (%v passes so far)", before)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
