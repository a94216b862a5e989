package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// TestClusterRunsPodsAndEvictions starts the harness with kube-scheduler and
// kwok, and checks that a Deployment's pods become Running and Ready on the
// fake nodes, that the disruption controller computes the budget's status,
// and that the Eviction API honours it: one eviction is granted, the next is
// refused with 429 until the replacement is Ready.
func TestClusterRunsPodsAndEvictions(t *testing.T) {
	if os.Getenv(EnvK8sBin) == "" {
		t.Skipf("%s not set: needs the control plane of `make testenv` and the webhook of `make build`", EnvK8sBin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	h, err := Start(ctx, Options{Progress: func(step string) { t.Log(step) }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			h.KeepWorkDir = true
			t.Logf("logs kept in %s\n%s", h.WorkDir, h.Diagnostics(40))
		}
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
	}()
	if err := h.AddControllers(ClusterControllers...); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	c, err := h.StartCluster(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Log(c.Diagnostics(40))
		}
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	}()
	t.Logf("kube-scheduler, kwok and nodes %v Ready in %v", c.Nodes, time.Since(start).Round(time.Millisecond))

	cs, err := kubernetes.NewForConfig(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "cluster-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	web := map[string]string{"app": "web"}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment("web", web, 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, budget("web", web), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var pods []corev1.Pod
	waitUntil(ctx, t, "2 web pods Running and Ready on the fake nodes", func() (why string) {
		pods, why = readyPods(ctx, cs, ns, "app=web", 2, c.Nodes)
		return why
	})
	budgetIs(ctx, t, cs, ns, "web", 2, 1)

	evict := func(pod string) error {
		return cs.CoreV1().Pods(ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns}})
	}
	if err := evict(pods[0].Name); err != nil {
		t.Fatalf("first eviction of %s: %v", pods[0].Name, err)
	}
	err = evict(pods[1].Name)
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("second eviction of %s while %s is replaced: got %v, want 429 Too Many Requests", pods[1].Name, pods[0].Name, err)
	}
	if !refusedByBudget(err) {
		t.Fatalf("second eviction: got %#v, want a 429 whose cause is %s", err, policyv1.DisruptionBudgetCause)
	}
	t.Logf("second eviction refused: %v", err)

	var replaced []corev1.Pod
	waitUntil(ctx, t, "a Ready replacement for "+pods[0].Name, func() (why string) {
		replaced, why = readyPods(ctx, cs, ns, "app=web", 2, c.Nodes)
		if why == "" && slices.ContainsFunc(replaced, func(p corev1.Pod) bool { return p.Name == pods[0].Name }) {
			return pods[0].Name + " is still there"
		}
		return why
	})
	budgetIs(ctx, t, cs, ns, "web", 2, 1)
	if err := evict(pods[1].Name); err != nil {
		t.Fatalf("eviction of %s once the replacement is Ready (pods %v): %v", pods[1].Name, podNames(replaced), err)
	}

	// A pod labelled NeverReadyLabel runs but never becomes Ready, and the
	// budget counts it as unhealthy.
	stuck := map[string]string{"app": "stuck"}
	d := deployment("stuck", stuck, 1)
	d.Spec.Template.Labels[NeverReadyLabel] = "true"
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, budget("stuck", stuck), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var running []corev1.Pod
	waitUntil(ctx, t, "the stuck pod Running", func() string {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=stuck"})
		if err != nil {
			return err.Error()
		}
		running = list.Items
		if len(running) != 1 || running[0].Status.Phase != corev1.PodRunning {
			return fmt.Sprintf("pods %v", podPhases(running))
		}
		return ""
	})
	budgetIs(ctx, t, cs, ns, "stuck", 0, 0)
	time.Sleep(2 * time.Second)
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, running[0].Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if PodReady(pod) || pod.Status.Phase != corev1.PodRunning || len(pod.Status.ContainerStatuses) != 1 ||
		pod.Status.ContainerStatuses[0].Ready || pod.Status.ContainerStatuses[0].State.Running == nil {
		t.Fatalf("pod %s labelled %s: phase %s, ready %v, containers %+v; want Running, not Ready, its container running but not ready",
			pod.Name, NeverReadyLabel, pod.Status.Phase, PodReady(pod), pod.Status.ContainerStatuses)
	}
	if err := evict(pod.Name); !refusedByBudget(err) {
		t.Fatalf("eviction of the never-ready pod %s under a budget of minAvailable 1: got %v, want 429", pod.Name, err)
	}
}

// refusedByBudget tells whether err is the Eviction API's 429 for a
// disruption budget.
func refusedByBudget(err error) bool {
	var se *apierrors.StatusError
	if !errors.As(err, &se) || se.ErrStatus.Code != http.StatusTooManyRequests || se.ErrStatus.Details == nil {
		return false
	}
	return slices.ContainsFunc(se.ErrStatus.Details.Causes, func(c metav1.StatusCause) bool {
		return c.Type == policyv1.DisruptionBudgetCause
	})
}

func deployment(name string, lbls map[string]string, replicas int32) *appsv1.Deployment {
	tmpl := map[string]string{}
	for k, v := range lbls {
		tmpl[k] = v
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: tmpl},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: "example.invalid/" + name + ":1"}},
				},
			},
		},
	}
}

func budget(name string, lbls map[string]string) *policyv1.PodDisruptionBudget {
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &one,
			Selector:     &metav1.LabelSelector{MatchLabels: lbls},
		},
	}
}

// readyPods returns the pods of selector and "" once there are n, all
// Running and Ready on nodes and none being deleted; else what is missing.
func readyPods(ctx context.Context, cs kubernetes.Interface, ns, selector string, n int, nodes []string) ([]corev1.Pod, string) {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err.Error()
	}
	if len(list.Items) != n {
		return nil, fmt.Sprintf("%d pods %v", len(list.Items), podPhases(list.Items))
	}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || !PodReady(&p) || !slices.Contains(nodes, p.Spec.NodeName) {
			return nil, fmt.Sprintf("pods %v", podPhases(list.Items))
		}
	}
	return list.Items, ""
}

// budgetIs waits until the disruption controller reports the budget's
// status for its current generation with these figures.
func budgetIs(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string, healthy, allowed int32) {
	t.Helper()
	waitUntil(ctx, t, fmt.Sprintf("budget %s: currentHealthy %d, disruptionsAllowed %d", name, healthy, allowed), func() string {
		pdb, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		s := pdb.Status
		if s.ObservedGeneration != pdb.Generation || s.CurrentHealthy != healthy || s.DisruptionsAllowed != allowed || s.DesiredHealthy != 1 {
			return fmt.Sprintf("generation %d, status %+v", pdb.Generation, s)
		}
		return ""
	})
}

// waitUntil polls check, for up to a minute, until it returns "" (else
// what is still missing).
func waitUntil(ctx context.Context, t *testing.T, what string, check func() string) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		why := check()
		if why == "" {
			t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %s", what, why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func podPhases(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		s := fmt.Sprintf("%s=%s", p.Name, p.Status.Phase)
		if PodReady(&p) {
			s += "/Ready"
		}
		if p.DeletionTimestamp != nil {
			s += "/deleting"
		}
		if p.Spec.NodeName == "" {
			s += "/unscheduled"
		}
		out = append(out, s)
	}
	return out
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}
