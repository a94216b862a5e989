package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/suggest"
)

// explained is the part of explain -o json this test reads.
type explained struct {
	Kind, Name, Namespace string
	Role                  string
	Labels, Annotations   []struct {
		Key, After string
	}
}

func (e *explained) value(key string, in []struct{ Key, After string }) string {
	for _, kv := range in {
		if kv.Key == key {
			return kv.After
		}
	}
	return ""
}

// TestSuggestedPoliciesAreWhatExplainConfirms: for every fixture of
// pkg/suggest, suggest -o yaml, fed back with the same manifests into
// explain, skips or bypasses every peer it found and makes every client it
// gave an entry exclude its ports. The manifests are read from stdin, as
// from helm template.
func TestSuggestedPoliciesAreWhatExplainConfirms(t *testing.T) {
	fixtures, err := filepath.Glob("../../pkg/suggest/testdata/*.yaml")
	if err != nil || len(fixtures) < 15 {
		t.Fatalf("fixtures: %v %v", fixtures, err)
	}
	peers, clients := 0, 0
	for _, fixture := range fixtures {
		t.Run(filepath.Base(fixture), func(t *testing.T) {
			r := withStdin(t, fixture, func() result { return runPlugin("", "suggest", "-f", "-", "-o", "json") })
			if r.code != 0 {
				t.Fatalf("suggest -o json: exit %d: %s", r.code, r.stderr)
			}
			var out struct {
				Findings []suggest.Finding `json:"findings"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatal(err)
			}
			r = withStdin(t, fixture, func() result { return runPlugin("", "suggest", "-f", "-", "-o", "yaml") })
			if r.code != 0 {
				t.Fatalf("suggest -o yaml: exit %d: %s", r.code, r.stderr)
			}
			suggested := filepath.Join(t.TempDir(), "suggested.yaml")
			if err := os.WriteFile(suggested, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			r = runPlugin("", "explain", "-f", fixture, "-f", suggested, "-o", "json")
			if r.code != 0 {
				t.Fatalf("explain: exit %d: %s", r.code, r.stderr)
			}
			var explanations []explained
			if err := json.Unmarshal([]byte(r.stdout), &explanations); err != nil {
				t.Fatal(err)
			}
			find := func(ref suggest.WorkloadRef) *explained {
				i := slices.IndexFunc(explanations, func(e explained) bool {
					return e.Kind == ref.Kind && e.Namespace == ref.Namespace && e.Name == ref.Name
				})
				if i < 0 {
					t.Fatalf("explain does not list %s", ref)
				}
				return &explanations[i]
			}
			for _, f := range out.Findings {
				switch {
				case f.Kind == suggest.KindPeer:
					peers++
					e := find(f.Workload)
					if e.Role != string(v1alpha1.RolePeerStateful) {
						t.Errorf("%s: explain says role %q, want peer-stateful", f.Workload, e.Role)
					}
					if f.Treatment.Proxy == v1alpha1.PeerProxyBypassPorts {
						for _, key := range []string{"traffic.sidecar.istio.io/excludeInboundPorts", "traffic.sidecar.istio.io/excludeOutboundPorts"} {
							if got := e.value(key, e.Annotations); !containsPorts(got, f.Treatment.Ports) {
								t.Errorf("%s: %s=%q, want ports %v", f.Workload, key, got, f.Treatment.Ports)
							}
						}
					} else if got := e.value("sidecar.istio.io/inject", e.Labels); got != "false" {
						t.Errorf("%s: label sidecar.istio.io/inject=%q, want false (Skip)", f.Workload, got)
					}
				case f.Kind == suggest.KindClient && len(f.Treatment.ExcludeOutboundPorts) > 0:
					clients++
					e := find(f.Workload)
					key := "traffic.sidecar.istio.io/excludeOutboundPorts"
					if got := e.value(key, e.Annotations); e.Role != string(v1alpha1.RoleClientStateless) || !containsPorts(got, f.Treatment.ExcludeOutboundPorts) {
						t.Errorf("%s: role %q, %s=%q; want client-stateless excluding %v", f.Workload, e.Role, key, got, f.Treatment.ExcludeOutboundPorts)
					}
				}
			}
		})
	}
	if peers < 14 || clients == 0 {
		t.Fatalf("checked %d peers and %d clients with entries: the fixtures must hold every catalogue system", peers, clients)
	}
	t.Logf("explain confirms %d suggested peers and %d clients", peers, clients)
}

// withStdin runs f with os.Stdin reading path: kubectl's resource.Builder
// reads "-f -" from the process's standard input.
func withStdin(t *testing.T, path string, f func() result) result {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Close() }()
	saved := os.Stdin
	os.Stdin = in
	defer func() { os.Stdin = saved }()
	return f()
}

func containsPorts(list string, ports []int32) bool {
	have := strings.Split(list, ",")
	for _, p := range ports {
		if !slices.Contains(have, strconv.Itoa(int(p))) {
			return false
		}
	}
	return len(ports) > 0
}

// TestSuggestTable: the default output names each finding with its evidence.
func TestSuggestTable(t *testing.T) {
	r := runPlugin("", "suggest", "-f", "../../pkg/suggest/testdata/eureka.yaml")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"NAMESPACE  WORKLOAD", "statefulset/eureka-server  Peer", "eureka  high", "peer Skip", "headless-service,peer-ports",
		"deployment/orders", "client excludeOutboundPorts 8761",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := runPlugin("", "suggest", "-f", "../../pkg/suggest/testdata/negatives.yaml"); r.code != 0 || !strings.Contains(r.stdout, "No peer-replicating workload found.") {
		t.Errorf("negatives: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runPlugin("", "suggest", "-f", "x.yaml", "--min-confidence", "sure"); r.code != 2 || !strings.Contains(r.stderr, "use low, medium or high") {
		t.Errorf("bad --min-confidence: exit %d: %s", r.code, r.stderr)
	}
}

// TestSuggestReadsTheCluster: the live read of -n takes that namespace's
// workloads, Services and policies, every namespace's labels and every
// ClusterMeshRolePolicy, and, unlike the publisher's read, the ReplicaSets
// no controller owns; -A takes every namespace's. A failed list says what.
func TestSuggestReadsTheCluster(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	web := &appsv1.Deployment{ObjectMeta: meta("shop", "web")}
	web.UID = "web-uid"
	owned := &appsv1.ReplicaSet{ObjectMeta: meta("shop", "web-5d8f")}
	owned.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(web, appsv1.SchemeGroupVersion.WithKind("Deployment"))}
	objects := []client.Object{
		&corev1.Namespace{ObjectMeta: meta("", "shop")}, &corev1.Namespace{ObjectMeta: meta("", "queue")},
		&appsv1.StatefulSet{ObjectMeta: meta("shop", "zk")}, &appsv1.StatefulSet{ObjectMeta: meta("queue", "kafka")},
		web, owned, &appsv1.ReplicaSet{ObjectMeta: meta("shop", "legacy")}, &appsv1.ReplicaSet{ObjectMeta: meta("queue", "old")},
		&appsv1.DaemonSet{ObjectMeta: meta("queue", "agent")},
		&corev1.Service{ObjectMeta: meta("shop", "zk")}, &corev1.ConfigMap{ObjectMeta: meta("queue", "kafka")},
		&v1alpha1.MeshRolePolicy{ObjectMeta: meta("shop", "zookeeper")}, &v1alpha1.MeshRolePolicy{ObjectMeta: meta("queue", "kafka")},
		&v1alpha1.ClusterMeshRolePolicy{ObjectMeta: meta("", "everyone")},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objects...).Build()
	ctx := context.Background()

	read := func(namespace string) []string {
		t.Helper()
		inv, err := readCluster(ctx, c, namespace)
		if err != nil {
			t.Fatal(err)
		}
		return inventoryNames(inv)
	}
	if got, want := read("shop"), []string{
		"StatefulSet shop/zk", "Deployment shop/web", "ReplicaSet shop/legacy", "Service shop/zk",
		"Namespace queue", "Namespace shop", "MeshRolePolicy shop/zookeeper", "ClusterMeshRolePolicy everyone",
	}; !slices.Equal(got, want) {
		t.Errorf("-n shop read\n%q\nwant\n%q", got, want)
	}
	if got, want := read(""), []string{
		"StatefulSet queue/kafka", "StatefulSet shop/zk", "Deployment shop/web", "DaemonSet queue/agent",
		"ReplicaSet queue/old", "ReplicaSet shop/legacy", "Service shop/zk", "ConfigMap queue/kafka",
		"Namespace queue", "Namespace shop", "MeshRolePolicy queue/kafka", "MeshRolePolicy shop/zookeeper", "ClusterMeshRolePolicy everyone",
	}; !slices.Equal(got, want) {
		t.Errorf("-A read\n%q\nwant\n%q", got, want)
	}
	publisher, err := suggest.ReadInventory(ctx, c, suggest.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := inventoryNames(publisher); len(got) != 11 || slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "ReplicaSet ") }) {
		t.Errorf("the publisher's read, every namespace and no ReplicaSet: %q", got)
	}

	refusing := interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		switch list.(type) {
		case *v1alpha1.MeshRolePolicyList, *corev1.NamespaceList:
			return errors.New("forbidden")
		}
		return c.List(ctx, list, opts...)
	}}
	_, err = readCluster(ctx, fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(refusing).Build(), "shop")
	if err == nil || err.Error() != "listing MeshRolePolicies: forbidden" {
		t.Errorf("read with policies and namespaces refused: %v, want listing MeshRolePolicies: forbidden", err)
	}
}

// inventoryNames is "Kind namespace/name" of everything in inv, kind by kind.
func inventoryNames(inv *suggest.Inventory) []string {
	return slices.Concat(
		namesOf("StatefulSet", inv.StatefulSets), namesOf("Deployment", inv.Deployments), namesOf("DaemonSet", inv.DaemonSets),
		namesOf("ReplicaSet", inv.ReplicaSets), namesOf("Service", inv.Services), namesOf("ConfigMap", inv.ConfigMaps),
		namesOf("Namespace", inv.Namespaces), namesOf("MeshRolePolicy", inv.MeshRolePolicies),
		namesOf("ClusterMeshRolePolicy", inv.ClusterMeshRolePolicies),
	)
}

func namesOf[T any, PT interface {
	*T
	metav1.Object
}](kind string, items []T) []string {
	var out []string
	for i := range items {
		o := PT(&items[i])
		name := o.GetName()
		if o.GetNamespace() != "" {
			name = o.GetNamespace() + "/" + name
		}
		out = append(out, kind+" "+name)
	}
	return out
}
