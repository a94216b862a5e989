package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
)

// The ways a pod create goes through the one API server, each in a
// namespace of its own.
const (
	variantNone    = "no webhook"
	variantWebhook = "meshrole, webhook mode"
	variantNative  = "meshrole, native mode"
	variantKyverno = "Kyverno " + kyvernoVersion

	nsNone    = "peers-none"
	nsWebhook = "peers-meshrole"
	nsNative  = "peers-native"
	nsKyverno = "peers-kyverno"

	// The measured pod's app label: the eureka example's peers; and its
	// clients' (a rule of the Kyverno policy, no pod of the bench).
	eurekaServer = "eureka-server"
	eurekaClient = "eureka-client"
)

// variant is one way of creating a pod, and what the pod must carry after
// the create: every key of want with its value (nothing, for no webhook).
type variant struct {
	name, namespace string
	want            policy.Effect
}

// examplePolicy is examples/eureka/policy.yaml, moved into namespace.
func examplePolicy(root, namespace string) (*v1alpha1.MeshRolePolicy, error) {
	objs, err := harness.ReadManifests(filepath.Join(root, "examples", "eureka", "policy.yaml"))
	if err != nil {
		return nil, err
	}
	for _, u := range objs {
		if u.GetKind() != "MeshRolePolicy" {
			continue
		}
		var p v1alpha1.MeshRolePolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			return nil, fmt.Errorf("examples/eureka/policy.yaml: %w", err)
		}
		p.Namespace = namespace
		return &p, nil
	}
	return nil, fmt.Errorf("examples/eureka/policy.yaml holds no MeshRolePolicy")
}

// effectFor is what meshrole writes, by its own engine, on a pod labelled
// app=<app> in namespace when the eureka example policy is there.
func effectFor(p *v1alpha1.MeshRolePolicy, app string) policy.Effect {
	store := policy.NewStore()
	store.SetMeshRolePolicy(p)
	d := store.Decide(policy.Input{
		Namespace:       p.Namespace,
		NamespaceLabels: labels.Set{policy.EnabledNamespaceLabel: "true"},
		PodLabels:       labels.Set{"app": app},
	})
	return d.Effect()
}

// carries reports whether a pod has every label and annotation e writes,
// with its value (port lists: exactly the ports, for the bench's pods carry
// none of their own).
func carries(pod *corev1.Pod, e *policy.Effect) bool {
	if len(e.Labels) == 0 && len(e.Annotations) == 0 && len(e.Ports) == 0 {
		return false
	}
	for k, v := range e.Labels {
		if pod.Labels[k] != v {
			return false
		}
	}
	for k, v := range e.Annotations {
		if pod.Annotations[k] != v {
			return false
		}
	}
	for k, ports := range e.Ports {
		if pod.Annotations[k] != portList(ports) {
			return false
		}
	}
	return true
}

func portList(ports []int32) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// benchKeys moves meshrole's own record annotations (meshrole.io/...) under
// bench.meshrole.io/, as test/bench does for its do-nothing webhook: the same
// keys in size and shape, which meshrole's status controller does not take
// for its own verdicts.
func benchKeys(e policy.Effect) policy.Effect {
	out := policy.Effect{Labels: maps.Clone(e.Labels), Annotations: map[string]string{}, Ports: e.Ports}
	for k, v := range e.Annotations {
		if strings.HasPrefix(k, policy.KeyPrefix) {
			k = "bench." + k
		}
		out.Annotations[k] = v
	}
	return out
}

// setUpMeshrole creates the namespaces of the no-webhook and meshrole
// variants: the eureka example policy in the webhook namespace (applied and
// enforced by the harness's webhook), and in the native namespace as the
// MutatingAdmissionPolicies meshrole's native mode would keep for it,
// compiled by meshrole's own compiler (the webhook-mode server running here
// does not manage them); the webhook configuration leaves the native
// namespace out, so its pods go through no webhook.
func setUpMeshrole(ctx context.Context, h *harness.Harness) (webhook, nativeMode variant, err error) {
	for _, ns := range []struct {
		name    string
		enabled bool
	}{{nsNone, false}, {nsWebhook, true}, {nsNative, true}} {
		if err := h.CreateNamespace(ctx, ns.name, ns.enabled); err != nil {
			return variant{}, variant{}, err
		}
	}

	if _, err := h.ApplyFiles(ctx, nsWebhook, filepath.Join(h.Root, "examples", "eureka", "policy.yaml")); err != nil {
		return variant{}, variant{}, err
	}
	p, err := examplePolicy(h.Root, nsWebhook)
	if err != nil {
		return variant{}, variant{}, err
	}
	webhook = variant{name: variantWebhook, namespace: nsWebhook, want: effectFor(p, eurekaServer)}

	if err := h.ExcludeFromWebhook(ctx, nsNative); err != nil {
		return variant{}, variant{}, err
	}
	p.Namespace = nsNative
	store := policy.NewStore()
	store.SetMeshRolePolicy(p)
	if _, err := h.InstallNative(ctx, store); err != nil {
		return variant{}, variant{}, err
	}
	nativeMode = variant{name: variantNative, namespace: nsNative, want: effectFor(p, eurekaServer)}
	if err := waitForMutation(ctx, h, nativeMode, 60*time.Second); err != nil {
		return variant{}, variant{}, fmt.Errorf("native mode's MutatingAdmissionPolicies: %w", err)
	}
	return webhook, nativeMode, nil
}

// waitForMutation dry-run creates the eureka peer pod in v's namespace until
// it comes back carrying v.want.
func waitForMutation(ctx context.Context, h *harness.Harness, v variant, timeout time.Duration) error {
	_, err := h.WaitForVerdict(ctx, v.namespace, map[string]string{"app": eurekaServer}, timeout,
		func(p *corev1.Pod) bool { return carries(p, &v.want) })
	return err
}
