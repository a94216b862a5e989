package status

import (
	"context"
	"maps"
	"reflect"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

func podWith(annotations map[string]string) *metav1.PartialObjectMetadata {
	p := podMetadata()
	p.ObjectMeta = metav1.ObjectMeta{
		Name: "eureka-server-0", Namespace: "shop", UID: types.UID("5b0e4a2c-1f1e-4c55-9a57-3c3b2f9d0c11"), ResourceVersion: "42",
		GenerateName: "eureka-server-", Labels: map[string]string{"app": "eureka-server", "controller-revision-hash": "eureka-server-6c6b49b9d6"},
		Annotations:       annotations,
		DeletionTimestamp: &metav1.Time{Time: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)},
		OwnerReferences:   []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "eureka-server", UID: "u"}},
		Finalizers:        []string{"example.com/keep"},
		ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}},
	}
	return p
}

func TestTransformPodMetadataKeepsWhatStatusReads(t *testing.T) {
	for name, annotations := range map[string]map[string]string{
		"unmatched": {"prometheus.io/scrape": "true"},
		"matched": {
			policy.RoleAnnotation: "peer-stateful", policy.PolicyAnnotation: "shop/eureka", policy.WorkloadAnnotation: "eureka-peers",
			policy.IstioInjectKey: "false", "prometheus.io/scrape": "true",
		},
		"conflict": {
			policy.PolicyAnnotation: "shop/eureka", policy.WorkloadAnnotation: "eureka-peers",
			policy.ConflictAnnotation: "cluster/all (workload clients, client-stateless)", policy.DryRunAnnotation: `{"role":"client-stateless"}`,
		},
		"injected by Istio before meshrole": {
			policy.IstioSidecarStatus: `{"containers":["istio-proxy"]}`, policy.IstioInjectKey: "true",
			policy.IstioExcludeInboundPorts: "15020", policy.IstioExcludeOutboundPorts: "8761", policy.IstioProxyConfig: "{}",
			"kubectl.kubernetes.io/default-container": "app", "traffic.sidecar.istio.io/includeOutboundIPRanges": "*",
		},
		"no annotations": nil,
	} {
		t.Run(name, func(t *testing.T) {
			before := podWith(annotations)
			out, err := TransformPodMetadata(podWith(maps.Clone(annotations)))
			if err != nil {
				t.Fatal(err)
			}
			after := out.(*metav1.PartialObjectMetadata)

			// Every reader of the pod cache sees the same.
			if got, want := indexEntry(after), indexEntry(before); !reflect.DeepEqual(got, want) {
				t.Errorf("indexEntry: %v, want %v", got, want)
			}
			if got, want := indexConflictParties(after), indexConflictParties(before); !reflect.DeepEqual(got, want) {
				t.Errorf("indexConflictParties: %v, want %v", got, want)
			}
			if got, want := indexVerdict(after), indexVerdict(before); !reflect.DeepEqual(got, want) {
				t.Errorf("indexVerdict: %v, want %v", got, want)
			}
			for _, cluster := range []bool{false, true} {
				if got, want := policiesOfPod(cluster)(context.Background(), after), policiesOfPod(cluster)(context.Background(), before); !reflect.DeepEqual(got, want) {
					t.Errorf("policiesOfPod(%v): %v, want %v", cluster, got, want)
				}
			}
			// Drift and the engine see what they would see on the whole pod.
			for _, d := range decisions(t) {
				got := policy.DetectDrift(after.Labels, after.Annotations, d)
				want := policy.DetectDrift(before.Labels, before.Annotations, d)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("drift against %v: %v, want %v", d.Winner, got, want)
				}
			}
			if counts(after) {
				t.Error("the cache lost the deletion timestamp: a terminating pod counts as drifted")
			}

			// And nothing else is kept.
			want := metav1.ObjectMeta{Name: before.Name, Namespace: before.Namespace, UID: before.UID, ResourceVersion: before.ResourceVersion,
				DeletionTimestamp: before.DeletionTimestamp, Labels: before.Labels}
			for k, v := range before.Annotations {
				if policy.ReadsAnnotation(k) {
					if want.Annotations == nil {
						want.Annotations = map[string]string{}
					}
					want.Annotations[k] = v
				}
			}
			if !reflect.DeepEqual(after.ObjectMeta, want) {
				t.Errorf("kept %+v, want %+v", after.ObjectMeta, want)
			}
			if after.TypeMeta != before.TypeMeta {
				t.Errorf("TypeMeta %+v, want %+v", after.TypeMeta, before.TypeMeta)
			}

			// Informers may transform an object twice.
			again, err := TransformPodMetadata(after.DeepCopy())
			if err != nil || !reflect.DeepEqual(again, after) {
				t.Errorf("not idempotent: %+v (%v)", again, err)
			}
		})
	}
}

// decisions are a peer's and a client's verdict for the pods of
// TestTransformPodMetadataKeepsWhatStatusReads, and no verdict.
func decisions(t *testing.T) []policy.Decision {
	t.Helper()
	store := policy.NewStore()
	p := eurekaPolicy()
	p.Spec.Workloads[1].Client = &v1alpha1.ClientSettings{ExcludeOutboundPorts: []v1alpha1.Port{8761}, HoldApplicationUntilProxyStarts: true}
	store.SetMeshRolePolicy(p)
	var out []policy.Decision
	for _, app := range []string{"eureka-server", "orders", "batch"} {
		out = append(out, store.Decide(policy.Input{Namespace: "shop", NamespaceLabels: labels.Set(enabled), PodLabels: labels.Set{"app": app}}))
	}
	if out[0].Winner == nil || out[1].Winner == nil || out[2].Winner != nil {
		t.Fatalf("decisions %+v: want a peer, a client and no verdict", out)
	}
	return out
}

func TestTransformPodMetadataOtherObjects(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"app": "a"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}}
	out, err := TransformPodMetadata(pod)
	if err != nil {
		t.Fatal(err)
	}
	if p := out.(*corev1.Pod); p.ManagedFields != nil || p.Labels["app"] != "a" {
		t.Errorf("a full pod should only lose its managed fields: %+v", p.ObjectMeta)
	}
}

func testPolicy() *v1alpha1.MeshRolePolicy {
	return &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name: "eureka", Namespace: "shop", UID: "u", ResourceVersion: "7", Generation: 3,
			Labels:        map[string]string{"app.kubernetes.io/managed-by": "Helm"},
			Annotations:   map[string]string{lastAppliedAnnotation: `{"apiVersion":"meshrole.io/v1alpha1","kind":"MeshRolePolicy"}`, "meta.helm.sh/release-name": "shop"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl-client-side-apply"}},
			Finalizers:    []string{"example.com/keep"},
		},
		Spec: v1alpha1.PolicySpec{
			Mode: v1alpha1.ModeEnforce, Priority: 5,
			Workloads: []v1alpha1.Workload{
				{Name: "peers", Role: v1alpha1.RolePeerStateful, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka-server"}},
					Peer: &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{8761}}},
				{Name: "clients", Role: v1alpha1.RoleClientStateless, Selector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}},
					Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyInject, ExcludeOutboundPorts: []v1alpha1.Port{8761}, HoldApplicationUntilProxyStarts: true}},
			},
		},
		Status: v1alpha1.PolicyStatus{
			ObservedGeneration: 3,
			Conditions: []metav1.Condition{
				{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonAccepted, Message: "the webhook applies this policy", ObservedGeneration: 3},
				{Type: ConditionConflict, Status: metav1.ConditionTrue, Reason: ReasonConflicting, Message: "pods are also matched by cluster/all", ObservedGeneration: 3},
			},
			Workloads: []v1alpha1.WorkloadStatus{{Name: "peers", MatchedPods: 3}, {Name: "clients", MatchedPods: 2}},
		},
	}
}

func TestTransformPolicy(t *testing.T) {
	want := testPolicy()
	delete(want.Annotations, lastAppliedAnnotation)
	want.ManagedFields = nil

	out, err := TransformPolicy(testPolicy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*v1alpha1.MeshRolePolicy)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
	again, err := TransformPolicy(got.DeepCopy())
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Errorf("not idempotent: %+v (%v)", again, err)
	}

	// Only the annotation kubectl reads goes; the others stay.
	p := testPolicy()
	p.Annotations = map[string]string{lastAppliedAnnotation: "{}"}
	out, _ = TransformPolicy(p)
	if a := out.(*v1alpha1.MeshRolePolicy).Annotations; a != nil {
		t.Errorf("annotations %v, want none", a)
	}

	cluster := &v1alpha1.ClusterMeshRolePolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Annotations: map[string]string{lastAppliedAnnotation: "{}"}}}
	cluster.Spec.Workloads = []v1alpha1.Workload{{Name: "w", Role: v1alpha1.RolePeerStateful}}
	cluster.Spec.NamespaceSelector = metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	out, _ = TransformPolicy(cluster)
	if c := out.(*v1alpha1.ClusterMeshRolePolicy); c.Annotations != nil || c.Spec.NamespaceSelector.MatchLabels["team"] != "a" {
		t.Errorf("cluster policy: %+v", c)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{lastAppliedAnnotation: "{}"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}}
	out, _ = TransformPolicy(ns)
	if n := out.(*corev1.Namespace); n.ManagedFields != nil || n.Annotations[lastAppliedAnnotation] == "" {
		t.Errorf("another object should only lose its managed fields: %+v", n.ObjectMeta)
	}
}

// Every cached policy shares one copy of the strings that repeat.
func TestTransformPolicyShares(t *testing.T) {
	decoded := func() *v1alpha1.MeshRolePolicy {
		// Copies of every string, as a decoder makes them.
		p := testPolicy()
		clone := func(s string) string { return string([]byte(s)) }
		p.Spec.Mode = v1alpha1.Mode(clone(string(p.Spec.Mode)))
		p.Spec.Workloads[0].Role = v1alpha1.Role(clone(string(p.Spec.Workloads[0].Role)))
		p.Status.Conditions[0].Message = clone(p.Status.Conditions[0].Message)
		p.Status.Conditions[1].Message = clone(p.Status.Conditions[1].Message)
		return p
	}
	a, _ := TransformPolicy(decoded())
	b, _ := TransformPolicy(decoded())
	pa, pb := a.(*v1alpha1.MeshRolePolicy), b.(*v1alpha1.MeshRolePolicy)
	same := func(x, y string) bool { return len(x) > 0 && unsafeData(x) == unsafeData(y) }
	if !same(string(pa.Spec.Mode), string(pb.Spec.Mode)) || !same(string(pa.Spec.Workloads[0].Role), string(pb.Spec.Workloads[0].Role)) {
		t.Error("spec enum values are not shared")
	}
	if !same(pa.Status.Conditions[0].Message, pb.Status.Conditions[0].Message) {
		t.Error("the Ready message is not shared")
	}
	if same(pa.Status.Conditions[1].Message, pb.Status.Conditions[1].Message) {
		t.Error("a message that names policies is interned")
	}
}

func unsafeData(s string) *byte { return unsafe.StringData(s) }
