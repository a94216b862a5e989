package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

// The pods-at-scale phase: many pods over many namespaces, each namespace
// with a MeshRolePolicy for its clients, and one ClusterMeshRolePolicy for
// the peers of some namespaces, whose edit turns every one of its pods
// drifted. Its objects are removed at the end, so the memory phase after
// it measures what it always did.
const (
	scalePrefix        = "scale-"
	scaleGroupLabel    = "meshrole-bench/scale"
	scaleClusterPolicy = "scale-peers"
	scaleClientPolicy  = "clients"
)

type scaleConfig struct {
	namespaces, podsPerNamespace, editedNamespaces int
	creators                                       int
	load                                           time.Duration // each admission-latency window
	flipEvery                                      time.Duration // during the storm window
}

// pods is how many pods the phase creates; affected, how many of them the
// edited cluster policy decides.
func (c scaleConfig) pods() int     { return c.namespaces * c.podsPerNamespace }
func (c scaleConfig) affected() int { return c.editedNamespaces * c.podsPerNamespace }

// scaleResult is what the phase measured.
type scaleResult struct {
	CreateTime   time.Duration // the pods, creators at a time
	CountedAfter time.Duration // from the last create until every policy's status counts its pods
	Create       costs         // spent from the first create until then

	SettleTime time.Duration // from the edit until status counts every affected pod drifted and the queues are empty
	Settle     costs

	Quiet, Storm loadgen.Result // admission latency, one worker
	// kube-apiserver's CPU per second of each window: the cores the
	// webhook shares.
	QuietAPIServer, StormAPIServer float64
	Flips                          int // edits during the storm window
	StormWrites                    float64
	PodsRSS                        int64  // the webhook's VmRSS with all the pods cached
	StormProfile                   string // the webhook's CPU profile during the storm, with -webhook-pprof
}

func scaleNamespace(i int) string { return fmt.Sprintf("%s%04d", scalePrefix, i) }

// scalePeers is the cluster policy; bypass is the edit (Skip → BypassPorts
// on 8761), which gives each of its pods other keys than it was admitted with.
func scalePeers(bypass bool) v1alpha1.PolicySpec {
	peer := &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxySkip}
	if bypass {
		peer = &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{8761}}
	}
	return v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
		Name: "eureka", Role: v1alpha1.RolePeerStateful, Peer: peer,
		Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka-server"}},
	}}}
}

// scaleClients is the MeshRolePolicy of each namespace.
func scaleClients(namespace string) *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: scaleClientPolicy},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{Name: "users", Role: v1alpha1.RoleClientStateless,
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "users"}}}}},
	}
}

// measureScale runs the phase; with prof, it also profiles the webhook's CPU
// during the storm.
func measureScale(ctx context.Context, h *harness.Harness, c scaleConfig, procs podCreateProcesses, body []byte, base loadgen.Options, prof *webhookProfiler) (*scaleResult, error) {
	if c.editedNamespaces > c.namespaces || c.namespaces <= 0 || c.podsPerNamespace <= 0 {
		return nil, errors.New("scale: need 0 < edited namespaces <= namespaces and pods per namespace > 0")
	}
	res := &scaleResult{}
	cluster := &v1alpha1.ClusterMeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: scaleClusterPolicy},
		Spec: v1alpha1.ClusterMeshRolePolicySpec{PolicySpec: scalePeers(false),
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{scaleGroupLabel: "edited"}}},
	}
	if err := h.Client.Create(ctx, cluster); err != nil {
		return nil, err
	}
	err := parallel(ctx, c.creators, c.namespaces, func(i int) error {
		group := "steady"
		if i < c.editedNamespaces {
			group = "edited"
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace(i),
			Labels: map[string]string{policy.EnabledNamespaceLabel: "true", scaleGroupLabel: group}}}
		if err := h.Client.Create(ctx, ns); err != nil && !isAlreadyExists(err) {
			return err
		}
		return h.Client.Create(ctx, scaleClients(ns.Name))
	})
	if err != nil {
		return nil, err
	}
	if err := h.WaitForPolicy(ctx, scaleClients(scaleNamespace(c.namespaces-1)), time.Minute); err != nil {
		return nil, err
	}
	if _, err := h.WaitForVerdict(ctx, scaleNamespace(0), map[string]string{"app": "eureka-server"}, time.Minute, func(p *corev1.Pod) bool {
		return p.Annotations[policy.PolicyAnnotation] == "cluster/"+scaleClusterPolicy
	}); err != nil {
		return nil, err
	}
	if err := waitForStatus(ctx, procs.webhookMetrics, 10*time.Minute); err != nil {
		return nil, err
	}
	defer cleanupScale(context.WithoutCancel(ctx), h, c)

	cs, template, err := podCreator(h)
	if err != nil {
		return nil, err
	}
	var took time.Duration
	res.Create, took, err = procs.span(ctx, func() error {
		start := time.Now()
		if err := parallel(ctx, c.creators, c.pods(), func(i int) error {
			return createScalePod(ctx, cs, template, c, i)
		}); err != nil {
			return err
		}
		res.CreateTime = time.Since(start)
		return waitForStatusToCount(ctx, h, c, procs, func(matched, _ int32) bool { return int(matched) == c.pods() })
	})
	if err != nil {
		return nil, err
	}
	res.CountedAfter = took - res.CreateTime
	if res.PodsRSS, err = loadgen.ProcessRSS(procs.webhook); err != nil {
		return nil, err
	}

	latency := with(base, func(o *loadgen.Options) { o.Workers, o.Duration, o.Warmup, o.Body = 1, c.load, time.Second, body })
	spent, took, err := procs.span(ctx, func() (err error) {
		res.Quiet, err = loadgen.Run(ctx, latency)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.QuietAPIServer = spent.apiServer.Seconds() / took.Seconds()

	// One edit, timed until status has caught up with it.
	res.Settle, res.SettleTime, err = procs.span(ctx, func() error {
		if err := editScalePeers(ctx, h, true); err != nil {
			return err
		}
		return waitForStatusToCount(ctx, h, c, procs, func(_, drifted int32) bool { return int(drifted) == c.affected() })
	})
	if err != nil {
		return nil, err
	}

	// Admission latency while the policy flips back and forth.
	spent, took, err = procs.span(ctx, func() (err error) {
		stormCtx, stop := context.WithCancel(ctx)
		flips := make(chan int, 1)
		go func() {
			n, bypass := 0, true
			for sleep(stormCtx, c.flipEvery) == nil {
				bypass = !bypass
				if editScalePeers(stormCtx, h, bypass) == nil {
					n++
				}
			}
			flips <- n
		}()
		profile := make(chan string, 1)
		go func() {
			file, err := "", sleep(ctx, latency.Warmup)
			if err == nil {
				file, err = prof.cpu(ctx, procs.webhookMetrics, "cpu-storm.pb.gz", c.load)
			}
			if err != nil {
				progress("  no CPU profile of the webhook during the storm: %v", err)
			}
			profile <- file
		}()
		res.Storm, err = loadgen.Run(ctx, latency)
		res.StormProfile = <-profile
		stop()
		res.Flips = <-flips
		return err
	})
	if err != nil {
		return nil, err
	}
	res.StormWrites = spent.writes
	res.StormAPIServer = spent.apiServer.Seconds() / took.Seconds()
	return res, nil
}

// waitForStatusToCount waits until the policies' status counts what done
// accepts and the status controllers' queues are empty.
func waitForStatusToCount(ctx context.Context, h *harness.Harness, c scaleConfig, procs podCreateProcesses, done func(matched, drifted int32) bool) error {
	if err := waitForCounts(ctx, h, c, done); err != nil {
		return err
	}
	return waitForStatus(ctx, procs.webhookMetrics, 10*time.Minute)
}

func createScalePod(ctx context.Context, cs kubernetes.Interface, template *corev1.Pod, c scaleConfig, i int) error {
	ns := i / c.podsPerNamespace
	pod := template.DeepCopy()
	pod.Namespace = scaleNamespace(ns)
	pod.Name = fmt.Sprintf("pod-%02d", i%c.podsPerNamespace)
	want := pod.Namespace + "/" + scaleClientPolicy
	pod.Labels["app"] = "users"
	if ns < c.editedNamespaces {
		pod.Labels["app"] = "eureka-server"
		want = "cluster/" + scaleClusterPolicy
	}
	got, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if got.Annotations[policy.PolicyAnnotation] != want {
		return fmt.Errorf("pod %s/%s was admitted with policy %q, want %q", pod.Namespace, pod.Name, got.Annotations[policy.PolicyAnnotation], want)
	}
	return nil
}

func editScalePeers(ctx context.Context, h *harness.Harness, bypass bool) error {
	var p v1alpha1.ClusterMeshRolePolicy
	if err := h.Client.Get(ctx, client.ObjectKey{Name: scaleClusterPolicy}, &p); err != nil {
		return err
	}
	p.Spec.PolicySpec = scalePeers(bypass)
	return h.Client.Update(ctx, &p)
}

// waitForCounts polls the policies' status until done accepts the sum of
// their matched and drifted pods, with every status observing its policy's
// generation.
func waitForCounts(ctx context.Context, h *harness.Harness, c scaleConfig, done func(matched, drifted int32) bool) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var matched, drifted int32
		current := true
		var cp v1alpha1.ClusterMeshRolePolicy
		if err := h.Client.Get(ctx, client.ObjectKey{Name: scaleClusterPolicy}, &cp); err != nil {
			return err
		}
		statuses := []*v1alpha1.PolicyStatus{&cp.Status}
		current = current && cp.Status.ObservedGeneration == cp.Generation
		var list v1alpha1.MeshRolePolicyList
		if err := h.Client.List(ctx, &list); err != nil {
			return err
		}
		for i := range list.Items {
			if p := &list.Items[i]; len(p.Namespace) > len(scalePrefix) && p.Namespace[:len(scalePrefix)] == scalePrefix {
				statuses = append(statuses, &p.Status)
				current = current && p.Status.ObservedGeneration == p.Generation
			}
		}
		for _, s := range statuses {
			for _, w := range s.Workloads {
				matched += w.MatchedPods
				drifted += w.DriftedPods
			}
		}
		if current && done(matched, drifted) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scale: status counted %d matched, %d drifted pods after 10m", matched, drifted)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// cleanupScale deletes the phase's pods and policies. Namespaces stay
// (without kube-controller-manager they would only reach Terminating).
func cleanupScale(ctx context.Context, h *harness.Harness, c scaleConfig) {
	_ = h.Client.Delete(ctx, &v1alpha1.ClusterMeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Name: scaleClusterPolicy}})
	err := parallel(ctx, 4, c.namespaces, func(i int) error {
		ns := scaleNamespace(i)
		if err := h.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns)); err != nil {
			return err
		}
		return client.IgnoreNotFound(h.Client.Delete(ctx, &v1alpha1.MeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: scaleClientPolicy}}))
	})
	if err != nil {
		progress("  cleaning up the scale phase: %v", err)
	}
}
