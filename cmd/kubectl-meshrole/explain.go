package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/spf13/cobra"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy"
)

// Explanation is what explain reports for one workload.
type Explanation struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Role, Policy and Workload are the enforced verdict; empty when none.
	Role     string         `json:"role,omitempty"`
	Policy   string         `json:"policy,omitempty"`
	Workload string         `json:"workload,omitempty"`
	Matches  []MatchSummary `json:"matches,omitempty"`
	// Labels and Annotations are the keys the webhook would change.
	Labels      []Change `json:"labels,omitempty"`
	Annotations []Change `json:"annotations,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
	// Refused is the webhook's refusal message, if it would refuse the pod.
	Refused string `json:"refused,omitempty"`
}

// MatchSummary is one policy entry that matched, and what became of it.
type MatchSummary struct {
	Policy   string `json:"policy"`
	Workload string `json:"workload"`
	Role     string `json:"role"`
	Priority int32  `json:"priority"`
	Mode     string `json:"mode"`
	// Outcome: winner, conflict (tied with another role and lost),
	// dry-run (a DryRun policy that would win), or outranked.
	Outcome string `json:"outcome"`
}

// Change is one label or annotation before and after; nil means absent.
type Change struct {
	Key    string  `json:"key"`
	Before *string `json:"before,omitempty"`
	After  *string `json:"after,omitempty"`
}

func init() { addSubcommand(NewExplainCommand) }

// explainOptions are explain's flags.
type explainOptions struct {
	files           fileFlags
	namespaceLabels string
	output          structuredOutput
}

// NewExplainCommand is `kubectl meshrole explain`.
func NewExplainCommand(streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) *cobra.Command {
	var o explainOptions
	cmd := &cobra.Command{
		Use:   "explain -f FILE [-f FILE ...] [-n NAMESPACE] [--namespace-labels k=v,...] [-o table|json|yaml]",
		Short: "Offline: what the webhook would do to the pods of the workloads in the files",
		Long: `Offline: for each Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob
in the files, which policies match its pods, which wins, and the exact labels and
annotations the webhook would write. Objects that name no namespace are decided in
the namespace of -n (else the current context's, else default).`,
		Example: `  kubectl meshrole explain -f policy.yaml -f deployment.yaml -n shop
  kubectl meshrole explain -R -f manifests/ -o yaml
  helm template my-app ./chart | kubectl meshrole explain -f - -f policy.yaml`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return o.run(streams.Out, configFlags)
		},
	}
	o.files.addFlags(cmd, "a file of policies and workloads (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Namespace)")
	cmd.Flags().StringVar(&o.namespaceLabels, "namespace-labels", "", "labels of the namespace, k=v,k2=v2 (default: from a Namespace in the files, else meshrole.io/enabled=true)")
	o.output.addFlags(cmd)
	return cmd
}

func (o *explainOptions) run(stdout io.Writer, configFlags *genericclioptions.ConfigFlags) error {
	if err := o.output.validate(); err != nil {
		return err
	}
	var flagLabels map[string]string
	if o.namespaceLabels != "" {
		set, err := labels.ConvertSelectorToLabelsMap(o.namespaceLabels)
		if err != nil {
			return fmt.Errorf("--namespace-labels: %w", err)
		}
		flagLabels = set
	}
	namespace, err := offlineNamespace(configFlags)
	if err != nil {
		return err
	}
	docs, err := o.files.read("explain")
	if err != nil {
		return err
	}

	store := policy.NewStore()
	namespaceLabels := map[string]map[string]string{}
	var workloads []policy.Document
	for _, doc := range docs {
		isPolicy, err := store.Add(doc, namespace)
		if err != nil {
			return err
		}
		switch {
		case isPolicy:
		case doc.Kind == "Namespace":
			var ns metav1.PartialObjectMetadata
			if err := json.Unmarshal(doc.Raw, &ns); err != nil {
				return fmt.Errorf("reading a Namespace: %w", err)
			}
			namespaceLabels[ns.Name] = ns.Labels
		default:
			workloads = append(workloads, doc)
		}
	}
	labelsOf := func(ns string) map[string]string {
		if flagLabels != nil {
			return flagLabels
		}
		if l, ok := namespaceLabels[ns]; ok {
			return l
		}
		return map[string]string{policy.EnabledNamespaceLabel: "true"}
	}

	var out []Explanation
	for _, doc := range workloads {
		e, ok, err := explain(doc, namespace, store, labelsOf)
		if err != nil {
			return err
		}
		if ok {
			out = append(out, e)
		}
	}
	if o.output.format != "table" {
		return o.output.print(stdout, out)
	}
	return renderExplanations(stdout, out)
}

// explain runs one workload's pod through the very handler the webhook
// serves, so that what it prints is what the webhook would do.
func explain(doc policy.Document, defaultNamespace string, store *policy.Store, labelsOf func(string) map[string]string) (Explanation, bool, error) {
	pod, name, namespace, ok, err := podOf(doc)
	if err != nil || !ok {
		return Explanation{}, ok, err
	}
	if namespace == "" {
		namespace = defaultNamespace
	}
	e := Explanation{Kind: doc.Kind, Name: name, Namespace: namespace}
	nsLabels := labelsOf(namespace)
	if nsLabels[policy.EnabledNamespaceLabel] != "true" {
		e.Warnings = append(e.Warnings, fmt.Sprintf("namespace %s is not labelled %s=true: the webhook never sees its pods", namespace, policy.EnabledNamespaceLabel))
	}

	decision := store.Decide(policy.Input{Namespace: namespace, NamespaceLabels: labels.Set(nsLabels), PodLabels: labels.Set(pod.Labels)})
	e.Matches = summarizeMatches(decision)
	if decision.Winner != nil {
		e.Role, e.Policy, e.Workload = string(decision.Winner.Role()), decision.Winner.Policy.String(), decision.Winner.Workload.Name
	}

	raw, err := json.Marshal(pod)
	if err != nil {
		return e, true, err
	}
	mutator := &mutate.PodMutator{
		Policies:        store,
		NamespaceLabels: func(context.Context, string) (map[string]string, error) { return nsLabels, nil },
	}
	resp := mutator.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "explain",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Operation: admissionv1.Create,
		Namespace: namespace,
		Object:    runtime.RawExtension{Raw: raw},
	}})
	e.Warnings = append(e.Warnings, resp.Warnings...)
	if !resp.Allowed {
		if resp.Result != nil {
			e.Refused = resp.Result.Message
		}
		return e, true, nil
	}
	if len(resp.Patches) > 0 {
		patchJSON, err := json.Marshal(resp.Patches)
		if err != nil {
			return e, true, err
		}
		patch, err := jsonpatch.DecodePatch(patchJSON)
		if err != nil {
			return e, true, err
		}
		patched, err := patch.Apply(raw)
		if err != nil {
			return e, true, fmt.Errorf("%s %s: the webhook's patch does not apply: %w", doc.Kind, name, err)
		}
		var after podTemplate
		if err := json.Unmarshal(patched, &after); err != nil {
			return e, true, err
		}
		e.Labels = changes(pod.Labels, after.Labels)
		e.Annotations = changes(pod.Annotations, after.Annotations)
	}
	return e, true, nil
}

func summarizeMatches(d policy.Decision) []MatchSummary {
	var out []MatchSummary
	for i := range d.Matches {
		m := &d.Matches[i]
		outcome := "outranked"
		switch {
		case d.Winner == m:
			outcome = "winner"
		case d.DryRun == m:
			outcome = "dry-run"
		case slices.ContainsFunc(d.Conflicts, func(c policy.Match) bool { return c.Policy == m.Policy }):
			outcome = "conflict"
		}
		out = append(out, MatchSummary{
			Policy: m.Policy.String(), Workload: m.Workload.Name, Role: string(m.Role()),
			Priority: m.Priority, Mode: string(m.Mode), Outcome: outcome,
		})
	}
	return out
}

func changes(before, after map[string]string) []Change {
	keys := slices.Sorted(maps.Keys(after))
	for k := range before {
		if _, ok := after[k]; !ok {
			keys = append(keys, k)
		}
	}
	var out []Change
	for _, k := range keys {
		b, hadBefore := before[k]
		a, hasAfter := after[k]
		if hadBefore == hasAfter && b == a {
			continue
		}
		c := Change{Key: k}
		if hadBefore {
			c.Before = &b
		}
		if hasAfter {
			c.After = &a
		}
		out = append(out, c)
	}
	return out
}

// podTemplate is the part of a pod or pod template explain works on.
type podTemplate struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              json.RawMessage `json:"spec,omitempty"`
}

// podOf returns the pod a workload would create: the object itself for a
// Pod, its pod template for a workload controller.
func podOf(doc policy.Document) (pod podTemplate, name, namespace string, ok bool, err error) {
	var obj struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			Template    *podTemplate `json:"template"`
			JobTemplate *struct {
				Spec struct {
					Template *podTemplate `json:"template"`
				} `json:"spec"`
			} `json:"jobTemplate"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(doc.Raw, &obj); err != nil {
		return pod, "", "", false, fmt.Errorf("reading a %s: %w", doc.Kind, err)
	}
	name, namespace = obj.Metadata.Name, obj.Metadata.Namespace
	var template *podTemplate
	switch doc.Kind {
	case "Pod":
		if err := json.Unmarshal(doc.Raw, &pod); err != nil {
			return pod, "", "", false, fmt.Errorf("reading a Pod: %w", err)
		}
		return pod, name, namespace, true, nil
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController":
		template = obj.Spec.Template
	case "CronJob":
		if obj.Spec.JobTemplate != nil {
			template = obj.Spec.JobTemplate.Spec.Template
		}
	default:
		return pod, "", "", false, nil
	}
	if template == nil {
		return pod, "", "", false, fmt.Errorf("%s %s has no pod template", doc.Kind, name)
	}
	pod = *template
	pod.GenerateName = name + "-"
	return pod, name, namespace, true, nil
}

// renderExplanations is explain's table: one line per workload, then each
// workload's matches and changes.
func renderExplanations(w io.Writer, out []Explanation) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "WORKLOAD\tNAMESPACE\tROLE\tPOLICY\tENTRY\tCHANGES")
	for _, e := range out {
		_, _ = fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%d\n", e.Kind, e.Name, e.Namespace,
			orDash(e.Role), orDash(e.Policy), orDash(e.Workload), len(e.Labels)+len(e.Annotations))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range out {
		_, _ = fmt.Fprintf(w, "\n%s/%s (namespace %s)\n", e.Kind, e.Name, e.Namespace)
		if len(e.Matches) == 0 {
			_, _ = fmt.Fprintln(w, "  no policy matches: the pod is admitted unchanged")
		}
		for _, m := range e.Matches {
			_, _ = fmt.Fprintf(w, "  %-10s %s workload %s: %s (priority %d, %s)\n", m.Outcome, m.Policy, m.Workload, m.Role, m.Priority, m.Mode)
		}
		for _, c := range e.Labels {
			_, _ = fmt.Fprintf(w, "  label      %s\n", c)
		}
		for _, c := range e.Annotations {
			_, _ = fmt.Fprintf(w, "  annotation %s\n", c)
		}
		for _, warning := range e.Warnings {
			_, _ = fmt.Fprintf(w, "  warning    %s\n", warning)
		}
		if e.Refused != "" {
			_, _ = fmt.Fprintf(w, "  refused    %s\n", e.Refused)
		}
	}
	return nil
}

func (c Change) String() string {
	show := func(v *string) string {
		if v == nil {
			return "(absent)"
		}
		return fmt.Sprintf("%q", *v)
	}
	return fmt.Sprintf("%s: %s -> %s", c.Key, show(c.Before), show(c.After))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
