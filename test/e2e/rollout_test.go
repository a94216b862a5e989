package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/rollout"
	"github.com/meshrole/meshrole/test/harness"
)

// TestRollout converges the seed's pods, created before their policy, on a
// control plane of its own where pods run: kube-scheduler and kwok's fake
// nodes make them Running and Ready, and the disruption controller makes the
// Eviction API honour PodDisruptionBudgets. The suite's shared control plane
// has neither.
func TestRollout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rh, cs := startRolloutCluster(t, ctx, harness.ModeWebhook)
	t.Run("eureka servers and clients created before the policy: converged one pod at a time, the budget never broken", func(t *testing.T) {
		testRolloutSeed(t, ctx, rh, cs)
	})
	t.Run("Automatic mode converges the seed scene without the CLI", func(t *testing.T) {
		testRolloutAutomatic(t, ctx, rh, cs)
	})
	t.Run("Automatic mode stops at a replacement that never becomes Ready, says why on the policy, backs off, and resumes when the policy changes", func(t *testing.T) {
		testRolloutAutomaticStops(t, ctx, rh, cs)
	})
	t.Run("a replacement that never becomes Ready stops the rollout; run again, the budget refuses evictions until it is Ready, then the rollout finishes", func(t *testing.T) {
		testRolloutStopsAtUnreadyReplacement(t, ctx, rh)
	})
	t.Run("kubectl meshrole rollout: --dry-run prints the plan and evicts nothing, then an OnDelete StatefulSet converges", func(t *testing.T) {
		testRolloutCommand(t, ctx, rh)
	})
	t.Run("every file of examples/ applied in one go, no waits: every pod ends with its verdict, pods that raced their policy converged by rollout", func(t *testing.T) {
		testExamplesAtOnce(t, ctx, rh)
	})
}

// testExamplesAtOnce applies examples/ the way a GitOps tool or kubectl
// apply -R -f examples/ does: namespaces first, then everything else at
// once, waiting for nothing. Pods that reach the webhook before their policy
// get no verdict; rollout must find exactly those and converge them.
func testExamplesAtOnce(t *testing.T, ctx context.Context, rh *harness.Harness) {
	files, err := filepath.Glob(filepath.Join(rh.Root, "examples", "*", "*.yaml"))
	if err != nil || len(files) < 20 {
		t.Fatalf("examples: %v %v", files, err)
	}
	var namespaces, rest []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := harness.DecodeYAML(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			if o.GetKind() == "Namespace" {
				namespaces = append(namespaces, o)
			} else {
				rest = append(rest, o)
			}
		}
	}
	wantPods := map[string]int{}
	for _, o := range rest {
		switch replicas, _, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "replicas"); n := replicas.(type) {
		case int64:
			wantPods[o.GetNamespace()] += int(n)
		case float64:
			wantPods[o.GetNamespace()] += int(n)
		}
	}
	for _, objs := range [][]*unstructured.Unstructured{namespaces, rest} {
		var wg sync.WaitGroup
		errs := make([]error, len(objs))
		for i, o := range objs {
			wg.Go(func() { errs[i] = rh.Client.Create(ctx, o) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for ns, n := range wantPods {
		waitReadyPods(t, ctx, rh, ns, n)
		total += n
	}
	if len(wantPods) != len(namespaces) || total < 20 {
		t.Fatalf("%d pods in %d namespaces from %d example namespaces: the examples' workloads were not read", total, len(wantPods), len(namespaces))
	}

	store := policyStore(t, ctx, rh)
	raced, err := rollout.Find(ctx, rh.Client, store, rollout.Scope{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	var inExamples []rollout.Target
	for _, target := range raced {
		if _, ok := wantPods[target.Namespace]; ok {
			inExamples = append(inExamples, target)
		}
	}
	t.Logf("%d pods in %d namespaces; %d raced their policy and drifted: %v", total, len(wantPods), len(inExamples), podNamesOf(inExamples))
	if len(inExamples) > 0 {
		runner := &rollout.Runner{Client: rh.Client, Policies: store, Timeout: time.Minute, Progress: func(e rollout.Event) { t.Log(e) }}
		if _, err := runner.Run(ctx, rollout.NewPlan(inExamples, rollout.PlanOptions{})); err != nil {
			t.Fatal(err)
		}
	}

	// The end state: every pod carries its verdict, none differs from it.
	left, err := rollout.Find(ctx, rh.Client, store, rollout.Scope{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	withVerdict := 0
	for ns, n := range wantPods {
		for _, p := range waitReadyPods(t, ctx, rh, ns, n) {
			if p.Annotations[policy.PolicyAnnotation] == ns+"/"+policyNameIn(rest, ns) {
				withVerdict++
			}
		}
	}
	for _, target := range left {
		if _, ok := wantPods[target.Namespace]; ok {
			t.Errorf("still drifted: %s: %s", target.Key(), driftReasons(target.Drift))
		}
	}
	if withVerdict != total {
		t.Errorf("%d of %d pods carry their namespace's policy", withVerdict, total)
	}
}

// policyNameIn is the name of the MeshRolePolicy of a namespace among objs.
func policyNameIn(objs []*unstructured.Unstructured, namespace string) string {
	for _, o := range objs {
		if o.GetKind() == "MeshRolePolicy" && o.GetNamespace() == namespace {
			return o.GetName()
		}
	}
	return ""
}

// testRolloutCommand drives the same code through the plugin, as a user
// would: the plan first, then the rollout.
func testRolloutCommand(t *testing.T, ctx context.Context, rh *harness.Harness) {
	const ns = "rollout-cli"
	createObjects(t, ctx, rh.Client,
		enabledNamespace(ns),
		rolloutStatefulSet(ns, "zk", zookeepers, appsv1.OnDeleteStatefulSetStrategyType), minAvailable(ns, "zk", zookeepers, 2),
	)
	before := waitReadyPods(t, ctx, rh, ns, 3)
	createObjects(t, ctx, rh.Client, zookeeperPolicy(ns, ""))
	waitWebhookDecides(t, ctx, rh.Client, ns, zookeepers, "quorum")

	dry := kubectlMeshrole(t, "--kubeconfig", rh.Kubeconfig, "rollout", "-n", ns, "--dry-run")
	if dry.code != 0 {
		t.Fatalf("rollout --dry-run: exit %d: %s", dry.code, dry.stderr)
	}
	for i, pod := range []string{"zk-2", "zk-1", "zk-0"} {
		if want := fmt.Sprintf("%d. evict %s/%s (StatefulSet zk): NoVerdict", i+1, ns, pod); !strings.Contains(dry.stdout, want) {
			t.Errorf("the plan lacks %q:\n%s", want, dry.stdout)
		}
	}
	for _, p := range waitReadyPods(t, ctx, rh, ns, 3) {
		if i := slices.IndexFunc(before, func(b corev1.Pod) bool { return b.Name == p.Name }); i < 0 || before[i].UID != p.UID {
			t.Fatalf("pod %s was replaced by a dry run", p.Name)
		}
	}

	run := kubectlMeshrole(t, "--kubeconfig", rh.Kubeconfig, "rollout", "-n", ns, "--timeout", "1m")
	if run.code != 0 || !strings.Contains(run.stdout, "3 pods restarted") {
		t.Fatalf("rollout: exit %d, want 0 and 3 pods restarted:\n%s%s", run.code, run.stdout, run.stderr)
	}
	for _, p := range waitReadyPods(t, ctx, rh, ns, 3) {
		if p.Annotations[policy.PolicyAnnotation] != ns+"/zookeeper" || p.Labels[policy.IstioInjectKey] != "false" {
			t.Errorf("pod %s after the rollout: labels %v annotations %v, want its verdict", p.Name, p.Labels, p.Annotations)
		}
	}
	again := kubectlMeshrole(t, "--kubeconfig", rh.Kubeconfig, "rollout", "-n", ns, "--dry-run")
	if again.code != 0 || !strings.Contains(again.stdout, "no drifted pods to restart") {
		t.Errorf("after the rollout: exit %d\n%s%s", again.code, again.stdout, again.stderr)
	}
}

// TestRolloutAutomaticNative: in native mode the API server's
// MutatingAdmissionPolicies stamp the verdicts, and the same Automatic mode
// converges the same scene: drift does not depend on who stamps.
func TestRolloutAutomaticNative(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rh, cs := startRolloutCluster(t, ctx, harness.ModeNative)
	testRolloutAutomatic(t, ctx, rh, cs)
}

// startRolloutCluster starts a harness with the controllers and the fake
// nodes running pods needs.
func startRolloutCluster(t *testing.T, ctx context.Context, mode harness.Mode) (*harness.Harness, kubernetes.Interface) {
	t.Helper()
	// The Automatic mode's stops come after 15s, not the default 5m.
	rh, err := harness.Start(ctx, harness.Options{Mode: mode, WebhookArgs: []string{"--automatic-rollout-timeout=15s"}, Controllers: harness.ClusterControllers})
	if err != nil {
		t.Fatalf("starting the rollout control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			rh.KeepWorkDir = true
			fmt.Fprintf(os.Stderr, "\n%s\nlogs kept in %s\n", rh.Diagnostics(40), rh.WorkDir)
		}
		if err := rh.Stop(); err != nil {
			t.Errorf("stopping the rollout control plane: %v", err)
		}
	})
	c, err := rh.StartCluster(ctx, 2)
	if err != nil {
		t.Fatalf("starting kube-scheduler and kwok: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.Diagnostics(40))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping kube-scheduler and kwok: %v", err)
		}
	})
	cs, err := kubernetes.NewForConfig(rh.Config)
	if err != nil {
		t.Fatal(err)
	}
	return rh, cs
}

// zookeepers are the labels of the zk StatefulSet's pods.
var zookeepers = map[string]string{"app": "zookeeper"}

// The seed's scene: Eureka servers, a StatefulSet behind a headless Service
// with a budget, and their clients, a Deployment.
var (
	eurekaServers = map[string]string{"app": "eureka-server"}
	eurekaClients = map[string]string{"app": "eureka-client"}
)

// createSeedScene creates the seed's scene, with no policy, in a new enabled
// namespace, and returns its five pods once they run: none has a verdict.
func createSeedScene(t *testing.T, ctx context.Context, rh *harness.Harness, ns string) []corev1.Pod {
	t.Helper()
	createObjects(t, ctx, rh.Client,
		enabledNamespace(ns),
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "eureka-server"},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: eurekaServers,
				Ports: []corev1.ServicePort{{Name: "http", Port: 8761}}},
		},
		rolloutStatefulSet(ns, "eureka-server", eurekaServers, appsv1.RollingUpdateStatefulSetStrategyType),
		minAvailable(ns, "eureka-server", eurekaServers, 2),
		rolloutDeployment(ns, "eureka-client", eurekaClients, 2),
	)
	pods := waitReadyPods(t, ctx, rh, ns, 5)
	for _, p := range pods {
		if _, ok := p.Annotations[policy.PolicyAnnotation]; ok {
			t.Fatalf("pod %s has a verdict before any policy exists: %v", p.Name, p.Annotations)
		}
	}
	return pods
}

// seedPolicy is the seed's policy "eureka" for the scene in ns.
func seedPolicy(ns string, mode v1alpha1.Rollout) *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "eureka"},
		Spec: v1alpha1.PolicySpec{Rollout: mode, Workloads: []v1alpha1.Workload{
			{Name: "eureka-peers", Selector: metav1.LabelSelector{MatchLabels: eurekaServers}, Role: v1alpha1.RolePeerStateful},
			{Name: "eureka-clients", Selector: metav1.LabelSelector{MatchLabels: eurekaClients}, Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{ExcludeOutboundPorts: []v1alpha1.Port{8761}}},
		}},
	}
}

// checkSeedVerdicts checks that the seed scene's pods were all replaced and
// carry the verdicts of seedPolicy: servers peers without a sidecar, clients
// clients.
func checkSeedVerdicts(t *testing.T, ns string, before, after []corev1.Pod) {
	t.Helper()
	for _, p := range after {
		want := "eureka-clients"
		if p.Labels["app"] == "eureka-server" {
			want = "eureka-peers"
			if p.Labels[policy.IstioInjectKey] != "false" {
				t.Errorf("%s: label %s=%q, want false", p.Name, policy.IstioInjectKey, p.Labels[policy.IstioInjectKey])
			}
		}
		if p.Annotations[policy.PolicyAnnotation] != ns+"/eureka" || p.Annotations[policy.WorkloadAnnotation] != want {
			t.Errorf("%s after the rollout: annotations %v, want the verdict of %s/eureka, %s", p.Name, p.Annotations, ns, want)
		}
		if slices.ContainsFunc(before, func(b corev1.Pod) bool { return b.UID == p.UID }) {
			t.Errorf("%s (uid %s) was never restarted", p.Name, p.UID)
		}
	}
}

func testRolloutSeed(t *testing.T, ctx context.Context, rh *harness.Harness, cs kubernetes.Interface) {
	const ns = "rollout-eureka"
	before := createSeedScene(t, ctx, rh, ns)
	createObjects(t, ctx, rh.Client, seedPolicy(ns, ""))
	waitWebhookDecides(t, ctx, rh.Client, ns, eurekaServers, "eureka-peers")
	store := policyStore(t, ctx, rh)

	targets, err := rollout.Find(ctx, rh.Client, store, rollout.Scope{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 5 {
		t.Fatalf("%d drifted pods, want the 5 created before the policy: %+v", len(targets), targets)
	}
	for _, target := range targets {
		if got := driftReasons(target.Drift); got != "NoVerdict,MissingKeys" {
			t.Errorf("%s: drift %s, want NoVerdict,MissingKeys", target.Name, got)
		}
	}
	plan := rollout.NewPlan(targets, rollout.PlanOptions{})
	var planText strings.Builder
	if err := plan.Write(&planText); err != nil {
		t.Fatal(err)
	}
	t.Logf("plan:\n%s", planText.String())
	if len(plan.Owners) != 2 || plan.Owners[1].Owner.Kind != "StatefulSet" ||
		!slices.Equal(podNamesOf(plan.Owners[1].Pods), []string{"eureka-server-2", "eureka-server-1", "eureka-server-0"}) ||
		plan.Owners[0].Owner != (rollout.Owner{Namespace: ns, Kind: "Deployment", Name: "eureka-client"}) {
		t.Fatalf("plan owners %+v", plan.Owners)
	}

	// The servers' budget refuses a second disruption by itself; the
	// clients have no budget, so only the rollout's own waiting keeps them
	// one at a time.
	watcher := watchAvailability(t, ctx, cs, ns, "app=eureka-server", 3)
	clientWatcher := watchAvailability(t, ctx, cs, ns, "app=eureka-client", 2)
	var events []rollout.Event
	var mu sync.Mutex
	runner := &rollout.Runner{
		Client: rh.Client, Policies: store,
		Timeout: 2 * time.Minute, PollInterval: 200 * time.Millisecond, RetryInterval: time.Second,
		Progress: func(e rollout.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
			t.Log(e.String())
		},
	}
	start := time.Now()
	result, err := runner.Run(ctx, plan)
	took := time.Since(start)
	maxUnavailable, transitions := watcher.stop()
	maxClientsUnavailable, _ := clientWatcher.stop()
	if err != nil {
		t.Fatalf("rollout: %v", err)
	}
	if result.Restarted != 5 || result.Unchanged != 0 {
		t.Fatalf("result %+v, want 5 restarted", result)
	}
	if maxUnavailable > 1 {
		t.Fatalf("up to %d eureka-server pods unavailable at once during the rollout, want at most 1", maxUnavailable)
	}
	if maxClientsUnavailable != 1 {
		t.Fatalf("up to %d eureka-client pods unavailable at once during the rollout, want exactly 1", maxClientsUnavailable)
	}
	if maxUnavailable != 1 {
		t.Fatalf("the watch never saw a server pod unavailable (%d transitions): it did not watch the rollout", transitions)
	}

	checkSeedVerdicts(t, ns, before, waitReadyPods(t, ctx, rh, ns, 5))
	left, err := rollout.Find(ctx, rh.Client, store, rollout.Scope{Namespace: ns})
	if err != nil || len(left) != 0 {
		t.Fatalf("drifted after the rollout: %+v (%v)", left, err)
	}

	var serversStart, serversEnd time.Duration
	refused := 0
	for _, e := range events {
		if e.Owner.Kind == "StatefulSet" {
			if serversStart == 0 {
				serversStart = e.Elapsed
			}
			serversEnd = e.Elapsed
		}
		if strings.Contains(e.Message, "eviction refused") {
			refused++
		}
	}
	t.Logf("figures: %d pods drifted, %d converged; max eureka-server pods unavailable %d (over %d watched transitions), eureka-client %d; "+
		"whole rollout %v, the 3-replica StatefulSet's part %v; %d evictions refused by the budget and retried; %d progress lines",
		len(targets), result.Restarted, maxUnavailable, transitions, maxClientsUnavailable, took.Round(100*time.Millisecond),
		(serversEnd - serversStart).Round(100*time.Millisecond), refused, len(events))
}

// testRolloutAutomatic is the seed's scene again, but nobody runs a
// rollout: the policy says rollout: Automatic, and the webhook's
// leader-elected controller (the harness runs it without an election)
// converges the pods itself, with the same Runner and the same promises.
func testRolloutAutomatic(t *testing.T, ctx context.Context, rh *harness.Harness, cs kubernetes.Interface) {
	const ns = "rollout-automatic"
	before := createSeedScene(t, ctx, rh, ns)

	watcher := watchAvailability(t, ctx, cs, ns, "app=eureka-server", 3)
	clientWatcher := watchAvailability(t, ctx, cs, ns, "app=eureka-client", 2)
	start := time.Now()
	createObjects(t, ctx, rh.Client, seedPolicy(ns, v1alpha1.RolloutAutomatic))

	// Converged: five Ready pods, every one a replacement carrying its verdict.
	converged := func(pods []corev1.Pod) bool {
		ok := 0
		for i := range pods {
			p := &pods[i]
			replaced := !slices.ContainsFunc(before, func(b corev1.Pod) bool { return b.UID == p.UID })
			if replaced && p.DeletionTimestamp == nil && harness.PodReady(p) && p.Annotations[policy.PolicyAnnotation] == ns+"/eureka" {
				ok++
			}
		}
		return ok == 5 && len(pods) == 5
	}
	deadline := time.Now().Add(2 * time.Minute)
	var pods []corev1.Pod
	for {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods = list.Items
		if converged(pods) {
			break
		}
		if time.Now().After(deadline) {
			var state []string
			for _, p := range pods {
				state = append(state, fmt.Sprintf("%s (uid %s, ready %v, verdict %q)", p.Name, p.UID, harness.PodReady(&p), p.Annotations[policy.PolicyAnnotation]))
			}
			t.Fatalf("the Automatic policy did not converge the pods in 2m: %s", strings.Join(state, "; "))
		}
		time.Sleep(500 * time.Millisecond)
	}
	took := time.Since(start)
	maxUnavailable, transitions := watcher.stop()
	maxClientsUnavailable, _ := clientWatcher.stop()
	if maxUnavailable != 1 {
		t.Fatalf("up to %d eureka-server pods unavailable at once (%d watched transitions), want exactly 1: the budget and the rollout allow one", maxUnavailable, transitions)
	}
	if maxClientsUnavailable != 1 {
		t.Fatalf("up to %d eureka-client pods unavailable at once, want exactly 1: one pod per owner at a time", maxClientsUnavailable)
	}
	checkSeedVerdicts(t, ns, before, pods)
	left, err := rollout.Find(ctx, rh.Client, policyStore(t, ctx, rh), rollout.Scope{Namespace: ns})
	if err != nil || len(left) != 0 {
		t.Fatalf("drifted after the Automatic rollout: %v (%v)", podNamesOf(left), err)
	}

	// The policy's events tell an operator what happened.
	reasons := rolloutEvents(t, ctx, cs, ns, "eureka", 2, 30*time.Second)
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], "Normal RolloutFinished: 5 pods restarted, 0 no longer needed it") ||
		!strings.HasPrefix(reasons[1], "Normal RolloutStarted: restarting 5 drifted pods") {
		t.Fatalf("the policy's rollout events:\n%s", strings.Join(reasons, "\n"))
	}
	progress := automaticRolloutLog(t, rh.Webhook.LogPath(), ns+"/eureka")
	t.Logf("the webhook's log of the rollout (%d lines):\n%s", len(progress), strings.Join(progress, "\n"))
	if evicted := slices.DeleteFunc(progress, func(line string) bool { return !strings.HasSuffix(line, ": evicted") }); len(evicted) != 5 {
		t.Fatalf("%d evictions logged, want 5:\n%s", len(evicted), strings.Join(evicted, "\n"))
	}
	t.Logf("figures: Automatic mode: %d pods drifted, %d converged without the CLI; max eureka-server pods unavailable %d (over %d watched transitions), eureka-client %d; "+
		"%v from the policy's creation to the last Ready replacement (5s of it the controller's settle delay)",
		len(before), len(pods), maxUnavailable, transitions, maxClientsUnavailable, took.Round(100*time.Millisecond))
}

// rolloutEvents waits, up to within, until the policy has at least n
// Rollout* events, and returns them all sorted, as "<type> <reason>: <note>".
func rolloutEvents(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name string, n int, within time.Duration) []string {
	t.Helper()
	for wait := time.Now().Add(within); ; {
		list, err := cs.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var reasons []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "MeshRolePolicy" && e.Regarding.Name == name && strings.HasPrefix(e.Reason, "Rollout") {
				reasons = append(reasons, e.Type+" "+e.Reason+": "+e.Note)
			}
		}
		slices.Sort(reasons)
		if len(reasons) >= n || time.Now().After(wait) {
			return reasons
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// testRolloutAutomaticStops: a replacement that never becomes Ready stops
// the Automatic mode after that one pod, with a Warning event on the policy;
// it evicts nothing more while it backs off, though pods of the policy stay
// drifted; a change of the policy ends the backoff and it finishes.
func testRolloutAutomaticStops(t *testing.T, ctx context.Context, rh *harness.Harness, cs kubernetes.Interface) {
	const ns = "rollout-automatic-stuck"
	// OnDelete: the template change reaches only pods created after it. No
	// budget: only the Automatic mode's own rules keep a second pod up.
	sts := rolloutStatefulSet(ns, "zk", zookeepers, appsv1.OnDeleteStatefulSetStrategyType)
	createObjects(t, ctx, rh.Client,
		enabledNamespace(ns),
		sts,
	)
	before := waitReadyPods(t, ctx, rh, ns, 3)
	patch := client.MergeFrom(sts.DeepCopy())
	sts.Spec.Template.Labels[harness.NeverReadyLabel] = "true"
	if err := rh.Client.Patch(ctx, sts, patch); err != nil {
		t.Fatal(err)
	}
	watcher := watchAvailability(t, ctx, cs, ns, "app=zookeeper", 3)
	zookeeper := zookeeperPolicy(ns, v1alpha1.RolloutAutomatic)
	createObjects(t, ctx, rh.Client, zookeeper)

	// The harness runs the webhook with --automatic-rollout-timeout=15s.
	events := rolloutEvents(t, ctx, cs, ns, "zookeeper", 2, time.Minute)
	if len(events) != 2 || !strings.HasPrefix(events[0], "Normal RolloutStarted: restarting 3 drifted pods") ||
		!strings.HasPrefix(events[1], "Warning RolloutStopped: stopped after 0 pods restarted: pod "+ns+"/zk-2 (StatefulSet zk): gave up after 15s waiting for replacement zk-2 to be Ready") ||
		!strings.Contains(events[1], "no pod of this policy is evicted for 1m0s or until the policy changes") {
		t.Fatalf("the policy's rollout events:\n%s", strings.Join(events, "\n"))
	}
	t.Logf("stopped, as the policy's events say:\n%s", strings.Join(events, "\n"))

	// Backing off: zk-1 and zk-0 stay drifted and untouched.
	const watched = 10 * time.Second
	time.Sleep(watched)
	checkOnlyZK2Replaced(t, ctx, rh.Client, ns, before, " while the Automatic mode backs off")
	left, err := rollout.Find(ctx, rh.Client, policyStore(t, ctx, rh), rollout.Scope{Namespace: ns})
	if err != nil || !slices.Equal(podNamesOf(left), []string{"zk-0", "zk-1"}) {
		t.Fatalf("drifted while backing off: %v (%v), want zk-0 and zk-1", podNamesOf(left), err)
	}
	if again := rolloutEvents(t, ctx, cs, ns, "zookeeper", 0, 0); len(again) != 2 {
		t.Fatalf("the Automatic mode tried again while backing off:\n%s", strings.Join(again, "\n"))
	}

	// Fixed: zk-2 made Ready, the template's label gone, and the policy
	// edited (a new generation): the backoff ends, the rollout finishes.
	patch = client.MergeFrom(sts.DeepCopy())
	delete(sts.Spec.Template.Labels, harness.NeverReadyLabel)
	if err := rh.Client.Patch(ctx, sts, patch); err != nil {
		t.Fatal(err)
	}
	if err := makeReady(ctx, rh.Client, ns, "zk-2"); err != nil {
		t.Fatal(err)
	}
	policyPatch := client.MergeFrom(zookeeper.DeepCopy())
	zookeeper.Spec.Priority = 1
	if err := rh.Client.Patch(ctx, zookeeper, policyPatch); err != nil {
		t.Fatal(err)
	}
	events = rolloutEvents(t, ctx, cs, ns, "zookeeper", 4, time.Minute)
	maxUnavailable, transitions := watcher.stop()
	if len(events) != 4 || !strings.HasPrefix(events[0], "Normal RolloutFinished: 2 pods restarted, 0 no longer needed it") {
		t.Fatalf("after the policy changed, the policy's rollout events:\n%s", strings.Join(events, "\n"))
	}
	if maxUnavailable != 1 {
		t.Fatalf("up to %d zk pods unavailable at once (%d watched transitions), want exactly 1", maxUnavailable, transitions)
	}
	for _, p := range waitReadyPods(t, ctx, rh, ns, 3) {
		if p.Annotations[policy.PolicyAnnotation] != ns+"/zookeeper" {
			t.Errorf("%s after the rollout: annotations %v", p.Name, p.Annotations)
		}
	}
	t.Logf("figures: the Automatic mode stopped after 1 eviction, evicted nothing in %v of backoff, and after the policy changed restarted 2 more; max zk pods unavailable %d (over %d transitions)",
		watched, maxUnavailable, transitions)
}

// automaticRolloutLog is the Automatic mode's log lines about a policy,
// "[elapsed] pod (owner): message", from the webhook's JSON log.
func automaticRolloutLog(t *testing.T, path, policyRef string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		var entry struct {
			Msg, Controller, Policy, Pod, Owner, Elapsed string
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Controller != "automatic-rollout" || entry.Policy != policyRef {
			continue
		}
		if entry.Pod == "" {
			out = append(out, entry.Msg)
			continue
		}
		out = append(out, fmt.Sprintf("[%6s] %s (%s): %s", entry.Elapsed, entry.Pod, entry.Owner, entry.Msg))
	}
	return out
}

func testRolloutStopsAtUnreadyReplacement(t *testing.T, ctx context.Context, rh *harness.Harness) {
	const ns = "rollout-stuck"
	// OnDelete: the template change below reaches only pods created after it.
	sts := rolloutStatefulSet(ns, "zk", zookeepers, appsv1.OnDeleteStatefulSetStrategyType)
	createObjects(t, ctx, rh.Client,
		enabledNamespace(ns),
		sts, minAvailable(ns, "zk", zookeepers, 2),
	)
	before := waitReadyPods(t, ctx, rh, ns, 3)
	createObjects(t, ctx, rh.Client, zookeeperPolicy(ns, ""))
	waitWebhookDecides(t, ctx, rh.Client, ns, zookeepers, "quorum")
	patch := client.MergeFrom(sts.DeepCopy())
	sts.Spec.Template.Labels[harness.NeverReadyLabel] = "true"
	if err := rh.Client.Patch(ctx, sts, patch); err != nil {
		t.Fatal(err)
	}

	store := policyStore(t, ctx, rh)
	targets, err := rollout.Find(ctx, rh.Client, store, rollout.Scope{Namespace: ns})
	if err != nil || len(targets) != 3 {
		t.Fatalf("%d drifted pods (%v), want 3", len(targets), err)
	}
	var progress strings.Builder
	runner := &rollout.Runner{
		Client: rh.Client, Policies: store,
		Timeout: 15 * time.Second, PollInterval: 200 * time.Millisecond, RetryInterval: time.Second,
		Progress: rollout.Lines(&progress),
	}
	result, err := runner.Run(ctx, rollout.NewPlan(targets, rollout.PlanOptions{}))
	t.Logf("progress:\n%s", progress.String())
	if err == nil || !strings.Contains(err.Error(), "pod rollout-stuck/zk-2 (StatefulSet zk): gave up after 15s waiting for replacement zk-2 to be Ready") {
		t.Fatalf("rollout error %v, want it to stop at zk-2's replacement", err)
	}
	if result.Restarted != 0 {
		t.Fatalf("result %+v", result)
	}
	checkOnlyZK2Replaced(t, ctx, rh.Client, ns, before, "")
	t.Logf("stopped as it should: %v", err)

	// Run again with replacements that become Ready: zk-2's replacement
	// counts as not healthy, so the budget (minAvailable 2) refuses zk-1's
	// eviction until zk-2 is made Ready.
	patch = client.MergeFrom(sts.DeepCopy())
	delete(sts.Spec.Template.Labels, harness.NeverReadyLabel)
	if err := rh.Client.Patch(ctx, sts, patch); err != nil {
		t.Fatal(err)
	}
	targets, err = rollout.Find(ctx, rh.Client, store, rollout.Scope{Namespace: ns})
	if err != nil || !slices.Equal(podNamesOf(targets), []string{"zk-0", "zk-1"}) {
		t.Fatalf("drifted pods %v (%v), want zk-0 and zk-1: zk-2's replacement has its verdict", podNamesOf(targets), err)
	}
	const unblockAfter = 4 * time.Second
	var unblocked sync.WaitGroup
	unblocked.Go(func() {
		time.Sleep(unblockAfter)
		if err := makeReady(ctx, rh.Client, ns, "zk-2"); err != nil {
			t.Error(err)
		}
	})
	progress.Reset()
	runner.Timeout = time.Minute
	start := time.Now()
	result, err = runner.Run(ctx, rollout.NewPlan(targets, rollout.PlanOptions{}))
	unblocked.Wait()
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("second rollout: %v", err)
	}
	if result.Restarted != 2 {
		t.Fatalf("second rollout: %+v, want 2 restarted", result)
	}
	refused := strings.Count(progress.String(), "rollout-stuck/zk-1 (StatefulSet zk): eviction refused")
	if refused == 0 || !strings.Contains(progress.String(), "Cannot evict pod as it would violate the pod's disruption budget.") {
		t.Fatalf("zk-1's eviction was never refused while zk-2 was not Ready")
	}
	if took := time.Since(start); took < unblockAfter {
		t.Fatalf("the rollout finished in %v, before zk-2 was Ready", took)
	}
	waitReadyPods(t, ctx, rh, ns, 3)
	t.Logf("figures: eviction of zk-1 refused %d times while zk-2 was unready, then granted; second rollout took %v",
		refused, time.Since(start).Round(100*time.Millisecond))
}

func enabledNamespace(ns string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policy.EnabledNamespaceLabel: "true"}}}
}

// zookeeperPolicy is the policy "zookeeper" of the zk StatefulSet in ns:
// its pods, app=zookeeper, are the peers of workload "quorum".
func zookeeperPolicy(ns string, mode v1alpha1.Rollout) *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "zookeeper"},
		Spec: v1alpha1.PolicySpec{Rollout: mode, Workloads: []v1alpha1.Workload{
			{Name: "quorum", Selector: metav1.LabelSelector{MatchLabels: zookeepers}, Role: v1alpha1.RolePeerStateful},
		}},
	}
}

// checkOnlyZK2Replaced checks that of the zk pods in ns, zk-2 alone is not
// one of before; when says when, in the message.
func checkOnlyZK2Replaced(t *testing.T, ctx context.Context, c client.Client, ns string, before []corev1.Pod, when string) {
	t.Helper()
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		wasThere := slices.ContainsFunc(before, func(b corev1.Pod) bool { return b.UID == p.UID })
		if (p.Name == "zk-2") == wasThere {
			t.Errorf("%s: original pod %v; want only zk-2 replaced%s", p.Name, wasThere, when)
		}
	}
}

// makeReady sets the pod's Ready and ContainersReady conditions True, as
// kwok would have had the pod not been labelled harness.NeverReadyLabel.
func makeReady(ctx context.Context, c client.Client, ns, name string) error {
	var pod corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	patch := client.MergeFrom(pod.DeepCopy())
	for i, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady || cond.Type == corev1.ContainersReady {
			pod.Status.Conditions[i].Status, pod.Status.Conditions[i].Reason = corev1.ConditionTrue, ""
		}
	}
	if err := c.Status().Patch(ctx, &pod, patch); err != nil {
		return fmt.Errorf("making %s Ready: %w", name, err)
	}
	return nil
}

func createObjects(t *testing.T, ctx context.Context, c client.Client, objects ...client.Object) {
	t.Helper()
	for _, o := range objects {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func rolloutStatefulSet(ns, name string, lbls map[string]string, strategy appsv1.StatefulSetUpdateStrategyType) *appsv1.StatefulSet {
	replicas := int32(3)
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: name, Replicas: &replicas,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: strategy},
			Selector:            &metav1.LabelSelector{MatchLabels: lbls},
			Template:            rolloutTemplate(name, lbls),
		},
	}
}

func rolloutDeployment(ns, name string, lbls map[string]string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: rolloutTemplate(name, lbls),
		},
	}
}

func rolloutTemplate(name string, lbls map[string]string) corev1.PodTemplateSpec {
	tmpl := map[string]string{}
	for k, v := range lbls {
		tmpl[k] = v
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: tmpl},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: "example.invalid/" + name + ":1"}}},
	}
}

func minAvailable(ns, name string, lbls map[string]string, n int32) *policyv1.PodDisruptionBudget {
	v := intstr.FromInt32(n)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &v, Selector: &metav1.LabelSelector{MatchLabels: lbls}},
	}
}

// waitReadyPods waits until the namespace has n pods, all Running and
// Ready, none being deleted, for as long as ctx lasts.
func waitReadyPods(t *testing.T, ctx context.Context, rh *harness.Harness, ns string, n int) []corev1.Pod {
	t.Helper()
	start := time.Now()
	deadline, _ := ctx.Deadline()
	pods, err := rh.WaitForReadyPods(ctx, ns, nil, n, time.Until(deadline))
	if err != nil {
		t.Fatalf("waiting for %d Ready pods in %s: %v", n, ns, err)
	}
	t.Logf("%d pods Running and Ready in %s after %v", n, ns, time.Since(start).Round(100*time.Millisecond))
	return pods
}

// waitWebhookDecides waits until the webhook gives a pod of these labels
// the workload's verdict, asking with server-side dry runs that create
// nothing: then the rollout's replacements will get theirs.
func waitWebhookDecides(t *testing.T, ctx context.Context, c client.Client, ns string, lbls map[string]string, workload string) {
	t.Helper()
	for i := 0; ; i++ {
		probe := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("probe-%d", i), Labels: lbls},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "example.invalid/probe:1"}}},
		}
		if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
			t.Fatalf("dry-run pod: %v", err)
		}
		if probe.Annotations[policy.WorkloadAnnotation] == workload {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the webhook never gave a pod %v of %s workload %s", lbls, ns, workload)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// policyStore is the policies in the API server now, in a Store.
func policyStore(t *testing.T, ctx context.Context, rh *harness.Harness) *policy.Store {
	t.Helper()
	store, err := rh.PolicyStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return store
}

func driftReasons(drift []policy.Drift) string {
	var names []string
	for _, d := range drift {
		names = append(names, string(d.Reason))
	}
	return strings.Join(names, ",")
}

func podNamesOf(targets []rollout.Target) []string {
	var names []string
	for _, t := range targets {
		names = append(names, t.Name)
	}
	return names
}

// availability follows, through a watch, how many of a set's pods are
// Ready and not being deleted, and the most that were unavailable at once.
type availability struct {
	done        chan struct{}
	stopWatch   func()
	max         int
	transitions int
}

func watchAvailability(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, selector string, desired int) *availability {
	t.Helper()
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	a := &availability{done: make(chan struct{}), stopWatch: w.Stop}
	available := map[string]bool{}
	for i := range list.Items {
		p := &list.Items[i]
		available[p.Name] = p.DeletionTimestamp == nil && harness.PodReady(p)
	}
	unavailable := func() int {
		n := 0
		for _, ok := range available {
			if ok {
				n++
			}
		}
		return desired - n
	}
	a.max = unavailable()
	go func() {
		defer close(a.done)
		for e := range w.ResultChan() {
			p, ok := e.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if e.Type == watch.Deleted {
				delete(available, p.Name)
			} else {
				available[p.Name] = p.DeletionTimestamp == nil && harness.PodReady(p)
			}
			a.transitions++
			a.max = max(a.max, unavailable())
		}
	}()
	return a
}

// stop ends the watch and returns the most pods unavailable at once and
// how many changes it saw.
func (a *availability) stop() (maxUnavailable, transitions int) {
	a.stopWatch()
	<-a.done
	return a.max, a.transitions
}
