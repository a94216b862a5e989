package istio_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/rollout"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/istio/injector"
)

// TestRolloutWithIstio is the seed's scene on a cluster whose pods run
// (kube-scheduler and kwok's fake nodes), with Istio's real injector: the
// eureka servers and clients run before any policy, so Istio gives every
// pod istio-proxy. The policy then makes the servers peers without a
// sidecar and keeps the clients' sidecar with 8761 bypassing it; the
// running pods change only when the rollout replaces them.
func TestRolloutWithIstio(t *testing.T) {
	e := startEnv(t, harness.WebhookConfigurationName, harness.ModeWebhook)
	ctx := t.Context()
	sceneStart := time.Now()
	// The disruption controller computes the servers' budget, which the
	// Eviction API reads.
	if err := e.h.AddControllers(harness.ClusterControllers...); err != nil {
		t.Fatal(err)
	}
	cluster, err := e.h.StartCluster(ctx, 1)
	if err != nil {
		t.Fatalf("starting kube-scheduler and kwok: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(cluster.Diagnostics(40))
		}
		if err := cluster.Stop(); err != nil {
			t.Errorf("stopping kube-scheduler and kwok: %v", err)
		}
	})

	const ns = "eureka-rollout"
	servers := map[string]string{"app": "eureka-server"}
	clients := map[string]string{"app": "eureka-client"}
	e.namespace(t, ns, map[string]string{policy.EnabledNamespaceLabel: "true", istioInjectionLabel: "enabled"})
	e.waitForIstio(t, ns)
	e.create(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "eureka-server"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: servers,
			Ports: []corev1.ServicePort{{Name: "http", Port: 8761}}},
	})
	// As the field report's chart: the template asks for the sidecar with
	// the label.
	e.create(t, statefulSet(ns, "eureka-server", 3, map[string]string{policy.IstioInjectKey: "true"}, nil, 8761))
	minAvailable := intstr.FromInt32(2)
	e.create(t, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "eureka-server"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable, Selector: &metav1.LabelSelector{MatchLabels: servers}},
	})
	e.create(t, deployment(ns, "eureka-client", 2, nil, nil, 8080))

	oldServers := e.readyPods(t, ns, servers, 3)
	oldClients := e.readyPods(t, ns, clients, 2)
	before := map[types.UID]bool{}
	for _, p := range slices.Concat(oldServers, oldClients) {
		before[p.UID] = true
		if !hasIstioProxy(&p) {
			t.Errorf("pod %s has no %s before the policy: the scene did not reproduce; containers: %v", p.Name, istioProxy, containerNames(&p))
		}
		if v, ok := p.Annotations[policy.PolicyAnnotation]; ok {
			t.Errorf("pod %s carries a verdict (%s) before any policy exists", p.Name, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("before the policy: %d eureka-server and %d eureka-client pods Running and Ready, each with %s: %v",
		len(oldServers), len(oldClients), istioProxy, containerNames(&oldServers[0]))

	// Calls so far; a create the API server or the controller retries (a
	// conflict after the webhooks ran) calls the injector again.
	serverCallsBefore := len(e.istioCalls(t, ns, "eureka-server"))
	clientCallsBefore := len(e.istioCalls(t, ns, "eureka-client"))
	if serverCallsBefore < 3 || clientCallsBefore < 2 {
		t.Fatalf("Istio's injector was called %d times for eureka-server and %d for eureka-client pods before the policy; want at least 3 and 2",
			serverCallsBefore, clientCallsBefore)
	}
	t.Logf("Istio's injector calls before the policy: %d for eureka-server, %d for eureka-client pods (one a pod; more when a create was retried)",
		serverCallsBefore, clientCallsBefore)

	e.policy(t, ns, "eureka", eurekaWorkloads()...)
	store, err := e.h.PolicyStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	targets, err := rollout.Find(ctx, e.h.Client, store, rollout.Scope{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	drifted := map[string][]string{}
	for _, target := range targets {
		var reasons []string
		for _, d := range target.Drift {
			reasons = append(reasons, string(d.Reason))
		}
		drifted[target.Name] = reasons
		wantReason := policy.DriftNoVerdict
		if strings.HasPrefix(target.Name, "eureka-server-") {
			wantReason = policy.DriftSidecarOnPeer
		}
		if !slices.Contains(reasons, string(wantReason)) {
			t.Errorf("%s: drift %v, want %s among them", target.Name, target.Drift, wantReason)
		}
	}
	if len(targets) != 5 {
		t.Fatalf("%d drifted pods %v, want the 5 created before the policy", len(targets), drifted)
	}
	t.Logf("drifted: %v", drifted)

	var mu sync.Mutex
	var events []rollout.Event
	runner := &rollout.Runner{
		Client: e.h.Client, Policies: store,
		Timeout: time.Minute, PollInterval: 200 * time.Millisecond, RetryInterval: time.Second,
		Progress: func(ev rollout.Event) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
			t.Log(ev.String())
		},
	}
	rolloutStart := time.Now()
	result, err := runner.Run(ctx, rollout.NewPlan(targets, rollout.PlanOptions{}))
	took := time.Since(rolloutStart)
	if err != nil {
		t.Fatalf("rollout: %v", err)
	}
	if result.Restarted != 5 || result.Unchanged != 0 {
		t.Errorf("rollout result %+v, want 5 restarted", result)
	}

	newServers := e.readyPods(t, ns, servers, 3)
	newClients := e.readyPods(t, ns, clients, 2)
	for _, p := range slices.Concat(newServers, newClients) {
		if before[p.UID] {
			t.Errorf("pod %s (uid %s) is the one from before the policy: the rollout did not replace it", p.Name, p.UID)
		}
	}
	peersWithoutSidecar := 0
	for _, p := range newServers {
		ok := true
		for _, name := range []string{istioProxy, istioInit, istioValidation} {
			if c, _ := findContainer(&p, name); c != nil {
				t.Errorf("peer %s's replacement has %s; containers: %v", p.Name, name, containerNames(&p))
				ok = false
			}
		}
		if _, injected := p.Annotations[istioStatus]; injected {
			t.Errorf("peer %s's replacement carries %s: Istio injected it", p.Name, istioStatus)
			ok = false
		}
		if got := p.Labels[policy.IstioInjectKey]; got != "false" {
			t.Errorf("peer %s's replacement: label %s = %q, want \"false\"", p.Name, policy.IstioInjectKey, got)
			ok = false
		}
		if got := p.Annotations[policy.RoleAnnotation]; got != string(v1alpha1.RolePeerStateful) {
			t.Errorf("peer %s's replacement: %s = %q", p.Name, policy.RoleAnnotation, got)
			ok = false
		}
		if ok {
			peersWithoutSidecar++
		}
	}
	clientsBypassing := 0
	for _, p := range newClients {
		if !hasIstioProxy(&p) {
			t.Errorf("client %s's replacement has no %s; containers: %v", p.Name, istioProxy, containerNames(&p))
			continue
		}
		args := e.iptablesArgs(t, &p)
		if out, ok := flagValue(args, "-o"); !ok || !portsIn(out, "8761") {
			t.Errorf("client %s's replacement: istio-iptables args %q do not exclude outbound port 8761 (-o)", p.Name, args)
			continue
		}
		if got := p.Annotations[policy.WorkloadAnnotation]; got != "eureka-clients" {
			t.Errorf("client %s's replacement: %s = %q, want eureka-clients", p.Name, policy.WorkloadAnnotation, got)
			continue
		}
		t.Logf("client %s's replacement: %v; istio-iptables args %q", p.Name, containerNames(&p), args)
		clientsBypassing++
	}
	if peersWithoutSidecar != 3 || clientsBypassing != 2 {
		t.Errorf("after the rollout: %d of 3 peers without a sidecar, %d of 2 clients with istio-proxy and -o 8761", peersWithoutSidecar, clientsBypassing)
	}

	// Istio's objectSelector keeps the API server from calling its injector
	// for the peers' replacements; each client replacement was injected.
	if calls := e.istioCalls(t, ns, "eureka-server")[serverCallsBefore:]; len(calls) != 0 {
		t.Errorf("Istio's injector was called for the eureka-server replacements: %+v; want no call after the policy", calls)
	}
	if calls := e.istioCalls(t, ns, "eureka-client")[clientCallsBefore:]; len(calls) < 2 || slices.ContainsFunc(calls, func(c injector.Call) bool { return !c.Patched }) {
		t.Errorf("Istio's injector calls for the eureka-client replacements: %+v; want at least 2, each with a patch", calls)
	}
	left, err := rollout.Find(ctx, e.h.Client, store, rollout.Scope{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range left {
		t.Errorf("still drifted after the rollout: %s: %v", target.Key(), target.Drift)
	}

	t.Logf("figures: %d pods drifted (3 peers, 2 clients), %d converged (%d peers without a sidecar, %d clients with -o 8761); "+
		"rollout %.1fs (%d progress lines), scene from the cluster's start %.1fs",
		len(targets), result.Restarted, peersWithoutSidecar, clientsBypassing, took.Seconds(), len(events), time.Since(sceneStart).Seconds())
}

// readyPods waits for n Running and Ready pods labelled lbls in ns.
func (e *env) readyPods(t *testing.T, ns string, lbls map[string]string, n int) []corev1.Pod {
	t.Helper()
	pods, err := e.h.WaitForReadyPods(t.Context(), ns, lbls, n, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return pods
}
