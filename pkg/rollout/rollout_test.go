package rollout_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/rollout"
)

const policies = `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata: {name: eureka, namespace: shop}
spec:
  workloads:
  - name: eureka-peers
    selector: {matchLabels: {app: eureka-server}}
    role: peer-stateful
  - name: eureka-clients
    selector: {matchLabels: {app: orders}}
    role: client-stateless
`

func newStore(t *testing.T) *policy.Store {
	t.Helper()
	docs, err := policy.ReadDocuments(strings.NewReader(policies))
	if err != nil {
		t.Fatal(err)
	}
	store := policy.NewStore()
	for _, doc := range docs {
		if ok, err := store.Add(doc, "default"); err != nil || !ok {
			t.Fatalf("adding a policy: %v %v", ok, err)
		}
	}
	return store
}

var enabled = map[string]string{policy.EnabledNamespaceLabel: "true"}

// cluster is a fake API server with a simulated control plane: the
// Eviction API (with PodDisruptionBudget refusals on demand), controllers
// that recreate evicted pods, meshrole's webhook stamping the verdict on
// them, and kubelets that make them Ready after a few reads.
type cluster struct {
	t      *testing.T
	store  *policy.Store
	client client.Client
	base   client.WithWatch

	mu sync.Mutex
	// refusals is how many more evictions of a pod are refused with 429.
	refusals map[string]int
	// webhookDown: replacements get no verdict.
	webhookDown bool
	// neverReady: replacements never become Ready.
	neverReady bool
	// newReplicaSet, when set, owns the replacements of ReplicaSet pods: the
	// Deployment has rolled to it.
	newReplicaSet string
	// readyAfter is how many reads a replacement stays unready for.
	readyAfter int
	unready    map[string]int
	// evicted are the pods evicted, in order.
	evicted []string
	// violations are evictions made while another pod of the owner was not Ready.
	violations []string
	created    int
}

func newCluster(t *testing.T, objects ...client.Object) *cluster {
	c := &cluster{t: t, store: newStore(t), refusals: map[string]int{}, unready: map[string]int{}, readyAfter: 2}
	c.base = fake.NewClientBuilder().WithScheme(scheme(t)).WithObjects(objects...).Build()
	c.client = interceptor.NewClient(c.base, interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			c.kubelet(ctx)
			return cl.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			c.kubelet(ctx)
			return cl.List(ctx, list, opts...)
		},
		SubResourceCreate: c.evict,
	})
	return c
}

// scheme is Kubernetes' types and meshrole's policies.
func scheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// kubelet makes unready pods Ready once they have been read readyAfter times.
func (c *cluster) kubelet(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, reads := range c.unready {
		if reads < c.readyAfter {
			c.unready[name] = reads + 1
			continue
		}
		var pod corev1.Pod
		if err := c.base.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &pod); err != nil {
			continue
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := c.base.Status().Update(ctx, &pod); err != nil {
			c.t.Errorf("making %s Ready: %v", name, err)
		}
		delete(c.unready, name)
	}
}

// evict is the Eviction API followed by the pod's controller and admission.
func (c *cluster) evict(ctx context.Context, _ client.Client, sub string, obj, subObj client.Object, _ ...client.SubResourceCreateOption) error {
	if sub != "eviction" {
		return fmt.Errorf("unexpected subresource %s", sub)
	}
	eviction, ok := subObj.(*policyv1.Eviction)
	if !ok {
		return fmt.Errorf("eviction body is %T", subObj)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	name := obj.GetName()
	if c.refusals[name] > 0 {
		c.refusals[name]--
		return &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: 429, Reason: metav1.StatusReasonTooManyRequests,
			Message: "Cannot evict pod as it would violate the pod's disruption budget.",
		}}
	}
	var pod corev1.Pod
	if err := c.base.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: name}, &pod); err != nil {
		return err
	}
	if p := eviction.DeleteOptions; p == nil || p.Preconditions == nil || p.Preconditions.UID == nil || *p.Preconditions.UID != pod.UID {
		c.t.Errorf("eviction of %s without its UID as a precondition", name)
	}
	c.checkOthersReady(ctx, &pod)
	c.evicted = append(c.evicted, name)
	if err := c.base.Delete(ctx, &pod); err != nil {
		return err
	}
	ref := metav1.GetControllerOf(&pod)
	if ref == nil {
		return nil
	}
	c.created++
	replacement := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Namespace: pod.Namespace, Name: pod.Name,
		UID:             types.UID(fmt.Sprintf("replacement-%d", c.created)),
		Labels:          templateLabels(pod.Labels),
		OwnerReferences: pod.OwnerReferences,
	}}
	if ref.Kind != "StatefulSet" {
		replacement.Name = fmt.Sprintf("%s-r%d", ref.Name, c.created)
	}
	if ref.Kind == "ReplicaSet" && c.newReplicaSet != "" {
		replacement.OwnerReferences = controllerRef("ReplicaSet", c.newReplicaSet)
	}
	if !c.webhookDown {
		d := c.store.Decide(policy.Input{Namespace: "shop", NamespaceLabels: labels.Set(enabled), PodLabels: labels.Set(replacement.Labels)})
		effect := d.Effect()
		replacement.Labels, replacement.Annotations, _ = effect.Apply(replacement.Labels, nil)
	}
	if err := c.base.Create(ctx, replacement); err != nil {
		return err
	}
	replacement.Status.Phase = corev1.PodRunning
	replacement.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady"}}
	if err := c.base.Status().Update(ctx, replacement); err != nil {
		return err
	}
	if !c.neverReady {
		c.unready[replacement.Name] = 0
	}
	return nil
}

// checkOthersReady records a violation if another pod of pod's controller
// is not Ready at its eviction: a rollout takes down one pod at a time.
func (c *cluster) checkOthersReady(ctx context.Context, pod *corev1.Pod) {
	var pods corev1.PodList
	if err := c.base.List(ctx, &pods, client.InNamespace(pod.Namespace)); err != nil {
		c.t.Fatal(err)
	}
	owner := metav1.GetControllerOf(pod)
	for _, p := range pods.Items {
		o := metav1.GetControllerOf(&p)
		if p.Name == pod.Name || owner == nil || o == nil || o.UID != owner.UID {
			continue
		}
		ready := false
		for _, cond := range p.Status.Conditions {
			ready = ready || (cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue)
		}
		if !ready {
			c.violations = append(c.violations, fmt.Sprintf("%s evicted while %s was not Ready", pod.Name, p.Name))
		}
	}
}

// templateLabels drops what meshrole wrote: what the pod template holds.
func templateLabels(l map[string]string) map[string]string {
	out := maps.Clone(l)
	delete(out, policy.IstioInjectKey)
	delete(out, policy.IstioDataplaneModeLabel)
	return out
}

var readyStatus = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}

func controllerRef(kind, name string) []metav1.OwnerReference {
	yes := true
	api := "apps/v1"
	if kind == "Job" {
		api = "batch/v1"
	}
	return []metav1.OwnerReference{{APIVersion: api, Kind: kind, Name: name, UID: types.UID(kind + "-" + name), Controller: &yes}}
}

// pod is a Ready pod created before its policy: no verdict.
func pod(name, app string, owner []metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name),
			Labels: map[string]string{"app": app}, OwnerReferences: owner},
		Status: readyStatus,
	}
}

// scene is the seed's shop: a 3-replica eureka-server StatefulSet and a
// 2-replica orders Deployment, all admitted before the policy, a bare pod,
// and a Job's pod.
func scene() []client.Object {
	yes := true
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders-5d8f", UID: "ReplicaSet-orders-5d8f",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "orders", UID: "dep-orders", Controller: &yes}}}}
	return []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: enabled}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}},
		rs,
		pod("eureka-server-0", "eureka-server", controllerRef("StatefulSet", "eureka-server")),
		pod("eureka-server-1", "eureka-server", controllerRef("StatefulSet", "eureka-server")),
		pod("eureka-server-2", "eureka-server", controllerRef("StatefulSet", "eureka-server")),
		pod("orders-5d8f-a", "orders", controllerRef("ReplicaSet", "orders-5d8f")),
		pod("orders-5d8f-b", "orders", controllerRef("ReplicaSet", "orders-5d8f")),
		pod("debug", "orders", nil),
		pod("migrate-x", "orders", controllerRef("Job", "migrate")),
		pod("batch", "batch", controllerRef("StatefulSet", "batch")), // no policy: no drift
	}
}

func (c *cluster) runner(progress *bytes.Buffer) *rollout.Runner {
	return &rollout.Runner{
		Client: c.client, Policies: c.store,
		Timeout: 2 * time.Second, PollInterval: time.Millisecond, RetryInterval: time.Millisecond,
		Progress: rollout.Lines(progress),
	}
}

func (c *cluster) plan(t *testing.T, opts rollout.PlanOptions) *rollout.Plan {
	t.Helper()
	targets, err := rollout.Find(context.Background(), c.client, c.store, rollout.Scope{Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	return rollout.NewPlan(targets, opts)
}

func planOrder(p *rollout.Plan) []string {
	var names []string
	for _, o := range p.Owners {
		for _, t := range o.Pods {
			names = append(names, t.Name)
		}
	}
	return names
}

func TestFindAndPlan(t *testing.T) {
	c := newCluster(t, scene()...)
	p := c.plan(t, rollout.PlanOptions{})
	if got, want := strings.Join(planOrder(p), " "), "orders-5d8f-a orders-5d8f-b eureka-server-2 eureka-server-1 eureka-server-0"; got != want {
		t.Fatalf("plan %q, want %q", got, want)
	}
	if got := p.Owners[0].Owner; got != (rollout.Owner{Namespace: "shop", Kind: "Deployment", Name: "orders"}) {
		t.Errorf("a ReplicaSet's pods belong to %v, want Deployment orders", got)
	}
	for _, o := range p.Owners {
		for _, target := range o.Pods {
			if len(target.Drift) == 0 || target.Drift[0].Reason != policy.DriftNoVerdict {
				t.Errorf("%s: drift %v, want NoVerdict first", target.Name, target.Drift)
			}
		}
	}
	var skipped []string
	for _, s := range p.Skipped {
		skipped = append(skipped, s.Target.Name+": "+s.Why)
	}
	want := []string{
		"debug: no controller would recreate it (include bare pods to evict it anyway)",
		"migrate-x: a Job's pod runs to completion; the Job's next pod gets its verdict",
	}
	if strings.Join(skipped, "\n") != strings.Join(want, "\n") {
		t.Fatalf("skipped:\n%s\nwant:\n%s", strings.Join(skipped, "\n"), strings.Join(want, "\n"))
	}

	withBare := c.plan(t, rollout.PlanOptions{IncludeBarePods: true})
	if got, want := strings.Join(planOrder(withBare), " "), "debug orders-5d8f-a orders-5d8f-b eureka-server-2 eureka-server-1 eureka-server-0"; got != want {
		t.Fatalf("plan with bare pods %q, want %q", got, want)
	}

	var out bytes.Buffer
	if err := p.Write(&out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[2], "3. evict shop/eureka-server-2 (StatefulSet eureka-server): NoVerdict, MissingKeys (") ||
		!strings.HasPrefix(lines[5], "skip shop/debug (no controller)") {
		t.Fatalf("plan text:\n%s", out.String())
	}
}

func TestFindScope(t *testing.T) {
	c := newCluster(t, scene()...)
	ctx := context.Background()
	all, err := rollout.Find(ctx, c.client, c.store, rollout.Scope{AllNamespaces: true})
	if err != nil || len(all) != 7 {
		t.Fatalf("all namespaces: %d targets, %v; want 7", len(all), err)
	}
	other := &policy.Ref{Namespace: "shop", Name: "other"}
	none, err := rollout.Find(ctx, c.client, c.store, rollout.Scope{Namespace: "shop", Policy: other})
	if err != nil || len(none) != 0 {
		t.Fatalf("policy shop/other: %d targets, %v; want none", len(none), err)
	}
	eureka := &policy.Ref{Namespace: "shop", Name: "eureka"}
	mine, err := rollout.Find(ctx, c.client, c.store, rollout.Scope{Namespace: "shop", Policy: eureka})
	if err != nil || len(mine) != 7 {
		t.Fatalf("policy shop/eureka: %d targets, %v; want 7", len(mine), err)
	}
	if _, err := rollout.Find(ctx, c.client, c.store, rollout.Scope{Namespace: "other"}); err == nil ||
		!strings.Contains(err.Error(), "namespace other is not enabled") {
		t.Fatalf("a namespace meshrole does not see: %v", err)
	}
	if _, err := rollout.Find(ctx, c.client, c.store, rollout.Scope{}); err == nil {
		t.Fatal("an empty scope is not an error")
	}
}

func TestRunConvergesOnePodAtATime(t *testing.T) {
	c := newCluster(t, scene()...)
	c.refusals["eureka-server-1"] = 2
	var progress bytes.Buffer
	result, err := c.runner(&progress).Run(context.Background(), c.plan(t, rollout.PlanOptions{}))
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if result.Restarted != 5 || result.Unchanged != 0 {
		t.Fatalf("result %+v, want 5 restarted", result)
	}
	if got, want := strings.Join(c.evicted, " "), "orders-5d8f-a orders-5d8f-b eureka-server-2 eureka-server-1 eureka-server-0"; got != want {
		t.Fatalf("evicted %q, want %q", got, want)
	}
	if len(c.violations) > 0 {
		t.Fatalf("more than one pod of an owner down at once:\n%s", strings.Join(c.violations, "\n"))
	}
	// Every pod in scope now carries its verdict; the bare and Job pods are left.
	left, err := rollout.Find(context.Background(), c.client, c.store, rollout.Scope{Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range left {
		names = append(names, l.Name)
	}
	if strings.Join(names, " ") != "debug migrate-x" {
		t.Fatalf("drifted after the rollout: %v", names)
	}
	// 429: reported and retried, then evicted.
	out := progress.String()
	if n := strings.Count(out, "shop/eureka-server-1 (StatefulSet eureka-server): eviction refused"); n != 2 {
		t.Errorf("%d refusals reported, want 2", n)
	}
	for _, want := range []string{
		"eviction refused (attempt 2): Cannot evict pod as it would violate the pod's disruption budget.; retrying in 1ms",
		"shop/eureka-server-2 (StatefulSet eureka-server): waiting for replacement eureka-server-2 to be Ready (phase Running, Ready False: ContainersNotReady)",
		"shop/eureka-server-2 (StatefulSet eureka-server): replacement eureka-server-2 is Ready after",
		"shop/orders-5d8f-a (Deployment orders): replacement orders-5d8f-r1 created with its verdict",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "[") || !strings.Contains(line, "s] shop/") {
			t.Errorf("progress line without elapsed time and pod: %q", line)
		}
	}
}

func TestRunFollowsTheDeploymentToItsNewReplicaSet(t *testing.T) {
	yes := true
	rolled := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders-7a9b", UID: "ReplicaSet-orders-7a9b",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "orders", UID: "dep-orders", Controller: &yes}}}}
	other := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "users-1234", UID: "ReplicaSet-users-1234",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "users", UID: "dep-users", Controller: &yes}}}}
	c := newCluster(t, append(scene(), rolled, other)...)
	p := c.plan(t, rollout.PlanOptions{})
	r := c.runner(&bytes.Buffer{})
	r.Timeout = 300 * time.Millisecond

	// A new pod of another Deployment is no replacement.
	c.newReplicaSet = "users-1234"
	if _, err := r.Run(context.Background(), p); err == nil ||
		!strings.Contains(err.Error(), "waiting for Deployment orders to create a replacement") {
		t.Fatalf("a pod of Deployment users taken for orders' replacement: %v", err)
	}

	c = newCluster(t, append(scene(), rolled, other)...)
	c.newReplicaSet = "orders-7a9b"
	r = c.runner(&bytes.Buffer{})
	result, err := r.Run(context.Background(), c.plan(t, rollout.PlanOptions{}))
	if err != nil || result.Restarted != 5 {
		t.Fatalf("replacements from the Deployment's new ReplicaSet: %+v, %v", result, err)
	}
}

func TestRunGivesUpOnRefusedEviction(t *testing.T) {
	c := newCluster(t, scene()...)
	c.refusals["orders-5d8f-a"] = 1 << 30
	r := c.runner(&bytes.Buffer{})
	r.Timeout, r.RetryInterval = 50*time.Millisecond, 10*time.Millisecond
	_, err := r.Run(context.Background(), c.plan(t, rollout.PlanOptions{}))
	if err == nil || !strings.Contains(err.Error(), "evicting pod shop/orders-5d8f-a (Deployment orders): still refused after 50ms") {
		t.Fatalf("error %v", err)
	}
	if len(c.evicted) != 0 {
		t.Fatalf("evicted %v after a refusal that never ended", c.evicted)
	}
}

func TestRunStopsAtNeverReadyReplacement(t *testing.T) {
	c := newCluster(t, scene()...)
	c.neverReady = true
	var progress bytes.Buffer
	r := c.runner(&progress)
	r.Timeout = 100 * time.Millisecond
	result, err := r.Run(context.Background(), c.plan(t, rollout.PlanOptions{}))
	if err == nil || !strings.Contains(err.Error(), "pod shop/orders-5d8f-a (Deployment orders): gave up after 100ms waiting for replacement orders-5d8f-r1 to be Ready (phase Running, Ready False: ContainersNotReady)") {
		t.Fatalf("error %v\nprogress:\n%s", err, progress.String())
	}
	if got := strings.Join(c.evicted, " "); got != "orders-5d8f-a" || result.Restarted != 0 {
		t.Fatalf("evicted %q, result %+v; want only the first pod evicted", got, result)
	}
}

func TestRunStopsAtDriftedReplacement(t *testing.T) {
	c := newCluster(t, scene()...)
	c.webhookDown = true
	_, err := c.runner(&bytes.Buffer{}).Run(context.Background(), c.plan(t, rollout.PlanOptions{}))
	if err == nil || !strings.Contains(err.Error(), "pod shop/orders-5d8f-a's replacement orders-5d8f-r1 came back drifted: NoVerdict, MissingKeys") {
		t.Fatalf("error %v", err)
	}
	if got := strings.Join(c.evicted, " "); got != "orders-5d8f-a" {
		t.Fatalf("evicted %q, want only the first pod", got)
	}
}

func TestRunBarePodOnlyWhenAsked(t *testing.T) {
	c := newCluster(t, scene()...)
	var progress bytes.Buffer
	result, err := c.runner(&progress).Run(context.Background(), c.plan(t, rollout.PlanOptions{IncludeBarePods: true}))
	if err != nil {
		t.Fatal(err)
	}
	if c.evicted[0] != "debug" || result.Restarted != 6 {
		t.Fatalf("evicted %v, result %+v; want debug first and 6 restarted", c.evicted, result)
	}
	if !strings.Contains(progress.String(), "shop/debug (no controller): gone") {
		t.Fatalf("progress:\n%s", progress.String())
	}
	// Without IncludeBarePods, TestRunConvergesOnePodAtATime never evicts it.
}

func TestRunSkipsPodsThatNeedNothingAnyMore(t *testing.T) {
	c := newCluster(t, scene()...)
	p := c.plan(t, rollout.PlanOptions{})
	ctx := context.Background()
	// Between plan and run: one pod deleted, one recreated, one given its verdict.
	if err := c.base.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "eureka-server-0"}}); err != nil {
		t.Fatal(err)
	}
	var p1 corev1.Pod
	if err := c.base.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "eureka-server-1"}, &p1); err != nil {
		t.Fatal(err)
	}
	if err := c.base.Delete(ctx, &p1); err != nil {
		t.Fatal(err)
	}
	p1.UID, p1.ResourceVersion = "recreated", ""
	if err := c.base.Create(ctx, &p1); err != nil {
		t.Fatal(err)
	}
	var p2 corev1.Pod
	if err := c.base.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "eureka-server-2"}, &p2); err != nil {
		t.Fatal(err)
	}
	d := c.store.Decide(policy.Input{Namespace: "shop", NamespaceLabels: labels.Set(enabled), PodLabels: labels.Set(p2.Labels)})
	effect := d.Effect()
	p2.Labels, p2.Annotations, _ = effect.Apply(p2.Labels, p2.Annotations)
	if err := c.base.Update(ctx, &p2); err != nil {
		t.Fatal(err)
	}

	var progress bytes.Buffer
	result, err := c.runner(&progress).Run(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if result.Restarted != 2 || result.Unchanged != 3 || strings.Join(c.evicted, " ") != "orders-5d8f-a orders-5d8f-b" {
		t.Fatalf("result %+v, evicted %v; want the two orders pods only", result, c.evicted)
	}
	for _, want := range []string{"eureka-server-2 (StatefulSet eureka-server): no longer drifted", "eureka-server-1 (StatefulSet eureka-server): replaced already", "eureka-server-0 (StatefulSet eureka-server): gone already"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	c := newCluster(t, scene()...)
	p := c.plan(t, rollout.PlanOptions{IncludeBarePods: true})
	writes := 0
	count := func() error { writes++; return fmt.Errorf("a dry run wrote") }
	readOnly := interceptor.NewClient(c.base, interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return count() },
		Update: func(context.Context, client.WithWatch, client.Object, ...client.UpdateOption) error { return count() },
		Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
			return count()
		},
		Delete: func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error { return count() },
		SubResourceCreate: func(context.Context, client.Client, string, client.Object, client.Object, ...client.SubResourceCreateOption) error {
			return count()
		},
	})
	var progress bytes.Buffer
	r := c.runner(&progress)
	r.Client, r.DryRun = readOnly, true
	result, err := r.Run(context.Background(), p)
	if err != nil || writes != 0 || result != (rollout.Result{}) {
		t.Fatalf("dry run: %v, %d writes, result %+v", err, writes, result)
	}
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	if len(lines) != 6 || !strings.Contains(lines[3], "shop/eureka-server-2 (StatefulSet eureka-server): would evict (dry run); drift: NoVerdict") {
		t.Fatalf("dry run progress:\n%s", progress.String())
	}
	var pods corev1.PodList
	if err := c.base.List(context.Background(), &pods); err != nil || len(pods.Items) != 8 {
		t.Fatalf("%d pods after a dry run (%v), want the 8 there were", len(pods.Items), err)
	}
}
