package status

import (
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/meshrole/meshrole/pkg/policy"
)

// The informer caches hold every pod's metadata and every policy in the
// cluster, so what they keep is most of the server's memory
// (docs/performance.md). The transforms below drop what no reader uses; a
// field a reader starts using must be kept here first.

// TransformPodMetadata is the cache transform of the pod metadata the status
// controllers watch. A pod keeps its name, namespace, uid, resourceVersion,
// deletionTimestamp (terminating pods do not count as drifted), all its labels
// (a policy's selector may name any) and the annotations DetectDrift reads
// (policy.ReadsAnnotation: meshrole's record and the Istio keys a verdict
// writes, with Istio's status annotation). Other annotations, owner
// references, finalizers and managed fields are dropped: they are most of a
// typical pod's metadata, for every pod in the cluster. Other objects (a full
// Pod) only lose their managed fields.
func TransformPodMetadata(in any) (any, error) {
	p, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return cache.TransformStripManagedFields()(in)
	}
	var kept map[string]string
	for k, v := range p.Annotations {
		if policy.ReadsAnnotation(k) {
			if kept == nil {
				kept = map[string]string{}
			}
			kept[k] = v
		}
	}
	p.ObjectMeta = metav1.ObjectMeta{
		Name:              p.Name,
		Namespace:         p.Namespace,
		UID:               p.UID,
		ResourceVersion:   p.ResourceVersion,
		DeletionTimestamp: p.DeletionTimestamp,
		Labels:            p.Labels,
		Annotations:       kept,
	}
	return p, nil
}

// lastAppliedAnnotation is where kubectl's client-side apply (kubectl apply
// without --server-side) keeps a copy of the object as last applied. Only
// kubectl reads it.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// TransformPolicy is the cache transform of both policy kinds. Their readers
// are the policy store (metadata and spec), native mode (spec) and the status
// controllers (spec and status; a status update changes only the status, the
// API server takes everything else from the stored object). It drops managed fields
// and kubectl's last-applied-configuration annotation, a second copy of the
// policy for every policy applied with kubectl. And every cached policy
// shares one copy of the strings that are the same in most policies: the
// spec's enum values, and the type, status and reason of each condition,
// with the message of the conditions whose message names no policy. Values
// do not change, so no reader can tell.
func TransformPolicy(in any) (any, error) {
	p, ok := in.(policyObject)
	if !ok {
		return cache.TransformStripManagedFields()(in)
	}
	if p.GetManagedFields() != nil {
		p.SetManagedFields(nil)
	}
	if a := p.GetAnnotations(); a[lastAppliedAnnotation] != "" {
		delete(a, lastAppliedAnnotation)
		if len(a) == 0 {
			p.SetAnnotations(nil)
		}
	}
	p.SetNamespace(intern(p.GetNamespace()))
	spec := p.PolicySpec()
	spec.Mode = intern(spec.Mode)
	spec.Rollout = intern(spec.Rollout)
	for i := range spec.Workloads {
		w := &spec.Workloads[i]
		w.Name = intern(w.Name)
		w.Role = intern(w.Role)
		if w.Peer != nil {
			w.Peer.Proxy = intern(w.Peer.Proxy)
		}
		if w.Client != nil {
			w.Client.Proxy = intern(w.Client.Proxy)
		}
	}
	// The Store copies a workload entry only to write out its defaults:
	// written out here, with settings every such entry shares, it copies
	// none. After the loop above, which writes to the settings: the shared
	// ones are read-only.
	policy.ShareDefaults(spec)
	for i := range p.PolicyStatus().Workloads {
		w := &p.PolicyStatus().Workloads[i]
		w.Name = intern(w.Name)
	}
	conditions := p.PolicyStatus().Conditions
	for i := range conditions {
		c := &conditions[i]
		c.Type, c.Status, c.Reason = intern(c.Type), intern(c.Status), intern(c.Reason)
		if c.Reason == ReasonAccepted || c.Reason == ReasonNoConflict || c.Reason == ReasonNoDrift {
			c.Message = intern(c.Message)
		}
	}
	return p, nil
}

// intern returns the canonical copy of s. Canonical copies are held weakly:
// one that no cached object uses any more is collected.
func intern[S ~string](s S) S {
	if s == "" {
		return s
	}
	return S(unique.Make(string(s)).Value())
}
