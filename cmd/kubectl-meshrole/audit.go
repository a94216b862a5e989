package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// errFindings makes the command exit non-zero when the audit found something.
var errFindings = errors.New("findings")

// Finding is one thing the audit reports.
type Finding struct {
	Check   string `json:"check"`
	Object  string `json:"object"`
	Message string `json:"message"`
}

// Audit checks.
const (
	checkPeerWithSidecar = "peer-with-sidecar"
	checkNeedsRestart    = "needs-restart"
	checkBypassClients   = "bypass-not-excluded-by-clients"
	checkOrdering        = "istio-injector-first"
)

func auditCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig (default: KUBECONFIG, then ~/.kube/config)")
	webhookName := fs.String("webhook-configuration-name", "00-meshrole", "name of meshrole's MutatingWebhookConfiguration")
	output := fs.String("o", "table", "output: table or json")
	fs.SetOutput(stdout)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %s: use table or json", *output)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	findings, err := audit(ctx, c, *webhookName)
	if err != nil {
		return err
	}
	if err := renderFindings(stdout, *output, findings); err != nil {
		return err
	}
	if len(findings) > 0 {
		return errFindings
	}
	return nil
}

// audit looks, in a live cluster, for the places that still carry the
// trap meshrole exists to remove.
func audit(ctx context.Context, c client.Reader, webhookName string) ([]Finding, error) {
	var findings []Finding

	var configs admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &configs); err != nil {
		return nil, fmt.Errorf("listing mutating webhook configurations: %w", err)
	}
	for _, name := range mutate.IstioInjectorsBefore(webhookName, configs.Items) {
		findings = append(findings, Finding{checkOrdering, "MutatingWebhookConfiguration/" + name,
			fmt.Sprintf("sorts before %s, so Istio injects before meshrole's verdict: rename meshrole's configuration", webhookName)})
	}

	store := policy.NewStore()
	var namespaced v1alpha1.MeshRolePolicyList
	if err := c.List(ctx, &namespaced); err != nil {
		return nil, fmt.Errorf("listing MeshRolePolicies: %w", err)
	}
	for i := range namespaced.Items {
		store.SetMeshRolePolicy(&namespaced.Items[i])
	}
	var cluster v1alpha1.ClusterMeshRolePolicyList
	if err := c.List(ctx, &cluster); err != nil {
		return nil, fmt.Errorf("listing ClusterMeshRolePolicies: %w", err)
	}
	for i := range cluster.Items {
		store.SetClusterMeshRolePolicy(&cluster.Items[i])
	}

	var namespaces corev1.NamespaceList
	if err := c.List(ctx, &namespaces, client.MatchingLabels{policy.EnabledNamespaceLabel: "true"}); err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	for i := range namespaces.Items {
		f, err := auditNamespace(ctx, c, store, &namespaces.Items[i])
		if err != nil {
			return nil, err
		}
		findings = append(findings, f...)
	}
	return findings, nil
}

func auditNamespace(ctx context.Context, c client.Reader, store *policy.Store, ns *corev1.Namespace) ([]Finding, error) {
	var findings []Finding
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
		return nil, fmt.Errorf("listing pods in %s: %w", ns.Name, err)
	}
	hasProxy := func(p *corev1.Pod) bool {
		isProxy := func(c corev1.Container) bool { return c.Name == policy.IstioProxyContainer }
		return slices.ContainsFunc(p.Spec.Containers, isProxy) || slices.ContainsFunc(p.Spec.InitContainers, isProxy)
	}

	// Peer ports that bypass the sidecar, and the pods that should exclude them.
	bypass := map[int32]string{}
	var clients []*corev1.Pod
	for i := range pods.Items {
		pod := &pods.Items[i]
		d := store.Decide(policy.Input{Namespace: ns.Name, NamespaceLabels: labels.Set(ns.Labels), PodLabels: labels.Set(pod.Labels)})
		if d.Winner == nil {
			continue
		}
		w := d.Winner.Workload
		if w.Role == v1alpha1.RolePeerStateful && w.Peer != nil && w.Peer.Proxy == v1alpha1.PeerProxyBypassPorts {
			for _, p := range w.Peer.Ports {
				bypass[int32(p)] = d.Winner.Policy.String() + "/" + w.Name
			}
		}
		if w.Role == v1alpha1.RoleClientStateless && hasProxy(pod) {
			clients = append(clients, pod)
		}
		effect := d.Effect()
		newLabels, newAnnotations, _ := effect.Apply(pod.Labels, pod.Annotations)
		if !maps.Equal(newLabels, pod.Labels) || !maps.Equal(newAnnotations, pod.Annotations) ||
			(w.Role == v1alpha1.RolePeerStateful && w.Peer != nil && w.Peer.Proxy != v1alpha1.PeerProxyBypassPorts && hasProxy(pod)) {
			findings = append(findings, Finding{checkNeedsRestart, "Pod/" + ns.Name + "/" + pod.Name,
				fmt.Sprintf("was admitted before %s (workload %s) applied to it; recreate it to get its verdict (%s)", d.Winner.Policy, w.Name, w.Role)})
		}
	}

	for _, pod := range clients {
		excluded, _ := policy.ParsePortList(pod.Annotations[policy.IstioExcludeOutboundPorts])
		var missing []string
		for _, port := range slices.Sorted(maps.Keys(bypass)) {
			if !slices.Contains(excluded, strconv.Itoa(int(port))) {
				missing = append(missing, strconv.Itoa(int(port)))
			}
		}
		if len(missing) > 0 {
			findings = append(findings, Finding{checkBypassClients, "Pod/" + ns.Name + "/" + pod.Name,
				fmt.Sprintf("its sidecar intercepts peer ports %s that bypass the peers' sidecars, so that traffic reaches them in plain text outside mTLS; add them to the client's excludeOutboundPorts",
					strings.Join(missing, ","))})
		}
	}

	var statefulSets appsv1.StatefulSetList
	if err := c.List(ctx, &statefulSets, client.InNamespace(ns.Name)); err != nil {
		return nil, fmt.Errorf("listing statefulsets in %s: %w", ns.Name, err)
	}
	for i := range statefulSets.Items {
		sts := &statefulSets.Items[i]
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: sts.Spec.ServiceName}, &svc); err != nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
		if err != nil || selector.Empty() {
			continue
		}
		for j := range pods.Items {
			pod := &pods.Items[j]
			if selector.Matches(labels.Set(pod.Labels)) && hasProxy(pod) {
				findings = append(findings, Finding{checkPeerWithSidecar, "StatefulSet/" + ns.Name + "/" + sts.Name,
					fmt.Sprintf("behind headless Service %s, and its pod %s runs istio-proxy: if its replicas replicate among themselves, map them to peer-stateful", svc.Name, pod.Name)})
				break
			}
		}
	}
	return findings, nil
}

func renderFindings(w io.Writer, format string, findings []Finding) error {
	if format == "json" {
		if findings == nil {
			findings = []Finding{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(findings)
	}
	if len(findings) == 0 {
		_, err := fmt.Fprintln(w, "no findings")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "CHECK\tOBJECT\tFINDING")
	for _, f := range findings {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Check, f.Object, f.Message)
	}
	return tw.Flush()
}
