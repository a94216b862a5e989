package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

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

func init() { addSubcommand(NewAuditCommand) }

// auditOptions are audit's flags.
type auditOptions struct {
	webhookName   string
	allNamespaces bool
	output        structuredOutput
}

// NewAuditCommand is `kubectl meshrole audit`.
func NewAuditCommand(streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) *cobra.Command {
	var o auditOptions
	cmd := &cobra.Command{
		Use:   "audit [-n NAMESPACE | -A] [--webhook-configuration-name NAME] [-o table|json|yaml]",
		Short: "Against a live cluster: where meshrole's traps still are; exits 1 on findings",
		Long: `Against the cluster of the current kubeconfig context (--kubeconfig, --context, --as, ...):
StatefulSets behind headless Services whose pods run istio-proxy, pods whose Istio keys
disagree with the policy that now matches them (recreate them), BypassPorts peers whose
clients do not exclude those ports, and an Istio injector ordered before meshrole.

It looks at every namespace labelled meshrole.io/enabled=true (-A, the default), or
only at the namespace of -n. The injector order is cluster-wide and always checked.
Exits 1 when there are findings.`,
		Example: `  kubectl meshrole audit
  kubectl meshrole audit -n shop --context prod -o yaml
  kubectl meshrole audit --as jane --as-group team-shop -n shop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), streams, configFlags)
		},
	}
	cmd.Flags().StringVar(&o.webhookName, "webhook-configuration-name", "00-meshrole", "name of meshrole's MutatingWebhookConfiguration")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "audit every enabled namespace (the default without -n)")
	o.output.addFlags(cmd)
	return cmd
}

func (o *auditOptions) run(ctx context.Context, streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) error {
	if err := o.output.validate(); err != nil {
		return err
	}
	namespace := explicitNamespace(configFlags)
	if o.allNamespaces && namespace != "" {
		return fmt.Errorf("-n %s and -A: pass one of them", namespace)
	}
	c, err := newClient(configFlags)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	scope := auditScope{webhookName: o.webhookName, namespace: namespace, warnings: streams.ErrOut}
	findings, err := audit(ctx, c, scope)
	if err != nil {
		return err
	}
	if o.output.format == "table" {
		err = renderFindings(streams.Out, findings)
	} else {
		if findings == nil {
			findings = []Finding{}
		}
		err = o.output.print(streams.Out, findings)
	}
	if err != nil {
		return err
	}
	if len(findings) > 0 {
		return errFindings
	}
	return nil
}

// auditScope is what one audit looks at.
type auditScope struct {
	webhookName string
	// namespace limits the audit to one namespace; "" is every enabled one.
	namespace string
	// warnings receives what the audit could not look at, and why.
	warnings io.Writer
}

// audit looks, in a live cluster, for the places that still carry the
// trap meshrole exists to remove.
func audit(ctx context.Context, c client.Reader, scope auditScope) ([]Finding, error) {
	var findings []Finding

	var configs admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &configs); err != nil {
		return nil, fmt.Errorf("listing mutating webhook configurations: %w", err)
	}
	for _, name := range mutate.IstioInjectorsBefore(scope.webhookName, configs.Items) {
		findings = append(findings, Finding{checkOrdering, "MutatingWebhookConfiguration/" + name,
			fmt.Sprintf("sorts before %s, so Istio injects before meshrole's verdict: rename meshrole's configuration", scope.webhookName)})
	}

	store, err := clusterPolicies(ctx, c, scope.namespace)
	if err != nil {
		return nil, err
	}

	namespaces, err := enabledNamespaces(ctx, c, scope)
	if err != nil {
		return nil, err
	}
	for i := range namespaces {
		f, err := auditNamespace(ctx, c, store, &namespaces[i])
		if err != nil {
			return nil, err
		}
		findings = append(findings, f...)
	}
	return findings, nil
}

// enabledNamespaces are the namespaces of the scope that the webhook sees.
func enabledNamespaces(ctx context.Context, c client.Reader, scope auditScope) ([]corev1.Namespace, error) {
	if scope.namespace == "" {
		var list corev1.NamespaceList
		if err := c.List(ctx, &list, client.MatchingLabels{policy.EnabledNamespaceLabel: "true"}); err != nil {
			return nil, fmt.Errorf("listing namespaces: %w", err)
		}
		return list.Items, nil
	}
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: scope.namespace}, &ns); err != nil {
		return nil, fmt.Errorf("reading namespace %s: %w", scope.namespace, err)
	}
	if ns.Labels[policy.EnabledNamespaceLabel] != "true" {
		_, _ = fmt.Fprintf(scope.warnings, "Warning: namespace %s is not labelled %s=true: the webhook never sees its pods, so only the injector order is audited\n",
			ns.Name, policy.EnabledNamespaceLabel)
		return nil, nil
	}
	return []corev1.Namespace{ns}, nil
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
		// The same drift check as kubectl meshrole rollout, plus what only
		// a whole pod shows: Istio's proxy among the containers of a peer
		// that should have none.
		drift := policy.DetectDrift(pod.Labels, pod.Annotations, d)
		if d.Winner != nil && d.Winner.Role() == v1alpha1.RolePeerStateful && hasProxy(pod) &&
			(d.Winner.Workload.Peer == nil || d.Winner.Workload.Peer.Proxy != v1alpha1.PeerProxyBypassPorts) &&
			!slices.ContainsFunc(drift, func(x policy.Drift) bool { return x.Reason == policy.DriftSidecarOnPeer }) {
			drift = append(drift, policy.Drift{Reason: policy.DriftSidecarOnPeer, Detail: "it runs istio-proxy, which its verdict keeps out"})
		}
		if len(drift) > 0 {
			findings = append(findings, Finding{checkNeedsRestart, "Pod/" + ns.Name + "/" + pod.Name,
				fmt.Sprintf("differs from what it would get now (%s); kubectl meshrole rollout restarts it", driftSummary(drift))})
		}
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

// renderFindings is audit's table.
func renderFindings(w io.Writer, findings []Finding) error {
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

// clusterPolicies is the decision engine over the cluster's policies: the
// MeshRolePolicies of namespace ("" for all) and every ClusterMeshRolePolicy.
func clusterPolicies(ctx context.Context, c client.Reader, namespace string) (*policy.Store, error) {
	store := policy.NewStore()
	var namespaced v1alpha1.MeshRolePolicyList
	if err := c.List(ctx, &namespaced, client.InNamespace(namespace)); err != nil {
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
	return store, nil
}

// driftSummary is the drift's reasons and what each says.
func driftSummary(drift []policy.Drift) string {
	parts := make([]string, len(drift))
	for i, d := range drift {
		parts[i] = d.String()
	}
	return strings.Join(parts, "; ")
}
