package suggest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// allFixtures reads every fixture into one Inventory, as one cluster.
func allFixtures(t *testing.T) *Inventory {
	t.Helper()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	inv := &Inventory{}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := policy.ReadDocuments(f)
		_ = f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, doc := range docs {
			if _, err := inv.AddDocument(doc, "default"); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
		}
	}
	return inv
}

// clusterOf puts inv's objects, and a Namespace for every namespace they
// use that inv does not list, into a fake API server; every object gets a
// UID, as the API server would give it.
func clusterOf(t *testing.T, inv *Inventory) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	namespaces := map[string]bool{}
	for i := range inv.Namespaces {
		namespaces[inv.Namespaces[i].Name] = true
	}
	add := func(o client.Object) {
		o.SetUID(types.UID(fmt.Sprintf("uid-%T-%s-%s", o, o.GetNamespace(), o.GetName())))
		if ns := o.GetNamespace(); ns != "" && !namespaces[ns] {
			namespaces[ns] = true
			objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policy.EnabledNamespaceLabel: "true"}}})
		}
		objs = append(objs, o)
	}
	for i := range inv.StatefulSets {
		add(&inv.StatefulSets[i])
	}
	for i := range inv.Deployments {
		add(&inv.Deployments[i])
	}
	for i := range inv.DaemonSets {
		add(&inv.DaemonSets[i])
	}
	for i := range inv.Services {
		add(&inv.Services[i])
	}
	for i := range inv.ConfigMaps {
		add(&inv.ConfigMaps[i])
	}
	for i := range inv.Namespaces {
		add(&inv.Namespaces[i])
	}
	for i := range inv.MeshRolePolicies {
		add(&inv.MeshRolePolicies[i])
	}
	for i := range inv.ClusterMeshRolePolicies {
		add(&inv.ClusterMeshRolePolicies[i])
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

func newTestPublisher(t *testing.T, c client.Client) *Publisher {
	t.Helper()
	p, err := NewPublisher(c, c, PublisherOptions{Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pass(t *testing.T, p *Publisher) {
	t.Helper()
	if _, err := p.Reconcile(context.Background(), passKey); err != nil {
		t.Fatal(err)
	}
}

// announcement is an Event as the tests compare it.
type announcement struct{ workload, reason, note string }

func events(t *testing.T, c client.Client) []announcement {
	t.Helper()
	var list eventsv1.EventList
	if err := c.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	var out []announcement
	for _, e := range list.Items {
		r := e.Regarding
		if e.Namespace != r.Namespace || e.ReportingController != PublisherController || e.ReportingInstance != PublisherController+"-test" ||
			e.Action != "Suggest" || e.Type != corev1.EventTypeNormal || e.EventTime.IsZero() || r.UID == "" || r.APIVersion != "apps/v1" {
			t.Errorf("event %s/%s: not what the API server accepts as a finding's announcement: %+v", e.Namespace, e.Name, e)
		}
		if errs := validation.IsDNS1123Subdomain(e.Name); len(errs) > 0 {
			t.Errorf("event name %q: %v", e.Name, errs)
		}
		if len(e.Note) > 1024 {
			t.Errorf("event %s: note of %d bytes, the API server takes 1024", e.Name, len(e.Note))
		}
		out = append(out, announcement{fmt.Sprintf("%s %s/%s", r.Kind, r.Namespace, r.Name), e.Reason, e.Note})
	}
	slices.SortFunc(out, func(a, b announcement) int {
		return strings.Compare(a.workload+a.reason+a.note, b.workload+b.reason+b.note)
	})
	return out
}

// TestPublisherAnnouncesEachFindingOnce runs the publisher over every
// fixture as one cluster: one Event per Peer, Client with ports to exclude,
// and Disagrees finding; none for covered workloads, clients that need no
// entry and negatives; none again on later passes, nor from a new leader.
func TestPublisherAnnouncesEachFindingOnce(t *testing.T) {
	c := clusterOf(t, allFixtures(t))
	p := newTestPublisher(t, c)
	pass(t, p)
	got := events(t, c)

	count := map[string]int{}
	for _, a := range got {
		count[a.reason]++
	}
	// The fixtures as one cluster: 19 peers no policy decides, 11 client
	// findings with ports to exclude (shop/cart dials two Redis clusters),
	// 3 workloads an existing policy treats otherwise (testdata/covered.yaml).
	want := map[string]int{ReasonPeerReplicating: 19, ReasonPeerClient: 11, ReasonPeerPolicyDisagrees: 3}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("events by reason: %v, want %v", count, want)
	}
	byWorkload := map[string][]announcement{}
	for _, a := range got {
		byWorkload[a.workload] = append(byWorkload[a.workload], a)
	}
	for workload, contains := range map[string][]string{
		"StatefulSet zk/zookeeper": {"member of zookeeper (confidence high: Service zookeeper; headless Service zookeeper-headless", "peer ports 2888 ", "3888 ",
			"Suggested: peer-stateful, BypassPorts [2888, 3888] in MeshRolePolicy zk/meshrole-suggested (kubectl meshrole suggest -n zk -o yaml)."},
		"Deployment shop/orders": {"client of eureka (StatefulSet eureka/eureka-server), confidence high, dials [8761]: env ",
			"Suggested: client-stateless, excludeOutboundPorts [8761] in MeshRolePolicy shop/meshrole-suggested"},
		"StatefulSet registry/eureka": {"member of eureka", "The catalogue recommends peer-stateful, Skip; registry/eureka",
			"BypassPorts [8761] where the catalogue recommends Skip"},
		"StatefulSet streaming/kafka": {"in MeshRolePolicy streaming/meshrole-suggested-2"},
		"Deployment mall/gateway":     {"client of nacos", "Note: namespace mall is not labelled meshrole.io/enabled=true"},
	} {
		as := byWorkload[workload]
		if len(as) != 1 {
			t.Errorf("%s: %d events, want 1: %+v", workload, len(as), as)
			continue
		}
		for _, s := range contains {
			if !strings.Contains(as[0].note, s) {
				t.Errorf("%s: note %q does not say %q", workload, as[0].note, s)
			}
		}
	}
	for _, quiet := range []string{
		"StatefulSet zk2/zk", "Deployment registry/billing", // covered
		"Deployment jobs/scheduler", "Deployment kafka/kafka-exporter", // clients that need no entry
		"StatefulSet db/postgresql", "StatefulSet db/redis-master", "Deployment dev/eureka", // negatives
	} {
		if as := byWorkload[quiet]; len(as) > 0 {
			t.Errorf("%s: announced %+v, want nothing", quiet, as)
		}
	}

	pass(t, p)
	pass(t, p)
	if again := events(t, c); len(again) != len(got) {
		t.Errorf("two more passes over an unchanged cluster: %d events, want still %d", len(again), len(got))
	}
	// A new leader remembers nothing: its announcements are the Events
	// already there.
	pass(t, newTestPublisher(t, c))
	if again := events(t, c); len(again) != len(got) {
		t.Errorf("a new leader's pass: %d events, want still %d", len(again), len(got))
	}
}

// TestPublisherAnnouncesChanges: applying the suggested policies announces
// nothing (the workloads are covered now); a finding that changes is
// announced once more, and only it.
func TestPublisherAnnouncesChanges(t *testing.T) {
	inv := allFixtures(t)
	c := clusterOf(t, inv)
	p := newTestPublisher(t, c)
	pass(t, p)
	before := events(t, c)

	// The suggested policies of the zk and shop namespaces applied.
	findings, err := Suggest(inv, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	applied := 0
	for _, pol := range Policies(findings) {
		if pol.Namespace == "zk" || pol.Namespace == "shop" {
			if err := c.Create(ctx, &pol); err != nil {
				t.Fatal(err)
			}
			applied += len(pol.Spec.Workloads)
		}
	}
	if applied != 5 {
		t.Fatalf("applied %d entries, want 5 (zookeeper's and the shop's 4 clients)", applied)
	}
	pass(t, p)
	if after := events(t, c); len(after) != len(before) {
		t.Errorf("after applying suggestions: %d events, want still %d", len(after), len(before))
	}
	if n := len(p.announced); n != 33-6 {
		t.Errorf("%d findings remembered as standing, want %d: the covered ones are forgotten", n, 33-6)
	}

	// Labelling the mall namespace changes the gateway's note.
	var mall corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: "mall"}, &mall); err != nil {
		t.Fatal(err)
	}
	mall.Labels[policy.EnabledNamespaceLabel] = "true"
	if err := c.Update(ctx, &mall); err != nil {
		t.Fatal(err)
	}
	pass(t, p)
	after := events(t, c)
	var added []announcement
	for _, a := range after {
		if !slices.Contains(before, a) {
			added = append(added, a)
		}
	}
	if len(added) != 1 || added[0].workload != "Deployment mall/gateway" || strings.Contains(added[0].note, "not labelled") {
		t.Errorf("after labelling mall: new events %+v, want one on Deployment mall/gateway without the note about the label", added)
	}
}

// TestPublisherRetriesWhatFailed: an Event the API server refused is
// announced on the next pass; the others are not repeated.
func TestPublisherRetriesWhatFailed(t *testing.T) {
	c := clusterOf(t, allFixtures(t))
	refuse := true
	failing := &refusingWriter{Client: c, refuse: func(e *eventsv1.Event) bool { return refuse && e.Regarding.Name == "zookeeper" }}
	p, err := NewPublisher(c, failing, PublisherOptions{Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reconcile(context.Background(), passKey); err == nil || !strings.Contains(err.Error(), "announcing PeerReplicating on StatefulSet zk/zookeeper") {
		t.Errorf("pass with a refused event: error %v, want it named", err)
	}
	if n := len(events(t, c)); n != 32 {
		t.Errorf("%d events, want 32 (one refused)", n)
	}
	refuse = false
	pass(t, p)
	if n := len(events(t, c)); n != 33 {
		t.Errorf("%d events after the retry, want 33", n)
	}
	if failing.creates != 32+1 {
		t.Errorf("%d creates, want 33: only the refused one again", failing.creates)
	}
}

// TestPublisherIgnoresListOrder: a cache lists in any order; the same
// cluster listed in another order is not a change.
func TestPublisherIgnoresListOrder(t *testing.T) {
	c := clusterOf(t, allFixtures(t))
	reversing := &reversingReader{Reader: c}
	p, err := NewPublisher(reversing, c, PublisherOptions{Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pass(t, p)
	first := len(events(t, c))
	reversing.reverse = true
	pass(t, p)
	if n := len(events(t, c)); first != 33 || n != first {
		t.Errorf("%d events, then %d with the lists reversed; want 33 both times", first, n)
	}
}

// reversingReader lists in reverse order once reverse is set.
type reversingReader struct {
	client.Reader
	reverse bool
}

func (r *reversingReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := r.Reader.List(ctx, list, opts...); err != nil || !r.reverse {
		return err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	slices.Reverse(items)
	return meta.SetList(list, items)
}

type refusingWriter struct {
	client.Client
	refuse  func(*eventsv1.Event) bool
	creates int
}

func (w *refusingWriter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if e, ok := obj.(*eventsv1.Event); ok && w.refuse(e) {
		return fmt.Errorf("refused")
	}
	w.creates++
	return w.Client.Create(ctx, obj, opts...)
}

func TestSpecOrLabelsChanged(t *testing.T) {
	sts := func(generation int64, rv string, lbls map[string]string) client.Object {
		return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Generation: generation, ResourceVersion: rv, Labels: lbls}}
	}
	cm := func(rv string) client.Object {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
	}
	pred := specOrLabelsChanged()
	for _, c := range []struct {
		name     string
		old, new client.Object
		want     bool
	}{
		{"status write", sts(3, "10", nil), sts(3, "11", nil), false},
		{"resync", sts(3, "10", nil), sts(3, "10", nil), false},
		{"spec change", sts(3, "10", nil), sts(4, "11", nil), true},
		{"label change", sts(3, "10", nil), sts(3, "11", map[string]string{"a": "b"}), true},
		{"ConfigMap edit", cm("10"), cm("11"), true},
		{"ConfigMap resync", cm("10"), cm("10"), false},
	} {
		if got := pred.Update(event.UpdateEvent{ObjectOld: c.old, ObjectNew: c.new}); got != c.want {
			t.Errorf("%s: passes %v, want %v", c.name, got, c.want)
		}
	}
}

func TestEventNoteFitsTheAPIServer(t *testing.T) {
	f := Finding{Kind: KindPeer, Role: v1alpha1.RolePeerStateful, System: "zookeeper", Workload: WorkloadRef{"StatefulSet", "ns", "zk"}}
	for i := range 100 {
		f.Evidence.Images = append(f.Evidence.Images, fmt.Sprintf("registry.example.com/zookeeper-é-%d:3.9", i))
	}
	note := eventNote(&f)
	if len(note) > maxNote || !strings.HasSuffix(note, "…") || !strings.HasPrefix(note, "member of zookeeper") {
		t.Errorf("note of %d bytes: %q…", len(note), note[:60])
	}
	long := &corev1.ObjectReference{Kind: "Deployment", Name: strings.Repeat("a", 250), UID: "u"}
	if name := eventName(long, "r", "n"); len(name) > 253 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		t.Errorf("event name %q (%d): not a valid name", name, len(name))
	}
}
