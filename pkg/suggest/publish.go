package suggest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// The reasons of the Events the publisher writes on workloads.
const (
	// ReasonPeerReplicating: a Peer finding, a member of a catalogue system
	// that no policy decides.
	ReasonPeerReplicating = "PeerReplicating"
	// ReasonPeerClient: a Client finding with ports to exclude.
	ReasonPeerClient = "PeerClient"
	// ReasonPeerPolicyDisagrees: an existing policy treats a peer or client
	// otherwise than the catalogue.
	ReasonPeerPolicyDisagrees = "PeerPolicyDisagrees"

	// PublisherController is the Events' reportingController.
	PublisherController = "meshrole.io/suggest"
	// publisherAction is the Events' action: what the publisher did.
	publisherAction = "Suggest"
	// maxNote is the API server's limit on an Event's note.
	maxNote = 1024
)

// PublisherOptions configure the publisher.
type PublisherOptions struct {
	// Options are Suggest's: the catalogue and the minimum confidence.
	Options
	// Delay batches a burst of changes into one pass over the cluster; 5s
	// when zero.
	Delay time.Duration
	// Instance names this replica in the Events (reportingInstance); the
	// host name when empty.
	Instance string
}

// SetupPublisher registers the publisher with mgr: a leader-elected
// controller that runs Suggest over the cluster's StatefulSets, Deployments,
// DaemonSets, Services, ConfigMaps, Namespaces and policies, read from the
// manager's cache, whenever they change, and writes an Event on each workload
// for each Peer, Client (with ports to exclude) and Disagrees finding. A
// finding is announced once: again only when it changes, never for a
// workload a policy already covers. It is off unless this is called.
func SetupPublisher(mgr ctrl.Manager, opts PublisherOptions) error {
	p, err := NewPublisher(mgr.GetClient(), mgr.GetClient(), opts)
	if err != nil {
		return err
	}
	enqueue := delayedPass(p.delay)
	b := ctrl.NewControllerManagedBy(mgr).Named("suggest-publisher")
	for _, obj := range []client.Object{
		&appsv1.StatefulSet{}, &appsv1.Deployment{}, &appsv1.DaemonSet{},
		&corev1.Service{}, &corev1.ConfigMap{}, &corev1.Namespace{},
		&v1alpha1.MeshRolePolicy{}, &v1alpha1.ClusterMeshRolePolicy{},
	} {
		b = b.Watches(obj, enqueue, builder.WithPredicates(specOrLabelsChanged()))
	}
	return b.Complete(p)
}

// Publisher writes suggest's findings as Events; see SetupPublisher.
type Publisher struct {
	reader   client.Reader
	writer   client.Writer
	opts     Options
	delay    time.Duration
	instance string

	mu sync.Mutex
	// announced maps each finding announced, and still standing, to the
	// name of its Event.
	announced map[string]string
	now       func() time.Time
}

// NewPublisher makes a Publisher that reads the cluster with reader and
// creates Events with writer; SetupPublisher runs it in a manager.
func NewPublisher(reader client.Reader, writer client.Writer, opts PublisherOptions) (*Publisher, error) {
	if opts.Catalogue == nil {
		c, err := DefaultCatalogue()
		if err != nil {
			return nil, err
		}
		opts.Catalogue = c
	}
	instance := opts.Instance
	if instance == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("naming the publisher's instance: %w", err)
		}
		instance = host
	}
	delay := opts.Delay
	if delay <= 0 {
		delay = 5 * time.Second
	}
	return &Publisher{
		reader: reader, writer: writer, opts: opts.Options, delay: delay,
		// The API server refuses a reportingInstance longer than 128.
		instance:  cut(PublisherController+"-"+instance, 128),
		announced: map[string]string{},
		now:       time.Now,
	}, nil
}

// passKey is the one key of the publisher's queue: every change leads to
// one pass over the whole cluster, since a client and its peers may be in
// different namespaces.
var passKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "cluster"}}

// delayedPass enqueues the pass after delay; the queue keeps one entry, so a
// burst of changes (a helm install, the informers' first listing) is one pass.
func delayedPass(delay time.Duration) handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) { q.AddAfter(passKey, delay) }
	return handler.Funcs{
		CreateFunc: func(_ context.Context, _ event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		UpdateFunc: func(_ context.Context, _ event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		DeleteFunc: func(_ context.Context, _ event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		GenericFunc: func(_ context.Context, _ event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
	}
}

// specOrLabelsChanged drops the updates that cannot change a finding: those
// of objects with a generation (workloads, policies) whose generation and
// labels stayed the same, which are status writes and resyncs. Services,
// ConfigMaps and Namespaces have no generation: every update of theirs passes.
func specOrLabelsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			if e.ObjectOld == nil || e.ObjectNew == nil {
				return true
			}
			if e.ObjectNew.GetGeneration() == 0 {
				return e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion()
			}
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				!maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
		},
	}
}

// Reconcile is one pass: read, suggest, announce what is new.
func (p *Publisher) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	inv, err := ReadInventory(ctx, p.reader, ReadOptions{})
	if err != nil {
		return reconcile.Result{}, err
	}
	findings, err := Suggest(inv, p.opts)
	if err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, p.announce(ctx, findings, inv.objects())
}

// objects maps each workload to its object, for the Events' regarding.
func (inv *Inventory) objects() map[WorkloadRef]*corev1.ObjectReference {
	out := map[WorkloadRef]*corev1.ObjectReference{}
	add := func(kind string, o metav1.Object) {
		out[WorkloadRef{kind, o.GetNamespace(), o.GetName()}] = &corev1.ObjectReference{
			APIVersion: appsv1.SchemeGroupVersion.String(), Kind: kind,
			Namespace: o.GetNamespace(), Name: o.GetName(), UID: o.GetUID(), ResourceVersion: o.GetResourceVersion(),
		}
	}
	for i := range inv.StatefulSets {
		add("StatefulSet", &inv.StatefulSets[i])
	}
	for i := range inv.Deployments {
		add("Deployment", &inv.Deployments[i])
	}
	for i := range inv.DaemonSets {
		add("DaemonSet", &inv.DaemonSets[i])
	}
	for i := range inv.ReplicaSets {
		add("ReplicaSet", &inv.ReplicaSets[i])
	}
	return out
}

// announce creates an Event for each finding to announce that was not
// announced as it is now. The Event's name is derived from the workload's
// UID and the Event's content, so that the same finding announced again
// (by a new leader, which remembers nothing) is refused as already there
// while the API server keeps the Event (its --event-ttl, 1h by default).
func (p *Publisher) announce(ctx context.Context, findings []Finding, objects map[WorkloadRef]*corev1.ObjectReference) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	standing := map[string]string{}
	var errs []error
	for i := range findings {
		f := &findings[i]
		reason, ok := eventReason(f)
		if !ok {
			continue
		}
		regarding := objects[f.Workload]
		if regarding == nil {
			continue
		}
		note := eventNote(f)
		key := fmt.Sprintf("%s %s %s %s", regarding.UID, f.Workload, f.Role, f.System)
		if d := f.Evidence.Dials; d != nil {
			key += " " + d.String() // a client of two clusters of one system
		}
		name := eventName(regarding, reason, note)
		if p.announced[key] == name {
			standing[key] = name
			continue
		}
		now := p.now()
		ev := &eventsv1.Event{
			ObjectMeta:          metav1.ObjectMeta{Name: name, Namespace: regarding.Namespace},
			EventTime:           metav1.NewMicroTime(now),
			ReportingController: PublisherController,
			ReportingInstance:   p.instance,
			Action:              publisherAction,
			Reason:              reason,
			Regarding:           *regarding,
			Note:                note,
			Type:                corev1.EventTypeNormal,
		}
		if err := p.writer.Create(ctx, ev); err != nil && !apierrors.IsAlreadyExists(err) {
			errs = append(errs, fmt.Errorf("announcing %s on %s: %w", reason, f.Workload, err))
			continue
		}
		standing[key] = name
	}
	// A finding that no longer stands (its workload is now covered, or gone)
	// is forgotten: should it come back, it is announced again.
	p.announced = standing
	return errors.Join(errs...)
}

func eventReason(f *Finding) (string, bool) {
	switch f.Kind {
	case KindPeer:
		return ReasonPeerReplicating, true
	case KindClient:
		// A client whose every port stays meshed needs no entry.
		return ReasonPeerClient, len(f.Treatment.ExcludeOutboundPorts) > 0
	case KindDisagrees:
		return ReasonPeerPolicyDisagrees, true
	}
	return "", false
}

// eventName is "<workload>.<hash of the workload's UID, the reason and the
// note>": the same announcement always has the same name.
func eventName(regarding *corev1.ObjectReference, reason, note string) string {
	h := fnv.New64a()
	for _, s := range []string{string(regarding.UID), regarding.Kind, reason, note} {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0})
	}
	suffix := fmt.Sprintf(".%016x", h.Sum64())
	return strings.TrimRight(cut(regarding.Name, 253-len(suffix)), ".-") + suffix
}

// eventNote says what was found, on what evidence, and what to do.
func eventNote(f *Finding) string {
	var b strings.Builder
	e := &f.Evidence
	switch f.Role {
	case v1alpha1.RolePeerStateful:
		fmt.Fprintf(&b, "member of %s (confidence %s", f.System, f.Confidence)
		var evidence []string
		for _, s := range e.Services {
			kind := "Service"
			if s.Headless {
				kind = "headless Service"
			}
			evidence = append(evidence, kind+" "+s.Name)
		}
		if len(e.Ports) > 0 {
			ports := make([]string, len(e.Ports))
			for i, p := range e.Ports {
				ports[i] = fmt.Sprintf("%d %s", p.Port, p.Purpose)
			}
			evidence = append(evidence, "peer ports "+strings.Join(ports, ", "))
		}
		if len(e.Images) > 0 {
			evidence = append(evidence, "image "+strings.Join(e.Images, ", "))
		}
		if len(e.Config) > 0 {
			evidence = append(evidence, "config "+strings.Join(e.Config, ", "))
		}
		if len(evidence) > 0 {
			b.WriteString(": " + strings.Join(evidence, "; "))
		}
		b.WriteString(")")
	default:
		fmt.Fprintf(&b, "client of %s", f.System)
		if e.Dials != nil {
			fmt.Fprintf(&b, " (%s)", e.Dials)
		}
		fmt.Fprintf(&b, ", confidence %s", f.Confidence)
		if len(e.DialledPorts) > 0 {
			fmt.Fprintf(&b, ", dials %s", portList(e.DialledPorts))
		}
		if len(e.References) > 0 {
			r := e.References[0]
			fmt.Fprintf(&b, ": %s names %s", r.Source, r.Host)
			if len(e.References) > 1 {
				fmt.Fprintf(&b, " (and %d more)", len(e.References)-1)
			}
		}
	}
	b.WriteString(". ")
	treatment := treatmentText(f)
	if f.Kind == KindDisagrees {
		fmt.Fprintf(&b, "The catalogue recommends %s; %s.", treatment, f.Note)
	} else {
		fmt.Fprintf(&b, "Suggested: %s", treatment)
		if f.Policy != "" {
			fmt.Fprintf(&b, " in MeshRolePolicy %s/%s", f.Workload.Namespace, f.Policy)
		}
		fmt.Fprintf(&b, " (kubectl meshrole suggest -n %s -o yaml).", f.Workload.Namespace)
		if f.Note != "" {
			b.WriteString(" Note: " + f.Note + ".")
		}
	}
	return truncate(b.String(), maxNote)
}

func treatmentText(f *Finding) string {
	t := f.Treatment
	switch {
	case f.Role == v1alpha1.RolePeerStateful && t.Proxy == v1alpha1.PeerProxyBypassPorts:
		return fmt.Sprintf("peer-stateful, BypassPorts %s", portList(t.Ports))
	case f.Role == v1alpha1.RolePeerStateful:
		return fmt.Sprintf("peer-stateful, %s", t.Proxy)
	}
	return fmt.Sprintf("client-stateless, excludeOutboundPorts %s", portList(t.ExcludeOutboundPorts))
}

// cut cuts an ASCII name to at most n bytes.
func cut(s string, n int) string { return s[:min(len(s), n)] }

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
