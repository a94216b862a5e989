package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/native"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
)

// TestNativeMatchesWebhook is native mode's proof: two fresh control planes,
// one with meshrole in webhook mode and one in native mode (no webhook on the
// pod path at all), get the same generated corpus of namespaces, policies
// and pods; every pod's stored labels and annotations must be identical.
func TestNativeMatchesWebhook(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	webhookMode, nativeMode := startPair(t, ctx)

	var mwcs admissionregistrationv1.MutatingWebhookConfigurationList
	if err := nativeMode.Client.List(ctx, &mwcs); err != nil {
		t.Fatal(err)
	}
	if len(mwcs.Items) != 0 {
		t.Fatalf("native mode: %d MutatingWebhookConfigurations registered, want none", len(mwcs.Items))
	}

	total := map[string]int{}
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			c := newCorpus(seed, fmt.Sprintf("c%d", seed))
			var wg sync.WaitGroup
			for _, hh := range []*harness.Harness{webhookMode, nativeMode} {
				wg.Go(func() { applyCorpus(t, ctx, hh, c, seed) })
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			counts := map[string]int{}
			for _, pod := range c.pods {
				fromWebhook, fromNative := pod.DeepCopy(), pod.DeepCopy()
				if err := webhookMode.Client.Create(ctx, fromWebhook); err != nil {
					t.Fatalf("webhook mode: creating pod %s/%s: %v", pod.Namespace, pod.Name, err)
				}
				if err := nativeMode.Client.Create(ctx, fromNative); err != nil {
					t.Fatalf("native mode: creating pod %s/%s: %v", pod.Namespace, pod.Name, err)
				}
				counts["pods"]++
				if d := diff(fromNative.Labels, fromWebhook.Labels); d != "" {
					counts["differences"]++
					t.Errorf("pod %s/%s: labels differ (-native +webhook):\n%s", pod.Namespace, pod.Name, d)
				}
				if d := diff(fromNative.Annotations, fromWebhook.Annotations); d != "" {
					counts["differences"]++
					t.Errorf("pod %s/%s: annotations differ (-native +webhook):\n%s", pod.Namespace, pod.Name, d)
				}
				countVerdict(counts, pod, fromWebhook, c.ambient(pod.Namespace))
			}
			t.Logf("%d policies, %d pods: %d matched (%d peer-stateful, %d client-stateless, %d of them in an ambient namespace), %d with a conflict, %d with a DryRun report, %d with ports merged, %d with meshrole.io keys of their own removed; %d differences",
				len(c.policies), counts["pods"], counts["matched"], counts["peer-stateful"], counts["client-stateless"], counts["ambient client"],
				counts["conflict"], counts["dry-run"], counts["ports"], counts["meshrole keys removed"], counts["differences"])
			for k, v := range counts {
				total[k] += v
			}
			// Every kind of outcome must have happened, or the corpus proves little.
			for _, k := range []string{"peer-stateful", "client-stateless", "conflict", "dry-run", "ports", "ambient client", "meshrole keys removed"} {
				if counts[k] == 0 {
					t.Errorf("the corpus produced no pod with %s; change the generator", k)
				}
			}
		})
	}
	t.Logf("in all: %d pods, %d matched, %d differences", total["pods"], total["matched"], total["differences"])

	t.Run("no churn: the generated objects are not rewritten while the policies stay the same", func(t *testing.T) {
		versions := func() map[string]string {
			var list admissionregistrationv1.MutatingAdmissionPolicyList
			if err := nativeMode.Client.List(ctx, &list, client.MatchingLabels{native.ManagedByLabel: native.ManagedByValue}); err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for _, p := range list.Items {
				out[p.Name] = p.ResourceVersion
			}
			return out
		}
		before := versions()
		// Long enough for status writes, pod events and any handover requeue.
		time.Sleep(8 * time.Second)
		after := versions()
		if d := diff(after, before); d != "" {
			t.Errorf("generated objects rewritten without a policy change (-after +before):\n%s", d)
		}
		t.Logf("%d generated MutatingAdmissionPolicies unchanged over 8s", len(before))
	})

	t.Run("policy native mode cannot honour is refused", func(t *testing.T) {
		refusedInNativeMode(t, ctx, nativeMode)
	})

	t.Run("a namespace's first and last MeshRolePolicy hand its decision over without a mixed verdict", func(t *testing.T) {
		handover(t, ctx, nativeMode)
	})
}

// handover: a cluster policy decides namespace handover; a MeshRolePolicy
// arrives there and leaves again. Throughout, pods are dry-run created
// without pause, and each must carry exactly one of the two decisions,
// never a mix; the namespace's entry in its bucket object goes Arriving,
// Owner, Retiring, Released, gone.
func handover(t *testing.T, ctx context.Context, hh *harness.Harness) {
	const ns = "handover"
	if err := hh.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
		policy.EnabledNamespaceLabel: "true", "handover": "yes"}}}); err != nil {
		t.Fatal(err)
	}
	cmrp := &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "handover-clients"},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{NamespaceSelector: sel("handover", "yes"), PolicySpec: v1alpha1.PolicySpec{
			Workloads: []v1alpha1.Workload{{Name: "all", Role: v1alpha1.RoleClientStateless,
				Client: &v1alpha1.ClientSettings{ExcludeOutboundPorts: []v1alpha1.Port{8761}}}},
		}},
	}
	if err := hh.Client.Create(ctx, cmrp); err != nil {
		t.Fatal(err)
	}
	podLabels := map[string]string{"app": "eureka-server"}
	clusterVerdict := func(p *corev1.Pod) bool { return p.Annotations[policy.PolicyAnnotation] == "cluster/handover-clients" }
	if _, err := hh.WaitForVerdict(ctx, ns, podLabels, 60*time.Second, clusterVerdict); err != nil {
		t.Fatal(err)
	}

	// The two decisions a pod may carry, by the keys meshrole and Istio read.
	wantCluster := map[string]string{policy.PolicyAnnotation: "cluster/handover-clients", policy.IstioInjectKey: "true",
		policy.IstioExcludeOutboundPorts: "8761", policy.RoleAnnotation: "client-stateless", policy.WorkloadAnnotation: "all"}
	// Both policies have priority 0: the MeshRolePolicy wins, with a conflict.
	wantOwn := map[string]string{policy.PolicyAnnotation: ns + "/peers", policy.IstioInjectKey: "false",
		policy.RoleAnnotation: "peer-stateful", policy.WorkloadAnnotation: "servers",
		policy.ConflictAnnotation: "cluster/handover-clients/all=client-stateless"}
	verdicts := map[string]int{}
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			pod, err := hh.DryRunPod(ctx, newPod(ns, "", podLabels, nil))
			mu.Lock()
			switch {
			case err != nil:
				verdicts["error: "+err.Error()]++
			case diff(meshKeys(pod.Annotations), wantCluster) == "":
				verdicts["cluster"]++
			case diff(meshKeys(pod.Annotations), wantOwn) == "":
				verdicts["own"]++
			default:
				verdicts[fmt.Sprintf("MIXED %v", meshKeys(pod.Annotations))]++
			}
			mu.Unlock()
		}
	}()
	defer func() {
		close(stop)
		<-done
		t.Logf("dry-run pods during the handovers: %v", verdicts)
		for k := range verdicts {
			if k != "cluster" && k != "own" {
				t.Errorf("a pod got %q", k)
			}
		}
		if verdicts["cluster"] == 0 || verdicts["own"] == 0 {
			t.Errorf("the pods never saw both decisions: %v", verdicts)
		}
	}()

	phases := func(want ...native.Phase) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		next := 0
		var seen []string
		for next < len(want) && time.Now().Before(deadline) {
			var obj admissionregistrationv1.MutatingAdmissionPolicy
			err := hh.Client.Get(ctx, client.ObjectKey{Name: native.BucketOf(ns)}, &obj)
			phase := native.Phase("gone")
			if err == nil {
				var phases map[string]native.PhaseState
				_ = json.Unmarshal([]byte(obj.Annotations[native.PhasesAnnotation]), &phases)
				if st, ok := phases[ns]; ok {
					phase = st.Phase
				}
			} else if !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			if len(seen) == 0 || seen[len(seen)-1] != string(phase) {
				seen = append(seen, string(phase))
			}
			if phase == want[next] {
				next++
			}
			time.Sleep(100 * time.Millisecond)
		}
		if next < len(want) {
			t.Fatalf("namespace object phases %v, want to pass through %v", seen, want)
		}
		t.Logf("namespace object phases: %v", seen)
	}

	mrp := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "peers", Namespace: ns},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "servers", Selector: sel("app", "eureka-server"), Role: v1alpha1.RolePeerStateful}}},
	}
	if err := hh.Client.Create(ctx, mrp); err != nil {
		t.Fatal(err)
	}
	phases(native.PhaseArriving, native.PhaseOwner)
	time.Sleep(2 * time.Second)
	if err := hh.Client.Delete(ctx, mrp); err != nil {
		t.Fatal(err)
	}
	phases(native.PhaseRetiring, native.PhaseReleased, "gone")
	time.Sleep(2 * time.Second)
}

// startPair starts a webhook-mode and a native-mode control plane side by side.
func startPair(t *testing.T, ctx context.Context) (webhookMode, nativeMode *harness.Harness) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	pair := make([]*harness.Harness, 2)
	errs := make([]error, 2)
	for i, mode := range []harness.Mode{harness.ModeWebhook, harness.ModeNative} {
		wg.Go(func() { pair[i], errs[i] = harness.Start(ctx, harness.Options{Root: root, Mode: mode}) })
	}
	wg.Wait()
	for i, hh := range pair {
		t.Cleanup(func() {
			if hh == nil {
				return
			}
			if t.Failed() {
				hh.KeepWorkDir = true
				fmt.Fprintf(os.Stderr, "\n%s\nlogs kept in %s\n", hh.Diagnostics(40), hh.WorkDir)
			}
			if err := hh.Stop(); err != nil {
				t.Errorf("stopping harness %d: %v", i, err)
			}
		})
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("starting the %s-mode control plane: %v", []string{"webhook", "native"}[i], err)
		}
	}
	return pair[0], pair[1]
}

// applyCorpus creates the corpus's namespaces and policies, then a sentinel
// policy per namespace, and waits until each sentinel decides its pods: the
// policies created before it are then in force too (webhook mode: its
// informer delivers in order; native mode: each namespace's decision is one
// generated object, compiled from a snapshot that holds them).
func applyCorpus(t *testing.T, ctx context.Context, hh *harness.Harness, c *corpus, seed uint64) {
	t.Helper()
	for _, ns := range c.namespaces {
		if err := hh.Client.Create(ctx, ns.DeepCopy()); err != nil {
			t.Errorf("creating namespace %s: %v", ns.Name, err)
			return
		}
	}
	for _, p := range c.policies {
		if err := hh.Client.Create(ctx, p.DeepCopyObject().(client.Object)); err != nil {
			t.Errorf("creating policy %s: %v", harness.PolicyRef(p), err)
			return
		}
	}
	for _, ns := range c.namespaceNames() {
		sentinel := &v1alpha1.MeshRolePolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "zz-sentinel", Namespace: ns},
			Spec: v1alpha1.PolicySpec{Priority: 1000, Workloads: []v1alpha1.Workload{{
				Name:     "sentinel",
				Selector: metav1.LabelSelector{MatchLabels: map[string]string{"meshrole-sentinel": fmt.Sprint(seed)}},
				Role:     v1alpha1.RoleClientStateless,
				Client:   &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged},
			}}},
		}
		if err := hh.Client.Create(ctx, sentinel); err != nil {
			t.Errorf("creating sentinel policy in %s: %v", ns, err)
			return
		}
		if err := hh.WaitForPolicy(ctx, sentinel, 90*time.Second); err != nil {
			t.Errorf("%v", err)
			return
		}
	}
}

func countVerdict(counts map[string]int, in, out *corev1.Pod, ambient bool) {
	annotations := out.Annotations
	if role := annotations[policy.RoleAnnotation]; role != "" {
		counts["matched"]++
		counts[role]++
		if ambient && role == string(v1alpha1.RoleClientStateless) {
			counts["ambient client"]++
		}
	}
	for k := range in.Annotations {
		if _, kept := annotations[k]; strings.HasPrefix(k, policy.KeyPrefix) && !kept {
			counts["meshrole keys removed"]++
			break
		}
	}
	if annotations[policy.ConflictAnnotation] != "" {
		counts["conflict"]++
	}
	if annotations[policy.DryRunAnnotation] != "" {
		counts["dry-run"]++
	}
	for _, key := range []string{policy.IstioExcludeInboundPorts, policy.IstioExcludeOutboundPorts} {
		if annotations[key] != in.Annotations[key] {
			counts["ports"]++
			break
		}
	}
}

// refusedInNativeMode: a policy with holdApplicationUntilProxyStarts is not
// compiled (its status says why), and pods it would decide are left alone.
func refusedInNativeMode(t *testing.T, ctx context.Context, hh *harness.Harness) {
	const ns = "hold-refused"
	if err := hh.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policy.EnabledNamespaceLabel: "true"}}}); err != nil {
		t.Fatal(err)
	}
	mrp := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "slow-start", Namespace: ns},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "web", Selector: sel("app", "web"), Role: v1alpha1.RoleClientStateless,
			Client: &v1alpha1.ClientSettings{HoldApplicationUntilProxyStarts: true},
		}}},
	}
	if err := hh.Client.Create(ctx, mrp); err != nil {
		t.Fatal(err)
	}
	var ready *metav1.Condition
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var got v1alpha1.MeshRolePolicy
		if err := hh.Client.Get(ctx, client.ObjectKeyFromObject(mrp), &got); err != nil {
			t.Fatal(err)
		}
		if ready = meta.FindStatusCondition(got.Status.Conditions, "Ready"); ready != nil && ready.Status == metav1.ConditionFalse {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != "NeedsWebhookMode" ||
		!strings.Contains(ready.Message, "holdApplicationUntilProxyStarts needs webhook mode") {
		t.Fatalf("Ready condition = %+v, want False/NeedsWebhookMode naming holdApplicationUntilProxyStarts", ready)
	}
	pod, err := hh.DryRunPod(ctx, newPod(ns, "web", map[string]string{"app": "web"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := meshKeys(pod.Annotations); len(got) != 0 {
		t.Errorf("a refused policy changed the pod: %v", got)
	}
	var maps admissionregistrationv1.MutatingAdmissionPolicyList
	if err := hh.Client.List(ctx, &maps, client.MatchingLabels{native.ManagedByLabel: native.ManagedByValue}); err != nil {
		t.Fatal(err)
	}
	t.Logf("refused as expected: %s; %d generated MutatingAdmissionPolicies in the cluster", ready.Message, len(maps.Items))
}
