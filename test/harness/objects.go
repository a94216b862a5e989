package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

func isNotFound(err error) bool      { return apierrors.IsNotFound(err) }
func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// DecodeYAML splits multi-document YAML (or JSON) into objects; empty
// documents are skipped.
func DecodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetAPIVersion() == "" || u.GetKind() == "" {
			return nil, fmt.Errorf("document %d has no apiVersion/kind", len(objs)+1)
		}
		objs = append(objs, u)
	}
}

// ReadManifests reads and decodes YAML files.
func ReadManifests(paths ...string) ([]*unstructured.Unstructured, error) {
	var all []*unstructured.Unstructured
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		objs, err := DecodeYAML(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		all = append(all, objs...)
	}
	return all, nil
}

// ManifestFiles lists the *.yaml and *.yml files in dir, sorted.
func ManifestFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no YAML files in %s", dir)
	}
	return files, nil
}

// applyOrder puts what others depend on first: namespaces, then policies
// (which must be in force before any pod is created), then everything else,
// then the workloads whose controllers create pods.
func applyOrder(u *unstructured.Unstructured) int {
	switch u.GetKind() {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	case "ClusterMeshRolePolicy", "MeshRolePolicy":
		return 2
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod":
		return 4
	default:
		return 3
	}
}

// ApplyFiles applies the objects in the given YAML files; see Apply.
func (h *Harness) ApplyFiles(ctx context.Context, namespace string, paths ...string) ([]*unstructured.Unstructured, error) {
	objs, err := ReadManifests(paths...)
	if err != nil {
		return nil, err
	}
	return objs, h.Apply(ctx, namespace, objs...)
}

// ApplyDir applies every YAML file in dir; see Apply.
func (h *Harness) ApplyDir(ctx context.Context, dir, namespace string) ([]*unstructured.Unstructured, error) {
	files, err := ManifestFiles(dir)
	if err != nil {
		return nil, err
	}
	return h.ApplyFiles(ctx, namespace, files...)
}

// Apply server-side applies objs, namespaces first, then policies, then
// other objects, workloads last. With namespace set, a Namespace object is
// renamed to it and every namespaced object is moved into it, so one set of
// manifests can be applied several times side by side. After the policies it
// waits (WaitForPolicy) until the webhook enforces each MeshRolePolicy, so
// that the workloads' first pods already get their verdicts.
func (h *Harness) Apply(ctx context.Context, namespace string, objs ...*unstructured.Unstructured) error {
	sorted := slices.Clone(objs)
	sort.SliceStable(sorted, func(i, j int) bool { return applyOrder(sorted[i]) < applyOrder(sorted[j]) })
	for _, u := range sorted {
		if namespace != "" {
			if u.GetKind() == "Namespace" && u.GetAPIVersion() == "v1" {
				u.SetName(namespace)
			} else if namespaced, err := h.Client.IsObjectNamespaced(u); err != nil {
				return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
			} else if namespaced {
				u.SetNamespace(namespace)
			}
		}
	}
	var policies []*v1alpha1.MeshRolePolicy
	waited := false
	for _, u := range sorted {
		if !waited && applyOrder(u) > 2 {
			for _, p := range policies {
				if err := h.WaitForPolicy(ctx, p, 20*time.Second); err != nil {
					return err
				}
			}
			waited = true
		}
		u.SetManagedFields(nil)
		u.SetResourceVersion("")
		if err := h.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), objectRef(u), err)
		}
		if u.GetKind() == "MeshRolePolicy" {
			var p v1alpha1.MeshRolePolicy
			if err := h.Client.Get(ctx, client.ObjectKeyFromObject(u), &p); err != nil {
				return err
			}
			policies = append(policies, &p)
		}
	}
	if !waited {
		for _, p := range policies {
			if err := h.WaitForPolicy(ctx, p, 20*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

func objectRef(o client.Object) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

// CreateNamespace creates a namespace, labelled meshrole.io/enabled=true if
// enabled.
func (h *Harness) CreateNamespace(ctx context.Context, name string, enabled bool) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if enabled {
		ns.Labels = map[string]string{policy.EnabledNamespaceLabel: "true"}
	}
	return h.Client.Create(ctx, ns)
}

// ProbePod is a minimal pod with the given labels, for dry-run creates.
func ProbePod(namespace string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "meshrole-probe-", Namespace: namespace, Labels: lbls},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "app",
			Image: "meshrole-probe:never-pulled",
		}}},
	}
}

// DryRunPod server-side dry-run creates pod and returns what the API server
// would have stored (after every admission webhook).
func (h *Harness) DryRunPod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	p := pod.DeepCopy()
	if err := h.Client.Create(ctx, p, client.DryRunAll); err != nil {
		return nil, err
	}
	return p, nil
}

// WaitForVerdict dry-run creates a pod with lbls in namespace until done
// accepts what the API server returns, or timeout. It returns the last pod.
func (h *Harness) WaitForVerdict(ctx context.Context, namespace string, lbls map[string]string, timeout time.Duration, done func(*corev1.Pod) bool) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	var last *corev1.Pod
	var lastErr error
	for {
		p, err := h.DryRunPod(ctx, ProbePod(namespace, lbls))
		if err == nil {
			last, lastErr = p, nil
			if done(p) {
				return p, nil
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return last, fmt.Errorf("no expected verdict for a pod labelled %v in %s within %v: %w", lbls, namespace, timeout, lastErr)
			}
			var ann map[string]string
			if last != nil {
				ann = last.Annotations
			}
			return last, fmt.Errorf("no expected verdict for a pod labelled %v in %s within %v; last annotations: %v", lbls, namespace, timeout, ann)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PolicyRef is how meshrole names a policy in pod annotations.
func PolicyRef(p client.Object) string {
	if p.GetNamespace() == "" {
		return "cluster/" + p.GetName()
	}
	return p.GetNamespace() + "/" + p.GetName()
}

// WaitForPolicy returns once the webhook enforces the MeshRolePolicy as it
// is now (same roles, same workload entries): for a workload entry whose
// selector can be satisfied by labels alone, a dry-run pod must name this
// policy, the entry and its role, as the winner, a conflicting loser, or in
// the dry-run report. Entries that other policies override without a
// conflict cannot be observed; one observed entry is enough. In a namespace
// where meshrole is not enabled there is nothing to wait for.
func (h *Harness) WaitForPolicy(ctx context.Context, p *v1alpha1.MeshRolePolicy, timeout time.Duration) error {
	ref := PolicyRef(p)
	var ns corev1.Namespace
	if err := h.Client.Get(ctx, client.ObjectKey{Name: p.Namespace}, &ns); err != nil {
		return fmt.Errorf("waiting for policy %s: %w", ref, err)
	}
	if ns.Labels[policy.EnabledNamespaceLabel] != "true" {
		return nil
	}
	type probe struct {
		lbls     map[string]string
		workload string
		role     string
	}
	var probes []probe
	for i, w := range p.Spec.Workloads {
		lbls, ok := labelsFor(w.Selector)
		if !ok {
			continue
		}
		// Within a policy the first matching entry wins.
		winner := w
		for _, earlier := range p.Spec.Workloads[:i] {
			if sel, err := metav1.LabelSelectorAsSelector(&earlier.Selector); err == nil && sel.Matches(labels.Set(lbls)) {
				winner = earlier
				break
			}
		}
		probes = append(probes, probe{lbls, winner.Name, string(winner.Role)})
	}
	if len(probes) == 0 {
		return fmt.Errorf("policy %s: no workload selector that a probe pod can satisfy", ref)
	}
	deadline := time.Now().Add(timeout)
	var last map[string]string
	for {
		for _, pr := range probes {
			pod, err := h.DryRunPod(ctx, ProbePod(p.Namespace, pr.lbls))
			if err != nil {
				return fmt.Errorf("waiting for policy %s: dry-run pod: %w", ref, err)
			}
			last = pod.Annotations
			if verdictNames(pod.Annotations, ref, pr.workload, pr.role) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhook did not enforce policy %s within %v (last probe pod annotations: %v)", ref, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func verdictNames(ann map[string]string, ref, workload, role string) bool {
	if ann[policy.PolicyAnnotation] == ref && ann[policy.WorkloadAnnotation] == workload && ann[policy.RoleAnnotation] == role {
		return true
	}
	for _, c := range strings.Split(ann[policy.ConflictAnnotation], ",") {
		if c == ref+"/"+workload+"="+role {
			return true
		}
	}
	if dr := ann[policy.DryRunAnnotation]; dr != "" {
		var d struct{ Policy, Workload, Role string }
		if json.Unmarshal([]byte(dr), &d) == nil && d.Policy == ref && d.Workload == workload && d.Role == role {
			return true
		}
	}
	return false
}

// labelsFor returns labels that sel matches, if labels alone can satisfy it.
func labelsFor(sel metav1.LabelSelector) (map[string]string, bool) {
	lbls := map[string]string{}
	for k, v := range sel.MatchLabels {
		lbls[k] = v
	}
	for _, e := range sel.MatchExpressions {
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			if len(e.Values) == 0 {
				return nil, false
			}
			if v, ok := lbls[e.Key]; !ok || !slices.Contains(e.Values, v) {
				lbls[e.Key] = e.Values[0]
			}
		case metav1.LabelSelectorOpExists:
			if _, ok := lbls[e.Key]; !ok {
				lbls[e.Key] = "meshrole-probe"
			}
		}
	}
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil || !s.Matches(labels.Set(lbls)) {
		return nil, false
	}
	return lbls, true
}

// WaitForPods waits until exactly n pods in namespace match selector and are
// not being deleted, and returns them sorted by name.
func (h *Harness) WaitForPods(ctx context.Context, namespace string, selector map[string]string, n int, timeout time.Duration) ([]corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	var got []corev1.Pod
	for {
		var list corev1.PodList
		if err := h.Client.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels(selector)); err != nil {
			return nil, err
		}
		got = got[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				got = append(got, p)
			}
		}
		if len(got) == n {
			sort.Slice(got, func(i, j int) bool { return got[i].Name < got[j].Name })
			return got, nil
		}
		if time.Now().After(deadline) {
			names := make([]string, 0, len(got))
			for _, p := range got {
				names = append(names, p.Name)
			}
			return nil, fmt.Errorf("want %d pods labelled %v in %s, have %d %v after %v (are the controllers running? see kube-controller-manager's log)",
				n, selector, namespace, len(got), names, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitForReadyPods waits until exactly n pods in namespace match selector,
// none being deleted, all Running and Ready (pods run only on a cluster
// from StartCluster), and returns them sorted by name.
func (h *Harness) WaitForReadyPods(ctx context.Context, namespace string, selector map[string]string, n int, timeout time.Duration) ([]corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		var list corev1.PodList
		if err := h.Client.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels(selector)); err != nil {
			return nil, err
		}
		var ready, notReady []string
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && PodReady(&p) {
				ready = append(ready, p.Name)
			} else {
				notReady = append(notReady, p.Name)
			}
		}
		if len(ready) == n && len(notReady) == 0 {
			sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
			return list.Items, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("want %d Ready pods labelled %v in %s, have %d Ready %v and %d others %v after %v "+
				"(is the cluster running? see kube-scheduler's and kwok's logs)",
				n, selector, namespace, len(ready), ready, len(notReady), notReady, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	})
}

// PolicyStore is meshrole's policy engine over the policies in the API
// server now (every MeshRolePolicy and ClusterMeshRolePolicy), as
// `kubectl meshrole audit` and `rollout` read them.
func (h *Harness) PolicyStore(ctx context.Context) (*policy.Store, error) {
	store := policy.NewStore()
	var namespaced v1alpha1.MeshRolePolicyList
	if err := h.Client.List(ctx, &namespaced); err != nil {
		return nil, fmt.Errorf("listing MeshRolePolicies: %w", err)
	}
	for i := range namespaced.Items {
		store.SetMeshRolePolicy(&namespaced.Items[i])
	}
	var cluster v1alpha1.ClusterMeshRolePolicyList
	if err := h.Client.List(ctx, &cluster); err != nil {
		return nil, fmt.Errorf("listing ClusterMeshRolePolicies: %w", err)
	}
	for i := range cluster.Items {
		store.SetClusterMeshRolePolicy(&cluster.Items[i])
	}
	return store, nil
}

// Warnings collects the warnings the API server returns (admission
// warnings included). Use it as a rest.Config's WarningHandler.
type Warnings struct {
	mu   sync.Mutex
	msgs []string
}

var _ rest.WarningHandler = (*Warnings)(nil)

// HandleWarningHeader implements rest.WarningHandler.
func (w *Warnings) HandleWarningHeader(code int, _ string, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

// Take returns the warnings collected so far and forgets them.
func (w *Warnings) Take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// ClientWithWarnings is a client like Client whose API server warnings are
// collected in the returned Warnings instead of logged.
func (h *Harness) ClientWithWarnings() (client.Client, *Warnings, error) {
	w := &Warnings{}
	cfg := rest.CopyConfig(h.Config)
	cfg.WarningHandler = w
	cfg.WarningHandlerWithContext = nil
	c, err := client.New(cfg, client.Options{Scheme: h.Scheme})
	return c, w, err
}

// PodCreatorClient is a clientset that creates objects as controllers and
// kubectl do, protobuf to the API server (which talks JSON to webhooks
// either way), with no client-side rate limit: for measuring the server.
func (h *Harness) PodCreatorClient() (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(h.Config)
	cfg.QPS = -1
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return kubernetes.NewForConfig(cfg)
}
