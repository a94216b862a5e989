package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
)

// TestMeshrole runs the scenarios in order; the one that stops the webhook
// runs last and starts it again.
func TestMeshrole(t *testing.T) {
	t.Run("eureka seed: peers lose the sidecar despite the template's inject label, clients keep it and bypass 8761", testEurekaSeed)
	t.Run("namespace without meshrole.io/enabled: pods untouched", testUnlabelledNamespace)
	t.Run("a labelled namespace and at once its first pod, 20 times: every pod admitted with the cluster policy's verdict", testColdNamespaceCache)
	t.Run("meshrole.io/* annotations cannot be forged: stripped in enabled namespaces, not counted from elsewhere", testForgedKeys)
	t.Run("BypassPorts: ZooKeeper peer ports excluded inbound and outbound, merged with existing values", testBypassPorts)
	t.Run("precedence: priority decides, equal priority and different roles is a conflict the MeshRolePolicy wins", testPrecedence)
	t.Run("DryRun: no Istio key changes, the would-be verdict in meshrole.io/dry-run, a warning", testDryRun)
	t.Run("policy edit: pods created after a role flip follow the new generation", testPolicyEdit)
	t.Run("client options: holdApplicationUntilProxyStarts joins an existing proxy config, proxy Unchanged leaves injection alone", testClientOptions)
	t.Run("pod already injected by Istio: meshrole changes nothing and warns about the webhook order", testAlreadyInjected)
	t.Run("invalid policies are refused by the API server with a clear message", testInvalidPolicies)
	t.Run("a selector the schema cannot check matches nothing and turns Ready False", testInvalidSelectorStatus)
	t.Run("examples: each of examples/*/ applied as a user would, its pods get their verdicts", testExamples)
	t.Run("kubectl meshrole audit finds the seed's traps in a live cluster and exits 1", testAudit)
	t.Run("kubectl meshrole: every subcommand takes kubectl's -n, --context and -o yaml against the live API server", testPlugin)
	t.Run("the webhook port refuses TLS below 1.2", testTLSVersions)
	t.Run("a MeshRolePolicy never decides for another namespace", testNamespaceIsolation)
	t.Run("serving certificate rotated on disk: served without a restart, the API server keeps calling", testCertificateRotation)
	t.Run("serving certificate rotated under load: no admission fails, both certificates served", testRotationUnderLoad)
	t.Run("1,000 policy changes under load: every answer is one policy generation's whole verdict", testPolicyChurnUnderLoad)
	t.Run("a replica terminated under load: SIGTERM and its endpoint removed, admissions sent to it complete, none fails", testReplicaTerminatedUnderLoad)
	t.Run("webhook down with failurePolicy Fail: enabled namespaces refuse pods, others do not", testWebhookDown)
}

func testEurekaSeed(t *testing.T) {
	ctx := scenario(t, 90*time.Second)
	const ns = "e2e-eureka"
	ref := ns + "/eureka"
	applyExample(t, ctx, ns, "namespace.yaml", "policy.yaml", "service.yaml", "statefulset.yaml", "deployment.yaml")

	var nsObj corev1.Namespace
	if err := h.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels[enabledNsLabel] != "true" {
		t.Fatalf("namespace %s labels %v: want %s=true", ns, nsObj.Labels, enabledNsLabel)
	}
	var svc corev1.Service
	if err := h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "eureka-server"}, &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8761 {
		t.Errorf("service eureka-server: clusterIP %q ports %v, want headless on 8761", svc.Spec.ClusterIP, svc.Spec.Ports)
	}

	peerLabels := map[string]string{injectKey: "false", dataplaneKey: "none"}
	peerAnnotations := map[string]string{
		injectKey:   "false",
		roleKey:     "peer-stateful",
		policyKey:   ref,
		workloadKey: "eureka-peers",
	}
	servers := waitForPods(t, ctx, ns, map[string]string{"app": "eureka-server"}, 3)
	for i, p := range servers {
		if want := "eureka-server-" + string(rune('0'+i)); p.Name != want {
			t.Errorf("pod %d is %s, want %s", i, p.Name, want)
		}
		// The template's label sidecar.istio.io/inject: "true" is overwritten.
		expectPod(t, &p, map[string]string{"app": "eureka-server"}, peerLabels, peerAnnotations)
	}
	clients := waitForPods(t, ctx, ns, map[string]string{"app": "eureka-client"}, 2)
	for _, p := range clients {
		expectPod(t, &p, map[string]string{"app": "eureka-client"},
			map[string]string{injectKey: "true"},
			map[string]string{
				injectKey:     "true",
				excludeOutKey: "8761",
				roleKey:       "client-stateless",
				policyKey:     ref,
				workloadKey:   "eureka-clients",
			})
	}
	if t.Failed() {
		return
	}

	t.Run("eureka-server-1 deleted: the recreated pod gets the same verdict", func(t *testing.T) {
		ctx := scenario(t, 60*time.Second)
		old := servers[1]
		if err := h.Client.Delete(ctx, &old, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		var p corev1.Pod
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := h.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "eureka-server-1"}, &p)
			if err == nil && p.UID != old.UID && p.DeletionTimestamp == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("eureka-server-1 (uid %s) was not recreated within 30s (last: uid %s, err %v)", old.UID, p.UID, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("eureka-server-1 recreated: uid %s -> %s", old.UID, p.UID)
		expectPod(t, &p, map[string]string{"app": "eureka-server"}, peerLabels, peerAnnotations)
	})

	t.Run("policy status: Ready, pods counted per workload entry", func(t *testing.T) {
		ctx := scenario(t, 30*time.Second)
		mrp := &v1alpha1.MeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "eureka"}}
		waitForStatus(t, ctx, mrp, func() *v1alpha1.PolicyStatus { return &mrp.Status }, func(s *v1alpha1.PolicyStatus) bool {
			return s.ObservedGeneration == mrp.Generation &&
				meta.IsStatusConditionTrue(s.Conditions, "Ready") &&
				meta.IsStatusConditionFalse(s.Conditions, "Conflict") &&
				matched(s, "eureka-peers") == 3 && matched(s, "eureka-clients") == 2
		}, "observedGeneration current, Ready=True, Conflict=False, matchedPods eureka-peers=3 eureka-clients=2")
	})
}

func matched(s *v1alpha1.PolicyStatus, workload string) int32 {
	for _, w := range s.Workloads {
		if w.Name == workload {
			return w.MatchedPods
		}
	}
	return -1
}

// waitForStatus polls obj until ok accepts its status (within 15s).
func waitForStatus(t *testing.T, ctx context.Context, obj client.Object, status func() *v1alpha1.PolicyStatus, ok func(*v1alpha1.PolicyStatus) bool, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := h.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatal(err)
		}
		if ok(status()) {
			return
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(status(), "", "  ")
			t.Fatalf("%T %s: status not as wanted within 15s (%s); status:\n%s", obj, harness.PolicyRef(obj), want, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testUnlabelledNamespace(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-unlabelled"
	// The same policy and workloads as the seed, in a namespace that did not
	// opt in: the API server must not even call the webhook.
	createNamespace(t, ctx, ns, false, nil)
	applyExample(t, ctx, ns, "policy.yaml", "service.yaml", "statefulset.yaml", "deployment.yaml")

	for _, p := range waitForPods(t, ctx, ns, map[string]string{"app": "eureka-server"}, 3) {
		// Only the template's own label; no annotation at all.
		expectPod(t, &p, map[string]string{"app": "eureka-server"}, map[string]string{injectKey: "true"}, nil)
	}
	for _, p := range waitForPods(t, ctx, ns, map[string]string{"app": "eureka-client"}, 2) {
		expectPod(t, &p, map[string]string{"app": "eureka-client"}, nil, nil)
	}
	// A pod created directly, too.
	p := newPod(ns, "direct", map[string]string{"app": "eureka-server"}, nil)
	if err := h.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	expectPod(t, p, map[string]string{"app": "eureka-server"}, nil, nil)
}

const zookeeperManifests = `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata:
  name: zookeeper
spec:
  workloads:
  - name: zk-quorum
    selector:
      matchLabels: {app: zookeeper}
    role: peer-stateful
    peer:
      proxy: BypassPorts
      ports: [3888, 2888]       # unsorted on purpose: written ascending
---
apiVersion: v1
kind: Service
metadata:
  name: zookeeper
spec:
  clusterIP: None
  selector: {app: zookeeper}
  ports:
  - {name: client, port: 2181}
  - {name: peer, port: 2888}
  - {name: leader-election, port: 3888}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: zookeeper
spec:
  serviceName: zookeeper
  replicas: 3
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: zookeeper, instance: plain}
  template:
    metadata:
      labels: {app: zookeeper, instance: plain}
    spec:
      containers:
      - name: zookeeper
        image: zookeeper:3.9
        ports:
        - {containerPort: 2181}
        - {containerPort: 2888}
        - {containerPort: 3888}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: zookeeper-metrics
spec:
  serviceName: zookeeper
  replicas: 1
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: zookeeper, instance: metrics}
  template:
    metadata:
      labels: {app: zookeeper, instance: metrics}
      annotations:
        traffic.sidecar.istio.io/excludeOutboundPorts: "9000"
    spec:
      containers:
      - name: zookeeper
        image: zookeeper:3.9
`

func testBypassPorts(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-bypass-ports"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, zookeeperManifests)

	want := map[string]string{
		excludeInKey:  "2888,3888",
		excludeOutKey: "2888,3888",
		roleKey:       "peer-stateful",
		policyKey:     ns + "/zookeeper",
		workloadKey:   "zk-quorum",
	}
	for _, p := range waitForPods(t, ctx, ns, map[string]string{"instance": "plain"}, 3) {
		// The sidecar stays: no inject key, no dataplane-mode label.
		expectPod(t, &p, map[string]string{"app": "zookeeper", "instance": "plain"}, nil, want)
	}
	want[excludeOutKey] = "9000,2888,3888" // existing value first, then the new ports
	for _, p := range waitForPods(t, ctx, ns, map[string]string{"instance": "metrics"}, 1) {
		expectPod(t, &p, map[string]string{"app": "zookeeper", "instance": "metrics"}, nil, want)
	}
}

func testPrecedence(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-precedence"
	const cmrpName = "e2e-precedence"
	createNamespace(t, ctx, ns, true, map[string]string{"e2e.meshrole.io/precedence": "true"})
	wc, warnings, err := h.ClientWithWarnings()
	if err != nil {
		t.Fatal(err)
	}
	podLabels := map[string]string{"app": "kv"}

	mrp := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "kv", Namespace: ns},
		Spec: v1alpha1.PolicySpec{Priority: 10, Workloads: []v1alpha1.Workload{{
			Name:     "kv-peers",
			Selector: metav1.LabelSelector{MatchLabels: podLabels},
			Role:     v1alpha1.RolePeerStateful,
		}}},
	}
	cmrp := &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: cmrpName},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"e2e.meshrole.io/precedence": "true"}},
			PolicySpec: v1alpha1.PolicySpec{Priority: 0, Workloads: []v1alpha1.Workload{{
				Name:     "kv-any",
				Selector: metav1.LabelSelector{MatchLabels: podLabels},
				Role:     v1alpha1.RoleClientStateless,
			}}},
		},
	}
	// The ClusterMeshRolePolicy first, and in force, so that the
	// MeshRolePolicy's win below is over a policy the webhook knows.
	if err := h.Client.Create(ctx, cmrp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Client.Delete(context.Background(), cmrp) })
	if _, err := h.WaitForVerdict(ctx, ns, podLabels, 10*time.Second, func(p *corev1.Pod) bool {
		return p.Annotations[policyKey] == "cluster/"+cmrpName
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.Client.Create(ctx, mrp); err != nil {
		t.Fatal(err)
	}

	peer := map[string]string{
		injectKey: "false", roleKey: "peer-stateful", policyKey: ns + "/kv", workloadKey: "kv-peers",
	}
	clientVerdict := map[string]string{
		injectKey: "true", roleKey: "client-stateless", policyKey: "cluster/" + cmrpName, workloadKey: "kv-any",
	}
	// createAndCheck waits until the webhook's caches show the expected
	// winner (dry-run probes), then creates a real pod with a client that
	// collects warnings and checks what was stored and warned.
	createAndCheck := func(t *testing.T, wantAnn map[string]string, wantLabels map[string]string, wantConflictWarning bool) {
		t.Helper()
		if _, err := h.WaitForVerdict(ctx, ns, podLabels, 10*time.Second, func(p *corev1.Pod) bool {
			return p.Annotations[policyKey] == wantAnn[policyKey] && p.Annotations[conflictKey] == wantAnn[conflictKey]
		}); err != nil {
			t.Fatal(err)
		}
		warnings.Take()
		p := newPod(ns, "", podLabels, nil)
		if err := wc.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		got := warnings.Take()
		expectPod(t, p, podLabels, wantLabels, wantAnn)
		if has := containsAny(got, "conflicting policies"); has != wantConflictWarning {
			t.Errorf("warnings %q: want a \"conflicting policies\" warning: %v", got, wantConflictWarning)
		} else if has {
			t.Logf("admission warning: %q", got)
		}
	}

	t.Run("MeshRolePolicy priority 10 over ClusterMeshRolePolicy priority 0", func(t *testing.T) {
		createAndCheck(t, peer, map[string]string{injectKey: "false", dataplaneKey: "none"}, false)
	})
	t.Run("ClusterMeshRolePolicy priority 20 over MeshRolePolicy priority 10", func(t *testing.T) {
		setCMRPPriority(t, ctx, cmrpName, 20)
		createAndCheck(t, clientVerdict, map[string]string{injectKey: "true"}, false)
	})
	t.Run("equal priority 10, different roles: MeshRolePolicy wins, conflict annotated and warned", func(t *testing.T) {
		setCMRPPriority(t, ctx, cmrpName, 10)
		want := merge(peer, map[string]string{conflictKey: "cluster/" + cmrpName + "/kv-any=client-stateless"})
		createAndCheck(t, want, map[string]string{injectKey: "false", dataplaneKey: "none"}, true)
	})
	t.Run("both policies report the Conflict condition", func(t *testing.T) {
		conflicting := func(s *v1alpha1.PolicyStatus) bool { return meta.IsStatusConditionTrue(s.Conditions, "Conflict") }
		m := &v1alpha1.MeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kv"}}
		waitForStatus(t, ctx, m, func() *v1alpha1.PolicyStatus { return &m.Status }, conflicting, "Conflict=True")
		c := &v1alpha1.ClusterMeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Name: cmrpName}}
		waitForStatus(t, ctx, c, func() *v1alpha1.PolicyStatus { return &c.Status }, conflicting, "Conflict=True")
	})
}

func setCMRPPriority(t *testing.T, ctx context.Context, name string, priority int32) {
	t.Helper()
	patch := []byte(`{"spec":{"priority":` + itoa(int(priority)) + `}}`)
	var c v1alpha1.ClusterMeshRolePolicy
	c.Name = name
	if err := h.Client.Patch(ctx, &c, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func testDryRun(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-dry-run"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata:
  name: etcd-trial
spec:
  mode: DryRun
  workloads:
  - name: etcd-members
    selector:
      matchLabels: {app: etcd}
    role: peer-stateful
`)
	wc, warnings, err := h.ClientWithWarnings()
	if err != nil {
		t.Fatal(err)
	}
	warnings.Take()
	own := map[string]string{"app": "etcd", injectKey: "true"}
	p := newPod(ns, "etcd-0", own, map[string]string{"team": "storage"})
	if err := wc.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	got := warnings.Take()

	// Istio's keys as the pod had them: label inject "true" kept, nothing added.
	expectPod(t, p, own, map[string]string{injectKey: "true"}, map[string]string{
		"team":    "storage",
		dryRunKey: p.Annotations[dryRunKey], // checked below
	})
	raw, ok := p.Annotations[dryRunKey]
	if !ok {
		t.Fatalf("annotation %s missing; annotations %v", dryRunKey, p.Annotations)
	}
	var report struct {
		Policy      string             `json:"policy"`
		Workload    string             `json:"workload"`
		Role        string             `json:"role"`
		Labels      map[string]string  `json:"labels"`
		Annotations map[string]string  `json:"annotations"`
		Ports       map[string][]int32 `json:"ports"`
	}
	if err := json.Unmarshal([]byte(raw), &report); err != nil {
		t.Fatalf("annotation %s is not JSON: %v\n%s", dryRunKey, err, raw)
	}
	t.Logf("%s: %s", dryRunKey, raw)
	if report.Policy != ns+"/etcd-trial" || report.Workload != "etcd-members" || report.Role != "peer-stateful" {
		t.Errorf("dry-run report names policy %q workload %q role %q, want %q %q %q",
			report.Policy, report.Workload, report.Role, ns+"/etcd-trial", "etcd-members", "peer-stateful")
	}
	if d := diff(report.Labels, map[string]string{injectKey: "false", dataplaneKey: "none"}); d != "" {
		t.Errorf("dry-run report labels differ (-got +want):\n%s", d)
	}
	if d := diff(report.Annotations, map[string]string{injectKey: "false"}); d != "" {
		t.Errorf("dry-run report annotations differ (-got +want):\n%s", d)
	}
	if len(report.Ports) != 0 {
		t.Errorf("dry-run report ports %v, want none for proxy Skip", report.Ports)
	}
	if !containsAny(got, "DryRun policy") {
		t.Errorf("warnings %q: want one containing \"DryRun policy\"", got)
	} else {
		t.Logf("admission warning: %q", got)
	}
}

func testPolicyEdit(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-policy-edit"
	createNamespace(t, ctx, ns, true, nil)
	podLabels := map[string]string{"app": "cache"}
	mrp := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "cache", Namespace: ns},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name:     "cache",
			Selector: metav1.LabelSelector{MatchLabels: podLabels},
			Role:     v1alpha1.RoleClientStateless,
		}}},
	}
	if err := h.Client.Create(ctx, mrp); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitForPolicy(ctx, mrp, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	before := newPod(ns, "", podLabels, nil)
	if err := h.Client.Create(ctx, before); err != nil {
		t.Fatal(err)
	}
	if got := before.Annotations[roleKey]; got != "client-stateless" {
		t.Fatalf("before the edit: role %q, want client-stateless", got)
	}

	// Flip the role; a client section would now be refused, so the entry is
	// replaced as a whole.
	// (The webhook writes the policy's status meanwhile: retry on conflict.)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := h.Client.Get(ctx, client.ObjectKeyFromObject(mrp), mrp); err != nil {
			return err
		}
		mrp.Spec.Workloads[0].Role = v1alpha1.RolePeerStateful
		mrp.Spec.Workloads[0].Client = nil
		return h.Client.Update(ctx, mrp)
	}); err != nil {
		t.Fatal(err)
	}
	edited := time.Now()
	const bound = 10 * time.Second
	var after *corev1.Pod
	created := 0
	for {
		p := newPod(ns, "", podLabels, nil)
		if err := h.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		created++
		if p.Annotations[roleKey] == "peer-stateful" {
			after = p
			break
		}
		if time.Since(edited) > bound {
			t.Fatalf("pods created up to %v after the edit still get role %q", bound, p.Annotations[roleKey])
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("verdict flipped %v after the edit (generation %d), on pod #%d created since", time.Since(edited).Round(time.Millisecond), mrp.Generation, created)
	expectPod(t, after, podLabels, map[string]string{injectKey: "false", dataplaneKey: "none"}, map[string]string{
		injectKey: "false", roleKey: "peer-stateful", policyKey: ns + "/cache", workloadKey: "cache",
	})
	// The pod made before the edit is not touched (admission only runs on CREATE).
	var again corev1.Pod
	if err := h.Client.Get(ctx, client.ObjectKeyFromObject(before), &again); err != nil {
		t.Fatal(err)
	}
	if again.Annotations[roleKey] != "client-stateless" {
		t.Errorf("pod created before the edit now has role %q", again.Annotations[roleKey])
	}
}

func testInvalidPolicies(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-invalid"
	createNamespace(t, ctx, ns, true, nil)

	cases := []struct {
		name     string
		workload string // one YAML workload entry, or a whole "workloads:" value
		want     string
	}{
		{"unknown role", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: leader`,
			`spec.workloads[0].role: Unsupported value: "leader": supported values: "peer-stateful", "client-stateless"`},
		{"unknown peer proxy", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: peer-stateful
    peer: {proxy: Bypass}`,
			`spec.workloads[0].peer.proxy: Unsupported value: "Bypass": supported values: "Skip", "BypassPorts"`},
		{"unknown client proxy", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: client-stateless
    client: {proxy: Mesh}`,
			`spec.workloads[0].client.proxy: Unsupported value: "Mesh": supported values: "Inject", "Sidecar", "Unchanged"`},
		{"peer settings with role client-stateless", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: client-stateless
    peer: {proxy: Skip}`,
			"peer settings are only valid with role peer-stateful; for role client-stateless use client"},
		{"client settings with role peer-stateful", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: peer-stateful
    client: {excludeOutboundPorts: [8761]}`,
			"client settings are only valid with role client-stateless; for role peer-stateful use peer"},
		{"BypassPorts without ports", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: peer-stateful
    peer: {proxy: BypassPorts}`,
			"peer.ports is required when peer.proxy is BypassPorts: list the ports the peers replicate on, e.g. [2888, 3888]"},
		{"port 0", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: peer-stateful
    peer: {proxy: BypassPorts, ports: [0]}`,
			"spec.workloads[0].peer.ports[0]: Invalid value: 0: spec.workloads[0].peer.ports[0] in body should be greater than or equal to 1"},
		{"port 70000", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: client-stateless
    client: {excludeOutboundPorts: [70000]}`,
			"spec.workloads[0].client.excludeOutboundPorts[0]: Invalid value: 70000: spec.workloads[0].client.excludeOutboundPorts[0] in body should be less than or equal to 65535"},
		{"Istio's port 15001", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: peer-stateful
    peer: {proxy: BypassPorts, ports: [2888, 15001]}`,
			"ports 15000-15099 are reserved for Istio's proxy and cannot bypass it; pick the application's own port"},
		{"duplicate workload names", `
  - name: w
    selector: {matchLabels: {app: x}}
    role: peer-stateful
  - name: w
    selector: {matchLabels: {app: other}}
    role: client-stateless`,
			"workload names must be unique within a policy"},
		{"empty workload list", ` []`,
			"spec.workloads: Invalid value: 0: spec.workloads in body should have at least 1 items"},
	}
	kinds := []struct{ kind, meta, extra string }{
		{"MeshRolePolicy", "\n  namespace: " + ns, ""},
		{"ClusterMeshRolePolicy", "", "\n  namespaceSelector: {}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range kinds {
				manifest := "apiVersion: meshrole.io/v1alpha1\nkind: " + k.kind +
					"\nmetadata:\n  name: invalid" + k.meta +
					"\nspec:" + k.extra + "\n  workloads:" + tc.workload + "\n"
				objs, err := harness.DecodeYAML([]byte(manifest))
				if err != nil {
					t.Fatalf("test manifest: %v\n%s", err, manifest)
				}
				err = h.Client.Create(ctx, objs[0], client.DryRunAll)
				switch {
				case err == nil:
					t.Errorf("%s accepted:\n%s", k.kind, manifest)
				case !strings.Contains(err.Error(), tc.want):
					t.Errorf("%s refused with\n  %v\nwant the message to contain\n  %s", k.kind, err, tc.want)
				default:
					t.Logf("%s: %v", k.kind, err)
				}
			}
		})
	}
}

func testWebhookDown(t *testing.T) {
	ctx := scenario(t, 90*time.Second)
	const enabled, disabled = "e2e-webhook-down", "e2e-webhook-down-disabled"
	createNamespace(t, ctx, enabled, true, nil)
	createNamespace(t, ctx, disabled, false, nil)

	if err := h.Webhook.Stop(); err != nil {
		t.Fatalf("stopping the webhook: %v", err)
	}
	restarted := false
	restart := func() {
		if restarted {
			return
		}
		restarted = true
		if err := h.Webhook.Start(context.Background()); err != nil {
			t.Fatalf("restarting the webhook: %v", err)
		}
		if err := h.WaitForWebhook(context.Background()); err != nil {
			t.Fatalf("webhook restarted but not serving: %v", err)
		}
	}
	t.Cleanup(restart) // whatever happens below, later tests get a webhook

	err := h.Client.Create(ctx, newPod(enabled, "refused", map[string]string{"app": "x"}, nil))
	if err == nil {
		t.Fatal("pod created in an enabled namespace while the webhook is down (failurePolicy Fail)")
	}
	t.Logf("refused as expected: %v", err)
	for _, want := range []string{`failed calling webhook "` + harness.WebhookName + `"`, "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := h.Client.Create(ctx, newPod(disabled, "allowed", map[string]string{"app": "x"}, nil)); err != nil {
		t.Errorf("pod in a namespace without %s=true refused while the webhook is down: %v", enabledNsLabel, err)
	}

	start := time.Now()
	restart()
	t.Logf("webhook restarted and serving again in %v", time.Since(start).Round(time.Millisecond))
	if err := h.Client.Create(ctx, newPod(enabled, "admitted", map[string]string{"app": "x"}, nil)); err != nil {
		t.Errorf("pod in %s refused after the webhook restarted: %v", enabled, err)
	}
}

func testClientOptions(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-client-options"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata:
  name: clients
spec:
  workloads:
  - name: orders
    selector:
      matchLabels: {app: orders}
    role: client-stateless
    client:
      holdApplicationUntilProxyStarts: true
      excludeOutboundPorts: [8761, 5432]
  - name: legacy
    selector:
      matchLabels: {app: legacy}
    role: client-stateless
    client:
      proxy: Unchanged
      excludeOutboundPorts: [8761]
`)

	t.Run("holdApplicationUntilProxyStarts and excludeOutboundPorts", func(t *testing.T) {
		p := newPod(ns, "orders", map[string]string{"app": "orders"}, map[string]string{
			"proxy.istio.io/config": "concurrency: 2\n",
			excludeOutKey:           "9000, 8761",
		})
		if err := h.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		cfg := p.Annotations["proxy.istio.io/config"]
		var got map[string]any
		if err := yaml.Unmarshal([]byte(cfg), &got); err != nil {
			t.Fatalf("proxy.istio.io/config is no longer YAML: %v\n%s", err, cfg)
		}
		if got["concurrency"] != float64(2) || got["holdApplicationUntilProxyStarts"] != true || len(got) != 2 {
			t.Errorf("proxy.istio.io/config = %q, want concurrency: 2 kept and holdApplicationUntilProxyStarts: true added", cfg)
		}
		// Existing entries first (as the pod had them, one port only once),
		// then the new ones ascending.
		expectPod(t, p, map[string]string{"app": "orders"}, map[string]string{injectKey: "true"}, map[string]string{
			"proxy.istio.io/config": cfg, // checked above
			injectKey:               "true",
			excludeOutKey:           "9000,8761,5432",
			roleKey:                 "client-stateless",
			policyKey:               ns + "/clients",
			workloadKey:             "orders",
		})
	})
	t.Run("proxy Unchanged keeps the pod's own inject choice", func(t *testing.T) {
		p := newPod(ns, "legacy", map[string]string{"app": "legacy"}, map[string]string{injectKey: "false"})
		if err := h.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		expectPod(t, p, map[string]string{"app": "legacy"}, nil, map[string]string{
			injectKey:     "false",
			excludeOutKey: "8761",
			roleKey:       "client-stateless",
			policyKey:     ns + "/clients",
			workloadKey:   "legacy",
		})
	})
}

func testAlreadyInjected(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const ns = "e2e-already-injected"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata:
  name: peers
spec:
  workloads:
  - name: peers
    selector:
      matchLabels: {app: peer}
    role: peer-stateful
`)
	wc, warnings, err := h.ClientWithWarnings()
	if err != nil {
		t.Fatal(err)
	}
	// What a pod looks like when Istio's injector ran first.
	p := newPod(ns, "injected", map[string]string{"app": "peer"}, map[string]string{"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`})
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxyv2:never-pulled"})
	warnings.Take()
	if err := wc.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	got := warnings.Take()
	expectPod(t, p, map[string]string{"app": "peer"}, nil, map[string]string{"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`})
	if !containsAny(got, "istio-") {
		t.Errorf("warnings %q: want one naming the webhook ordering problem (istio-* configurations)", got)
	} else {
		t.Logf("admission warning: %q", got)
	}
}
