package suggest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Inventory is everything suggest looks at: the workloads, the Services and
// ConfigMaps that tie them together, the namespaces' labels, and the policies
// that exist already. The kubectl plugin fills it from files or a cluster
// (AddDocument); a controller can fill the fields from its listers.
type Inventory struct {
	StatefulSets []appsv1.StatefulSet
	Deployments  []appsv1.Deployment
	DaemonSets   []appsv1.DaemonSet
	// ReplicaSets owned by a controller (a Deployment's) are ignored: their
	// owner is looked at instead.
	ReplicaSets []appsv1.ReplicaSet
	Services    []corev1.Service
	ConfigMaps  []corev1.ConfigMap
	// Namespaces give the labels ClusterMeshRolePolicies select on. A
	// namespace that is not listed counts as labelled meshrole.io/enabled=true,
	// as in kubectl meshrole explain.
	Namespaces              []corev1.Namespace
	MeshRolePolicies        []v1alpha1.MeshRolePolicy
	ClusterMeshRolePolicies []v1alpha1.ClusterMeshRolePolicy
}

// AddDocument adds one object read from a manifest and reports whether
// suggest uses its kind. A v1 List is unpacked. Namespaced objects without a
// namespace go to defaultNamespace, as kubectl apply would put them.
func (inv *Inventory) AddDocument(doc policy.Document, defaultNamespace string) (bool, error) {
	if doc.APIVersion == "v1" && doc.Kind == "List" {
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(doc.Raw, &list); err != nil {
			return false, fmt.Errorf("reading a List: %w", err)
		}
		used := false
		for _, raw := range list.Items {
			var meta metav1.TypeMeta
			if err := json.Unmarshal(raw, &meta); err != nil {
				return false, fmt.Errorf("reading a List item: %w", err)
			}
			ok, err := inv.AddDocument(policy.Document{APIVersion: meta.APIVersion, Kind: meta.Kind, Raw: raw}, defaultNamespace)
			if err != nil {
				return false, err
			}
			used = used || ok
		}
		return used, nil
	}
	switch doc.APIVersion + "/" + doc.Kind {
	case "apps/v1/StatefulSet":
		return add(&inv.StatefulSets, doc, defaultNamespace)
	case "apps/v1/Deployment":
		return add(&inv.Deployments, doc, defaultNamespace)
	case "apps/v1/DaemonSet":
		return add(&inv.DaemonSets, doc, defaultNamespace)
	case "apps/v1/ReplicaSet":
		return add(&inv.ReplicaSets, doc, defaultNamespace)
	case "v1/Service":
		return add(&inv.Services, doc, defaultNamespace)
	case "v1/ConfigMap":
		return add(&inv.ConfigMaps, doc, defaultNamespace)
	case "v1/Namespace":
		return add(&inv.Namespaces, doc, "")
	case v1alpha1.GroupVersion.String() + "/MeshRolePolicy":
		return add(&inv.MeshRolePolicies, doc, defaultNamespace)
	case v1alpha1.GroupVersion.String() + "/ClusterMeshRolePolicy":
		return add(&inv.ClusterMeshRolePolicies, doc, "")
	}
	return false, nil
}

// namespaced is what every object suggest reads has.
type namespaced interface {
	GetNamespace() string
	SetNamespace(string)
}

func add[T any, PT interface {
	*T
	namespaced
}](list *[]T, doc policy.Document, defaultNamespace string) (bool, error) {
	var obj T
	if err := json.Unmarshal(doc.Raw, &obj); err != nil {
		return false, fmt.Errorf("reading a %s: %w", doc.Kind, err)
	}
	if p := PT(&obj); p.GetNamespace() == "" {
		p.SetNamespace(defaultNamespace)
	}
	*list = append(*list, obj)
	return true, nil
}

// namespaceLabels returns the labels of every listed namespace.
func (inv *Inventory) namespaceLabels() func(string) map[string]string {
	known := map[string]map[string]string{}
	for _, ns := range inv.Namespaces {
		known[ns.Name] = ns.Labels
	}
	return func(name string) map[string]string {
		if l, ok := known[name]; ok {
			return l
		}
		return map[string]string{policy.EnabledNamespaceLabel: "true"}
	}
}

// store builds the decision engine's Store from the existing policies.
func (inv *Inventory) store() *policy.Store {
	s := policy.NewStore()
	for i := range inv.MeshRolePolicies {
		s.SetMeshRolePolicy(&inv.MeshRolePolicies[i])
	}
	for i := range inv.ClusterMeshRolePolicies {
		s.SetClusterMeshRolePolicy(&inv.ClusterMeshRolePolicies[i])
	}
	return s
}

// workload is one pod template and what owns it.
type workload struct {
	ref      WorkloadRef
	labels   map[string]string
	selector *metav1.LabelSelector
	// replicas is -1 for a DaemonSet (one per node).
	replicas int32
	spec     *corev1.PodSpec
}

func (inv *Inventory) workloads() []*workload {
	var out []*workload
	replicas := func(r *int32) int32 {
		if r == nil {
			return 1
		}
		return *r
	}
	for i := range inv.StatefulSets {
		o := &inv.StatefulSets[i]
		out = append(out, &workload{WorkloadRef{"StatefulSet", o.Namespace, o.Name}, o.Spec.Template.Labels, o.Spec.Selector, replicas(o.Spec.Replicas), &o.Spec.Template.Spec})
	}
	for i := range inv.Deployments {
		o := &inv.Deployments[i]
		out = append(out, &workload{WorkloadRef{"Deployment", o.Namespace, o.Name}, o.Spec.Template.Labels, o.Spec.Selector, replicas(o.Spec.Replicas), &o.Spec.Template.Spec})
	}
	for i := range inv.DaemonSets {
		o := &inv.DaemonSets[i]
		out = append(out, &workload{WorkloadRef{"DaemonSet", o.Namespace, o.Name}, o.Spec.Template.Labels, o.Spec.Selector, -1, &o.Spec.Template.Spec})
	}
	for i := range inv.ReplicaSets {
		o := &inv.ReplicaSets[i]
		if metav1.GetControllerOf(o) != nil {
			continue
		}
		out = append(out, &workload{WorkloadRef{"ReplicaSet", o.Namespace, o.Name}, o.Spec.Template.Labels, o.Spec.Selector, replicas(o.Spec.Replicas), &o.Spec.Template.Spec})
	}
	return out
}

// ReadOptions say what ReadInventory reads. The zero value reads every
// namespace and no ReplicaSets, as the publisher does.
type ReadOptions struct {
	// Namespace limits the namespaced kinds to one namespace; every namespace
	// when empty. Namespaces and ClusterMeshRolePolicies are read whatever the
	// scope: they decide in it too.
	Namespace string
	// ReplicaSets reads the ReplicaSets no controller owns as well, as
	// kubectl meshrole suggest does to match its -f. The publisher does not:
	// it would cache every ReplicaSet of the cluster (a Deployment's are its
	// pods) for the rare bare one.
	ReplicaSets bool
}

// ReadInventory lists what suggest looks at (never Pods) through c: a
// client of the API server, or a controller's cache.
func ReadInventory(ctx context.Context, c client.Reader, opts ReadOptions) (*Inventory, error) {
	var (
		statefulSets appsv1.StatefulSetList
		deployments  appsv1.DeploymentList
		daemonSets   appsv1.DaemonSetList
		replicaSets  appsv1.ReplicaSetList
		services     corev1.ServiceList
		configMaps   corev1.ConfigMapList
		namespaces   corev1.NamespaceList
		mrps         v1alpha1.MeshRolePolicyList
		cmrps        v1alpha1.ClusterMeshRolePolicyList
	)
	for _, l := range []struct {
		list    client.ObjectList
		what    string
		cluster bool
		skip    bool
	}{
		{list: &statefulSets, what: "StatefulSets"}, {list: &deployments, what: "Deployments"}, {list: &daemonSets, what: "DaemonSets"},
		{list: &replicaSets, what: "ReplicaSets", skip: !opts.ReplicaSets},
		{list: &services, what: "Services"}, {list: &configMaps, what: "ConfigMaps"}, {list: &mrps, what: "MeshRolePolicies"},
		{list: &namespaces, what: "Namespaces", cluster: true}, {list: &cmrps, what: "ClusterMeshRolePolicies", cluster: true},
	} {
		if l.skip {
			continue
		}
		var in []client.ListOption
		if !l.cluster && opts.Namespace != "" {
			in = append(in, client.InNamespace(opts.Namespace))
		}
		if err := c.List(ctx, l.list, in...); err != nil {
			return nil, fmt.Errorf("listing %s: %w", l.what, err)
		}
	}
	inv := &Inventory{
		StatefulSets: statefulSets.Items, Deployments: deployments.Items, DaemonSets: daemonSets.Items,
		Services: services.Items, ConfigMaps: configMaps.Items, Namespaces: namespaces.Items,
		MeshRolePolicies: mrps.Items, ClusterMeshRolePolicies: cmrps.Items,
	}
	// A ReplicaSet a Deployment owns is that Deployment's pods.
	for _, rs := range replicaSets.Items {
		if metav1.GetControllerOf(&rs) == nil {
			inv.ReplicaSets = append(inv.ReplicaSets, rs)
		}
	}
	// A cache lists in no particular order, and the order of the objects
	// shows in the evidence: sorted, an unchanged cluster gives the same notes.
	sortByName(inv.StatefulSets)
	sortByName(inv.Deployments)
	sortByName(inv.DaemonSets)
	sortByName(inv.ReplicaSets)
	sortByName(inv.Services)
	sortByName(inv.ConfigMaps)
	sortByName(inv.Namespaces)
	sortByName(inv.MeshRolePolicies)
	sortByName(inv.ClusterMeshRolePolicies)
	return inv, nil
}

func sortByName[T any, PT interface {
	*T
	metav1.Object
}](items []T) {
	sort.Slice(items, func(i, j int) bool {
		a, b := PT(&items[i]), PT(&items[j])
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName())) < 0
	})
}
