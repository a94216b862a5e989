package suggest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// TestCatalogueCoversTheIssue pins the port claims issue 16 asks the
// catalogue to make, so that an edit of catalogue.yaml cannot lose one.
func TestCatalogueCoversTheIssue(t *testing.T) {
	cat, err := DefaultCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		system    string
		treatment v1alpha1.PeerProxy
		peer      []int32
		client    []int32
	}{
		{"eureka", v1alpha1.PeerProxySkip, []int32{8761}, []int32{8761}},
		{"zookeeper", v1alpha1.PeerProxyBypassPorts, []int32{2888, 3888}, []int32{2181}},
		{"kafka", v1alpha1.PeerProxyBypassPorts, []int32{9093, 9094}, []int32{9092}},
		{"cassandra", v1alpha1.PeerProxyBypassPorts, []int32{7000, 7001}, []int32{9042}},
		{"elasticsearch", v1alpha1.PeerProxyBypassPorts, []int32{9300}, []int32{9200}},
		{"redis-cluster", v1alpha1.PeerProxySkip, []int32{16379}, []int32{6379}},
		{"rabbitmq", v1alpha1.PeerProxyBypassPorts, []int32{4369, 25672}, []int32{5672, 15672}},
		{"consul", v1alpha1.PeerProxySkip, []int32{8300, 8301, 8302}, []int32{8500, 8502}},
		{"nacos", v1alpha1.PeerProxyBypassPorts, []int32{7848, 9849}, []int32{8848, 9848}},
		{"etcd", v1alpha1.PeerProxyBypassPorts, []int32{2380}, []int32{2379}},
		{"hazelcast", v1alpha1.PeerProxySkip, []int32{5701}, []int32{5701}},
		{"galera", v1alpha1.PeerProxyBypassPorts, []int32{4444, 4567, 4568}, []int32{3306}},
		{"nats", v1alpha1.PeerProxyBypassPorts, []int32{6222}, []int32{4222, 8222}},
		{"akka-cluster", v1alpha1.PeerProxyBypassPorts, []int32{2552, 8558, 25520}, nil},
	}
	if len(cat.Systems) != len(want) {
		t.Errorf("the catalogue has %d systems, this test knows %d", len(cat.Systems), len(want))
	}
	numbers := func(specs []PortSpec) []int32 {
		var out []int32
		for _, s := range specs {
			out = append(out, s.Ports...)
		}
		return sortedSet(out)
	}
	for _, w := range want {
		s := cat.System(w.system)
		if s == nil {
			t.Errorf("%s: not in the catalogue", w.system)
			continue
		}
		if s.Treatment != w.treatment {
			t.Errorf("%s: treatment %s, want %s", w.system, s.Treatment, w.treatment)
		}
		if got := numbers(s.PeerPorts); !slices.Equal(got, w.peer) {
			t.Errorf("%s: peer ports %v, want %v", w.system, got, w.peer)
		}
		if got := numbers(s.ClientPorts); !slices.Equal(got, w.client) {
			t.Errorf("%s: client ports %v, want %v", w.system, got, w.client)
		}
	}
	if s := cat.System("redis-cluster"); s == nil || s.BusPortOffset != 10000 {
		t.Errorf("Redis Cluster's bus port is the data port + 10000: %+v", s)
	}
}

func TestLoadCatalogueRefusesWhatItCannotCite(t *testing.T) {
	bad := `
systems:
- name: thing
  images: [thing]
  treatment: Bypass
  why: because
  treatmentDocs: [https://example.org/thing]
  peerPorts:
  - purpose: gossip
    ports: [15001]
    docs: [http://example.org/ports]
  clientPorts:
  - purpose: api
    ports: [80]
    protocol: websocket
    docs: []
`
	_, err := LoadCatalogue([]byte(bad))
	if err == nil {
		t.Fatal("a bad catalogue loaded")
	}
	for _, want := range []string{`treatment "Bypass"`, "port 15001 cannot be listed", `"http://example.org/ports" is not an https address`, `protocol "websocket"`, "cite the public documentation"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := LoadCatalogue([]byte("systems:\n- name: x\n  colour: blue\n")); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("an unknown field must be refused, got %v", err)
	}
}

func TestImageMatches(t *testing.T) {
	cases := []struct {
		image, hint string
		want        bool
	}{
		{"docker.io/bitnami/zookeeper:3.9.3-debian-12-r8", "bitnami/zookeeper", true},
		{"docker.io/bitnami/zookeeper:3.9.3", "zookeeper", true},
		{"zookeeper:3.9@sha256:0123", "zookeeper", true},
		{"confluentinc/cp-zookeeper:7.7.1", "zookeeper", true},
		{"localhost:5000/platform/eureka-server:2", "eureka-server", true},
		{"localhost:5000/platform/eureka-server:2", "eureka", true},
		{"docker.io/bitnami/zookeeper-exporter:1", "zookeeper", false},
		{"danielqsj/kafka-exporter:v1.8.0", "kafka", false},
		{"provectuslabs/kafka-ui:latest", "kafka", false},
		{"redis:7.4-alpine", "redis-cluster", false},
		{"docker.io/bitnami/redis-cluster:7.4", "redis-cluster", true},
		{"registry.example.com/shop/kafkaesque:1", "kafka", false},
		{"hazelcast/management-center:5.6.0", "hazelcast", false},
	}
	for _, c := range cases {
		if got := imageMatches(c.image, c.hint); got != c.want {
			t.Errorf("imageMatches(%q, %q) = %v, want %v", c.image, c.hint, got, c.want)
		}
	}
}

// TestNameForms checks which spellings of a Service's DNS name count as a
// reference, from a workload in namespace "app".
func TestNameForms(t *testing.T) {
	index := newNameIndex()
	zk := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "zk-hs", Namespace: "zk"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}
	local := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "app"}}
	index.add(zk, nil)
	index.add(local, nil)
	cases := []struct {
		value string
		want  []string // host and port of each reference
	}{
		{"zk-hs.zk.svc.cluster.local:2181", []string{"zk-hs.zk.svc.cluster.local:2181"}},
		{"zk-0.zk-hs.zk:2181,zk-1.zk-hs.zk.svc:2181", []string{"zk-0.zk-hs.zk:2181", "zk-1.zk-hs.zk.svc:2181"}},
		{"zk-hs:2181", nil}, // another namespace needs the namespace
		{"kafka:9092", []string{"kafka:9092"}},
		{"kafka", []string{"kafka"}}, // the whole value
		{"PLAINTEXT://kafka", []string{"kafka"}},
		{"user@kafka", []string{"kafka"}},
		{"our kafka topics", nil},   // a word, not a host
		{"kafka-0.kafka:9092", nil}, // pod names exist only for headless Services
		{"kafka.app.svc:9092", []string{"kafka.app.svc:9092"}},
		{"kafka.other:9092", nil},
	}
	for _, c := range cases {
		var got []string
		for _, r := range index.find(text{source: "test", value: c.value}, "app") {
			s := r.ref.Host
			if r.ref.Port != 0 {
				s = fmt.Sprintf("%s:%d", s, r.ref.Port)
			}
			got = append(got, s)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q: got %v, want %v", c.value, got, c.want)
		}
	}
}

func TestAddDocumentReadsLists(t *testing.T) {
	list := `{"apiVersion":"v1","kind":"List","items":[
	  {"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"zk"}},
	  {"apiVersion":"v1","kind":"Service","metadata":{"name":"zk-hs","namespace":"zk"}},
	  {"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}]}`
	docs, err := policy.ReadDocuments(strings.NewReader(list))
	if err != nil {
		t.Fatal(err)
	}
	var inv Inventory
	used, err := inv.AddDocument(docs[0], "fallback")
	if err != nil || !used {
		t.Fatalf("used %v, err %v", used, err)
	}
	if len(inv.StatefulSets) != 1 || inv.StatefulSets[0].Namespace != "fallback" {
		t.Errorf("StatefulSets %+v: want one, in the default namespace", inv.StatefulSets)
	}
	if len(inv.Services) != 1 || inv.Services[0].Namespace != "zk" {
		t.Errorf("Services %+v: want one, in its own namespace", inv.Services)
	}
}

func TestEntryNames(t *testing.T) {
	taken := map[string]bool{}
	long := strings.Repeat("very-long-workload-name-", 4) + "peers"
	a := entryName(long, WorkloadRef{Kind: "StatefulSet"}, taken)
	b := entryName(long, WorkloadRef{Kind: "Deployment"}, taken)
	if len(a) > 63 || len(b) > 63 || a == b {
		t.Errorf("names %q and %q: want distinct, at most 63 characters", a, b)
	}
	c := entryName("zk-peers", WorkloadRef{Kind: "StatefulSet"}, taken)
	d := entryName("zk-peers", WorkloadRef{Kind: "Deployment"}, taken)
	if c != "zk-peers" || d != "zk-peers-deployment" {
		t.Errorf("got %q and %q, want zk-peers and zk-peers-deployment", c, d)
	}
}

func TestMarshalPoliciesIsApplyable(t *testing.T) {
	policies := []v1alpha1.MeshRolePolicy{{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "MeshRolePolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Namespace: "zk"},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "zk-peers", Role: v1alpha1.RolePeerStateful,
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "zk"}},
			Peer:     &v1alpha1.PeerSettings{Proxy: v1alpha1.PeerProxyBypassPorts, Ports: []v1alpha1.Port{2888, 3888}},
		}}},
	}, {
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "MeshRolePolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Namespace: "shop"},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name: "orders-zookeeper-client", Role: v1alpha1.RoleClientStateless,
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "orders"}},
			Client:   &v1alpha1.ClientSettings{ExcludeOutboundPorts: []v1alpha1.Port{2181}},
		}}},
	}}
	out, err := MarshalPolicies(policies)
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"status", "creationTimestamp"} {
		if strings.Contains(string(out), absent) {
			t.Errorf("the YAML carries %s:\n%s", absent, out)
		}
	}
	docs, err := policy.ReadDocuments(strings.NewReader(string(out)))
	if err != nil || len(docs) != 2 {
		t.Fatalf("read back %d documents, err %v:\n%s", len(docs), err, out)
	}
}

// TestConfidence builds one workload up signal by signal: peer ports alone
// are low confidence and left out unless asked for; a headless Service or an
// image makes them medium; both make them high.
func TestConfidence(t *testing.T) {
	replicas := int32(3)
	sts := appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "coord", Namespace: "infra"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "coord"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "coord"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "coord", Image: "registry.example.com/infra/coord:1",
					Ports: []corev1.ContainerPort{{ContainerPort: 2181}, {ContainerPort: 2888}, {ContainerPort: 3888}},
				}}},
			},
		},
	}
	headlessService := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "coord-hs", Namespace: "infra"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "coord"}},
	}
	confidence := func(inv *Inventory, min Confidence) Confidence {
		t.Helper()
		findings, err := Suggest(inv, Options{MinConfidence: min})
		if err != nil {
			t.Fatal(err)
		}
		if len(findings) == 0 {
			return ""
		}
		if len(findings) != 1 || findings[0].System != "zookeeper" || findings[0].Kind != KindPeer {
			t.Fatalf("want one zookeeper peer, got %+v", findings)
		}
		return findings[0].Confidence
	}

	inv := &Inventory{StatefulSets: []appsv1.StatefulSet{sts}}
	if got := confidence(inv, ""); got != "" {
		t.Errorf("ports alone, default threshold: got %q, want nothing", got)
	}
	if got := confidence(inv, Low); got != Low {
		t.Errorf("ports alone, MinConfidence low: got %q, want low", got)
	}
	inv.Services = []corev1.Service{headlessService}
	if got := confidence(inv, ""); got != Medium {
		t.Errorf("ports and a headless Service: got %q, want medium", got)
	}
	inv.StatefulSets[0].Spec.Template.Spec.Containers[0].Image = "zookeeper:3.9"
	if got := confidence(inv, ""); got != High {
		t.Errorf("ports, a headless Service and the image: got %q, want high", got)
	}
	if got := confidence(inv, High); got != High {
		t.Errorf("MinConfidence high: got %q, want high", got)
	}
	inv.Services = nil
	if got := confidence(inv, High); got != "" {
		t.Errorf("ports and the image, MinConfidence high: got %q, want nothing", got)
	}
	if _, err := Suggest(inv, Options{MinConfidence: "certain"}); err == nil {
		t.Error("an unknown confidence was accepted")
	}
}
