package policy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// The policies and namespaces of pkg/mutate's golden fixtures, so that drift
// is decided against exactly what the webhook's goldens were admitted with.
const goldenPolicies = "../mutate/testdata/policies.yaml"

// goldenStore is pkg/mutate's golden policies and the labels of the
// namespaces they decide in, as pkg/mutate/golden_test.go loads them.
func goldenStore(t *testing.T) (*policy.Store, map[string]map[string]string) {
	t.Helper()
	store, namespaces, err := policy.LoadFile(goldenPolicies, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(namespaces) == 0 {
		t.Fatalf("%s holds no Namespaces", goldenPolicies)
	}
	return store, namespaces
}

func driftOf(store *policy.Store, namespaces map[string]map[string]string, namespace string, podLabels, podAnnotations map[string]string) []policy.Drift {
	d := store.Decide(policy.Input{
		Namespace:       namespace,
		NamespaceLabels: labels.Set(namespaces[namespace]),
		PodLabels:       labels.Set(podLabels),
	})
	return policy.DetectDrift(podLabels, podAnnotations, d)
}

func reasons(drift []policy.Drift) []policy.DriftReason {
	out := []policy.DriftReason{}
	for _, d := range drift {
		out = append(out, d.Reason)
	}
	return out
}

// Metadata as the webhook leaves it on pods it admitted.
var (
	eurekaPeerVerdict = map[string]string{
		"meshrole.io/policy": "shop/eureka", "meshrole.io/role": "peer-stateful", "meshrole.io/workload": "eureka-peers",
		"sidecar.istio.io/inject": "false",
	}
	eurekaPeerLabels = map[string]string{
		"app": "eureka-server", "sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none",
	}
	ordersVerdict = map[string]string{
		"meshrole.io/policy": "shop/eureka", "meshrole.io/role": "client-stateless", "meshrole.io/workload": "eureka-clients",
		"sidecar.istio.io/inject":                       "true",
		"traffic.sidecar.istio.io/excludeOutboundPorts": "8761",
		"proxy.istio.io/config":                         "holdApplicationUntilProxyStarts: true\n",
	}
	ordersLabels = map[string]string{"app": "orders", "sidecar.istio.io/inject": "true"}
	zkVerdict    = map[string]string{
		"meshrole.io/policy": "zk/zookeeper", "meshrole.io/role": "peer-stateful", "meshrole.io/workload": "quorum",
		"traffic.sidecar.istio.io/excludeInboundPorts":  "2888,3888",
		"traffic.sidecar.istio.io/excludeOutboundPorts": "2888,3888",
	}
	// What Istio's injector adds to the pods it injects.
	istioStatus = map[string]string{
		"sidecar.istio.io/status":                      `{"initContainers":["istio-init"],"containers":["istio-proxy"]}`,
		"kubectl.kubernetes.io/default-container":      "app",
		"kubectl.kubernetes.io/default-logs-container": "app",
	}
	istioLabels = map[string]string{
		"security.istio.io/tlsMode":           "istio",
		"service.istio.io/canonical-name":     "app",
		"service.istio.io/canonical-revision": "latest",
	}
)

// merge returns a new map with the keys of every map, later ones winning,
// and then the key/value pairs of kv; a value "-" deletes the key.
func merge(ms []map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "-" {
			delete(out, kv[i])
			continue
		}
		out[kv[i]] = kv[i+1]
	}
	return out
}

func m(ms ...map[string]string) []map[string]string { return ms }

func TestDetectDrift(t *testing.T) {
	store, namespaces := goldenStore(t)
	tests := []struct {
		name        string
		namespace   string
		labels      map[string]string
		annotations map[string]string
		want        []policy.DriftReason
		// wantDetail are substrings the details must contain, in order of the reasons.
		wantDetail []string
	}{
		{
			name: "peer as admitted", namespace: "shop",
			labels: eurekaPeerLabels, annotations: eurekaPeerVerdict,
			want: []policy.DriftReason{},
		},
		{
			name: "client as admitted, then injected by Istio", namespace: "shop",
			labels:      merge(m(ordersLabels, istioLabels)),
			annotations: merge(m(ordersVerdict, istioStatus)),
			want:        []policy.DriftReason{},
		},
		{
			// Istio CNI's template puts the status port in front of the
			// excluded inbound ports: a set that still holds meshrole's.
			name: "bypass peer with its sidecar and Istio's own ports", namespace: "zk",
			labels: merge(m(istioLabels), "app", "zookeeper"),
			annotations: merge(m(zkVerdict, istioStatus),
				"traffic.sidecar.istio.io/excludeInboundPorts", "15020,2888,3888"),
			want: []policy.DriftReason{},
		},
		{
			name: "peer with meshrole's keys that Istio injected all the same", namespace: "shop",
			labels: eurekaPeerLabels, annotations: merge(m(eurekaPeerVerdict, istioStatus)),
			want:       []policy.DriftReason{policy.DriftSidecarOnPeer},
			wantDetail: []string{"shop/eureka (workload eureka-peers, peer-stateful) keeps it out of the sidecar, but Istio injected it"},
		},
		{
			name: "peer injected before meshrole ran", namespace: "shop",
			labels: merge(m(istioLabels), "app", "eureka-server"), annotations: istioStatus,
			want: []policy.DriftReason{policy.DriftSidecarOnPeer, policy.DriftNoVerdict, policy.DriftMissingKeys},
			wantDetail: []string{"Istio injected it", "carries no verdict",
				`label istio.io/dataplane-mode="none" missing; label sidecar.istio.io/inject="false" missing; annotation sidecar.istio.io/inject="false" missing`},
		},
		{
			name: "peer in ambient injected: still a sidecar on a peer", namespace: "mesh",
			labels:      merge(m(eurekaPeerLabels)),
			annotations: merge(m(eurekaPeerVerdict, istioStatus), "meshrole.io/policy", "mesh/eureka"),
			want:        []policy.DriftReason{policy.DriftSidecarOnPeer},
		},
		{
			name: "client created before the policy", namespace: "shop",
			labels: map[string]string{"app": "orders", "pod-template-hash": "abc"},
			want:   []policy.DriftReason{policy.DriftNoVerdict, policy.DriftMissingKeys},
			wantDetail: []string{"shop/eureka (workload eureka-clients, client-stateless) decides it now",
				`annotation proxy.istio.io/config="holdApplicationUntilProxyStarts: true\n" missing`},
		},
		{
			name: "client injected before meshrole ran: no SidecarOnPeer, but no verdict", namespace: "shop",
			labels: merge(m(istioLabels), "app", "orders"), annotations: istioStatus,
			want: []policy.DriftReason{policy.DriftNoVerdict, policy.DriftMissingKeys},
		},
		{
			name: "workload entry renamed", namespace: "shop",
			labels: ordersLabels, annotations: merge(m(ordersVerdict), "meshrole.io/workload", "clients"),
			want:       []policy.DriftReason{policy.DriftStaleVerdict},
			wantDetail: []string{`it records meshrole.io/workload="clients", but shop/eureka (workload eureka-clients, client-stateless) decides it now`},
		},
		{
			name: "another policy won then", namespace: "shop",
			labels: ordersLabels, annotations: merge(m(ordersVerdict), "meshrole.io/policy", "shop/old"),
			want:       []policy.DriftReason{policy.DriftStaleVerdict},
			wantDetail: []string{`meshrole.io/policy="shop/old"`},
		},
		{
			name: "was a peer, is a client now", namespace: "shop",
			labels:      map[string]string{"app": "orders", "sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none"},
			annotations: merge(m(eurekaPeerVerdict), "meshrole.io/workload", "eureka-clients"),
			want:        []policy.DriftReason{policy.DriftStaleVerdict, policy.DriftMissingKeys},
			wantDetail: []string{`meshrole.io/role="peer-stateful"`,
				`label sidecar.istio.io/inject is "false", the verdict writes "true"`},
		},
		{
			name: "policy deleted or no longer selecting the pod", namespace: "shop",
			labels: map[string]string{"app": "batch", "sidecar.istio.io/inject": "true"},
			annotations: map[string]string{"meshrole.io/policy": "shop/eureka", "meshrole.io/role": "client-stateless",
				"meshrole.io/workload": "eureka-clients", "sidecar.istio.io/inject": "true"},
			want:       []policy.DriftReason{policy.DriftVerdictGone},
			wantDetail: []string{"it records policy shop/eureka, but no enforced policy decides it now"},
		},
		{
			name: "only a DryRun policy decides it now", namespace: "preview",
			labels:      map[string]string{"app": "eureka-server"},
			annotations: map[string]string{"meshrole.io/policy": "preview/old", "meshrole.io/role": "peer-stateful", "meshrole.io/workload": "x"},
			want:        []policy.DriftReason{policy.DriftVerdictGone, policy.DriftStaleRecord},
		},
		{
			name: "bypass port added to the policy", namespace: "zk",
			labels:      map[string]string{"app": "zookeeper"},
			annotations: merge(m(zkVerdict), "traffic.sidecar.istio.io/excludeInboundPorts", "2888"),
			want:        []policy.DriftReason{policy.DriftMissingKeys},
			wantDetail:  []string{`annotation traffic.sidecar.istio.io/excludeInboundPorts is "2888", the verdict writes "2888,3888"`},
		},
		{
			name: "holdApplicationUntilProxyStarts turned on", namespace: "shop",
			labels: ordersLabels, annotations: merge(m(ordersVerdict), "proxy.istio.io/config", "-"),
			want: []policy.DriftReason{policy.DriftMissingKeys},
		},
		{
			name: "a forged meshrole.io key", namespace: "shop",
			labels: ordersLabels, annotations: merge(m(ordersVerdict), "meshrole.io/extra", "x"),
			want:       []policy.DriftReason{policy.DriftMissingKeys},
			wantDetail: []string{`annotation meshrole.io/extra="x" not written by the verdict`},
		},
		{
			name: "a conflict appeared after admission", namespace: "mixed",
			labels: merge(m(eurekaPeerLabels), "app", "kafka"),
			annotations: merge(m(eurekaPeerVerdict), "meshrole.io/policy", "mixed/kafka",
				"meshrole.io/workload", "brokers"),
			want:       []policy.DriftReason{policy.DriftStaleRecord},
			wantDetail: []string{`annotation meshrole.io/conflict="cluster/everyone-is-a-client/everything=client-stateless" missing`},
		},
		{
			name: "a DryRun policy created after admission", namespace: "preview",
			labels: map[string]string{"app": "eureka-server"},
			want:   []policy.DriftReason{policy.DriftStaleRecord},
		},
		{
			name: "unmatched pod, Istio injected", namespace: "shop",
			labels: merge(m(istioLabels), "app", "batch"), annotations: istioStatus,
			want: []policy.DriftReason{},
		},
		{
			name: "unmatched pod without metadata", namespace: "shop",
			want: []policy.DriftReason{},
		},
		{
			name: "ambient client stays in ambient", namespace: "mesh",
			labels: map[string]string{"app": "orders"},
			annotations: map[string]string{"meshrole.io/policy": "mesh/eureka", "meshrole.io/role": "client-stateless",
				"meshrole.io/workload": "eureka-clients", "traffic.sidecar.istio.io/excludeOutboundPorts": "8761"},
			want: []policy.DriftReason{},
		},
		{
			// A fresh admission would leave the broken value exactly as it is.
			name: "invalid port list the webhook left alone", namespace: "shop",
			labels: ordersLabels, annotations: merge(m(ordersVerdict), "traffic.sidecar.istio.io/excludeOutboundPorts", "8761,http"),
			want: []policy.DriftReason{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drift := driftOf(store, namespaces, tt.namespace, tt.labels, tt.annotations)
			if got := reasons(drift); !slices.Equal(got, tt.want) {
				t.Fatalf("reasons %v, want %v\n%v", got, tt.want, drift)
			}
			for i, want := range tt.wantDetail {
				if !strings.Contains(drift[i].Detail, want) {
					t.Errorf("reason %s says %q, want it to contain %q", drift[i].Reason, drift[i].Detail, want)
				}
			}
			for _, d := range drift {
				if d.Detail == "" || !strings.HasPrefix(d.String(), string(d.Reason)+": ") {
					t.Errorf("%#v: no words for people", d)
				}
			}
		})
	}
}

// TestDetectDriftOnPartialObjectMetadata: drift needs nothing a
// metadata-only informer does not deliver.
func TestDetectDriftOnPartialObjectMetadata(t *testing.T) {
	store, namespaces := goldenStore(t)
	pod := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Namespace: "shop", Name: "eureka-server-0",
		Labels:      map[string]string{"app": "eureka-server"},
		Annotations: istioStatus,
	}}
	drift := driftOf(store, namespaces, pod.GetNamespace(), pod.GetLabels(), pod.GetAnnotations())
	want := []policy.DriftReason{policy.DriftSidecarOnPeer, policy.DriftNoVerdict, policy.DriftMissingKeys}
	if got := reasons(drift); !slices.Equal(got, want) {
		t.Fatalf("reasons %v, want %v", got, want)
	}
}

// TestNoDriftAfterAdmission: every pod the webhook admitted in pkg/mutate's
// golden fixtures shows no drift against the same policies, except the pods
// the webhook had to leave as they were because Istio's injector ran first:
// those are exactly what a rollout must find.
func TestNoDriftAfterAdmission(t *testing.T) {
	store, namespaces := goldenStore(t)
	admittedAfterIstio := map[string][]policy.DriftReason{
		// A peer Istio injected: the status annotation says so.
		"already-injected": {policy.DriftSidecarOnPeer, policy.DriftNoVerdict, policy.DriftMissingKeys},
		// Its proxy is a native sidecar and the fixture carries no status
		// annotation, which real injectors always write: metadata shows only
		// that it never got its verdict.
		"already-injected-native-sidecar": {policy.DriftNoVerdict, policy.DriftMissingKeys},
	}
	outputs, err := filepath.Glob("../mutate/testdata/*.json.mutated")
	if err != nil {
		t.Fatal(err)
	}
	if len(outputs) < 20 {
		t.Fatalf("found %d golden outputs, want the 20 or more of pkg/mutate/testdata", len(outputs))
	}
	seen := 0
	for _, output := range outputs {
		input := strings.TrimSuffix(output, ".mutated")
		name := strings.TrimSuffix(filepath.Base(input), ".json")
		t.Run(name, func(t *testing.T) {
			var review struct {
				Request struct {
					Namespace string `json:"namespace"`
				} `json:"request"`
			}
			raw, err := os.ReadFile(input)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &review); err != nil {
				t.Fatal(err)
			}
			namespace := review.Request.Namespace
			if _, ok := namespaces[namespace]; !ok {
				t.Fatalf("namespace %q is not among %s's Namespaces", namespace, goldenPolicies)
			}
			var admitted struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			}
			raw, err = os.ReadFile(output)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(raw, &admitted); err != nil {
				t.Fatal(err)
			}
			want, ok := admittedAfterIstio[name]
			if !ok {
				want = []policy.DriftReason{}
			}
			drift := driftOf(store, namespaces, namespace, admitted.Labels, admitted.Annotations)
			if got := reasons(drift); !slices.Equal(got, want) {
				t.Fatalf("drift %v, want %v\n%v", got, want, drift)
			}
			seen++
		})
	}
	if seen != len(outputs) {
		t.Fatalf("checked %d of %d fixtures", seen, len(outputs))
	}
}

// keepRead keeps the annotations ReadsAnnotation names, as the status
// controllers' pod cache does.
func keepRead(annotations map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range annotations {
		if policy.ReadsAnnotation(k) {
			out[k] = v
		}
	}
	return out
}

// TestReadsAnnotationIsAllDriftReads: drift on the annotations
// ReadsAnnotation keeps is drift on all of them, for every golden admitted
// pod, pods that drifted in each way, and every key an effect can write.
func TestReadsAnnotationIsAllDriftReads(t *testing.T) {
	store, namespaces := goldenStore(t)
	// Keys a pod often carries that no verdict writes, Istio's among them.
	unread := map[string]string{
		"prometheus.io/scrape": "true", "kubectl.kubernetes.io/default-container": "app",
		"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8", "sidecar.istio.io/proxyCPU": "100m",
		"istio.io/rev": "canary",
	}
	for k := range unread {
		if policy.ReadsAnnotation(k) {
			t.Errorf("ReadsAnnotation(%q): no verdict writes it", k)
		}
	}
	type pod struct {
		namespace           string
		labels, annotations map[string]string
	}
	pods := []pod{
		{"shop", eurekaPeerLabels, eurekaPeerVerdict},
		{"shop", merge(m(istioLabels), "app", "eureka-server"), istioStatus},
		{"shop", map[string]string{"app": "orders"}, nil},
		{"shop", ordersLabels, merge(m(ordersVerdict), "meshrole.io/extra", "x", "proxy.istio.io/config", "-")},
		{"zk", map[string]string{"app": "zookeeper"}, merge(m(zkVerdict), "traffic.sidecar.istio.io/excludeInboundPorts", "2888")},
		{"mixed", merge(m(eurekaPeerLabels), "app", "kafka"), merge(m(eurekaPeerVerdict), "meshrole.io/policy", "mixed/kafka", "meshrole.io/workload", "brokers")},
		{"preview", map[string]string{"app": "eureka-server"}, nil},
		{"shop", map[string]string{"app": "batch"}, map[string]string{"meshrole.io/policy": "shop/eureka", "meshrole.io/workload": "eureka-clients"}},
	}
	outputs, err := filepath.Glob("../mutate/testdata/*.json.mutated")
	if err != nil || len(outputs) < 20 {
		t.Fatalf("found %d golden outputs (%v), want the 20 or more of pkg/mutate/testdata", len(outputs), err)
	}
	for _, output := range outputs {
		var review struct {
			Request struct {
				Namespace string `json:"namespace"`
			} `json:"request"`
		}
		raw, err := os.ReadFile(strings.TrimSuffix(output, ".mutated"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &review); err != nil {
			t.Fatal(err)
		}
		var admitted struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		}
		if raw, err = os.ReadFile(output); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(raw, &admitted); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod{review.Request.Namespace, admitted.Labels, admitted.Annotations})
	}
	withDrift := 0
	for i, p := range pods {
		full := merge(m(unread, p.annotations))
		want := driftOf(store, namespaces, p.namespace, p.labels, full)
		got := driftOf(store, namespaces, p.namespace, p.labels, keepRead(full))
		if !slices.Equal(got, want) {
			t.Errorf("pod %d in %s: drift on the annotations ReadsAnnotation keeps %v, on all of them %v", i, p.namespace, got, want)
		}
		if len(want) > 0 {
			withDrift++
		}
	}
	if withDrift < 8 {
		t.Errorf("only %d of %d pods drifted: the comparison proves little", withDrift, len(pods))
	}

	// Every key any entry can write, in and out of ambient.
	for _, w := range []v1alpha1.Workload{
		{Role: v1alpha1.RolePeerStateful, Peer: &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxySkip}},
		{Role: v1alpha1.RolePeerStateful, Peer: &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{2888}}},
		{Role: v1alpha1.RoleClientStateless, Client: &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxySidecar,
			ExcludeOutboundPorts: []v1alpha1.Port{8761}, HoldApplicationUntilProxyStarts: true}},
	} {
		for _, ambient := range []bool{false, true} {
			e := policy.IstioEffect(&w, ambient)
			for k := range e.Annotations {
				if !policy.ReadsAnnotation(k) {
					t.Errorf("%s writes annotation %s, which ReadsAnnotation leaves out", w.Role, k)
				}
			}
			for k := range e.Ports {
				if !policy.ReadsAnnotation(k) {
					t.Errorf("%s merges ports into %s, which ReadsAnnotation leaves out", w.Role, k)
				}
			}
			if e.HoldApplicationUntilProxyStarts && !policy.ReadsAnnotation(policy.IstioProxyConfig) {
				t.Errorf("%s merges into %s, which ReadsAnnotation leaves out", w.Role, policy.IstioProxyConfig)
			}
		}
	}
}

// BenchmarkDetectDrift: what status pays per pod of a policy, for a pod that
// carries its verdict and for one admitted before the policy (drifted).
func BenchmarkDetectDrift(b *testing.B) {
	store, namespaces, err := policy.LoadFile(goldenPolicies, "default")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name        string
		annotations map[string]string
	}{{"current", eurekaPeerVerdict}, {"drifted", map[string]string{}}} {
		b.Run(bc.name, func(b *testing.B) {
			d := store.Decide(policy.Input{Namespace: "shop", NamespaceLabels: labels.Set(namespaces["shop"]), PodLabels: labels.Set(eurekaPeerLabels)})
			want := 0
			if bc.name == "drifted" {
				want = 2
			}
			if got := policy.DetectDrift(eurekaPeerLabels, bc.annotations, d); len(got) != want {
				b.Fatalf("%d drifts %v, want %d", len(got), got, want)
			}
			b.ReportAllocs()
			for b.Loop() {
				policy.DetectDrift(eurekaPeerLabels, bc.annotations, d)
			}
		})
	}
}
