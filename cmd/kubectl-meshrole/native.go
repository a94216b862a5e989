package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/native"
	"github.com/meshrole/meshrole/pkg/policy"
)

func init() { addSubcommand(NewNativeCommand) }

// nativeOptions are native's flags.
type nativeOptions struct {
	files              fileFlags
	excludedNamespaces []string
	print              *genericclioptions.PrintFlags
}

// NewNativeCommand is `kubectl meshrole native`.
func NewNativeCommand(streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) *cobra.Command {
	o := nativeOptions{print: genericclioptions.NewPrintFlags("")}
	cmd := &cobra.Command{
		Use:   "native -f FILE [-f FILE ...] [-n NAMESPACE] [--excluded-namespaces NS,...] [-o yaml|json|name|jsonpath=...]",
		Short: "Offline: the MutatingAdmissionPolicies native mode would keep for the policies in the files",
		Long: `Offline: the MutatingAdmissionPolicies and bindings native mode would keep for the
policies in the files (the server's own compiler), and the policies it would refuse.
MeshRolePolicies that name no namespace are in the namespace of -n (else the current
context's, else default).

Without -o it prints the objects as YAML documents with the refusals as comments on
top; with -o (kubectl's printers) it prints them as one List and the refusals on stderr.`,
		Example: `  kubectl meshrole native -f policy.yaml
  kubectl meshrole native -R -f policies/ -n shop -o name
  kubectl meshrole native -f policy.yaml -o jsonpath='{.items[*].metadata.name}'`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return o.run(streams, configFlags)
		},
	}
	o.files.addFlags(cmd, "a file of policies (other objects are skipped)")
	cmd.Flags().StringSliceVar(&o.excludedNamespaces, "excluded-namespaces", []string{"kube-system"}, "namespaces never mutated, comma-separated (the chart adds its own namespace)")
	o.print.AddFlags(cmd)
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(o.print.AllowedFormats(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (o *nativeOptions) run(streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) error {
	var printer printers.ResourcePrinter
	if *o.print.OutputFormat != "" {
		p, err := o.print.ToPrinter()
		if err != nil {
			return err
		}
		printer = p
	}
	namespace, err := offlineNamespace(configFlags)
	if err != nil {
		return err
	}
	docs, err := o.files.read("native")
	if err != nil {
		return err
	}
	store := policy.NewStore()
	for _, doc := range docs {
		if _, err := store.Add(doc, namespace); err != nil {
			return err
		}
	}
	plan := store.Plan()
	objs, err := native.Compile(&plan, native.Options{ExcludedNamespaces: o.excludedNamespaces}, native.Coverage{})
	if err != nil {
		return err
	}
	var refusals []string
	for _, ref := range slices.SortedFunc(maps.Keys(plan.Refused), func(a, b policy.Ref) int {
		return strings.Compare(a.String(), b.String())
	}) {
		refusals = append(refusals, fmt.Sprintf("# refused: %s: %s\n", ref, strings.Join(plan.Refused[ref], "; ")))
	}
	var objects []runtime.Object
	for i := range objs {
		objects = append(objects, &objs[i].Policy, &objs[i].Binding)
	}

	if printer == nil {
		return printNativeDocuments(streams.Out, refusals, objects)
	}
	for _, r := range refusals {
		if _, err := io.WriteString(streams.ErrOut, r); err != nil {
			return err
		}
	}
	if err := setKinds(objects); err != nil {
		return err
	}
	// kubectl's name printer takes one object at a time, the others a List.
	if *o.print.OutputFormat == "name" {
		for _, obj := range objects {
			if err := printer.PrintObj(obj, streams.Out); err != nil {
				return err
			}
		}
		return nil
	}
	list := &corev1.List{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("List"))
	for _, obj := range objects {
		list.Items = append(list.Items, runtime.RawExtension{Object: obj})
	}
	return printer.PrintObj(list, streams.Out)
}

// printNativeDocuments is native's output without -o: the refusals as YAML
// comments, then one YAML document per object, as pkg/native's golden files
// show them.
func printNativeDocuments(w io.Writer, refusals []string, objects []runtime.Object) error {
	for _, r := range refusals {
		if _, err := io.WriteString(w, r); err != nil {
			return err
		}
	}
	for _, obj := range objects {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// setKinds gives each object its apiVersion and kind, which the compiler
// leaves empty and kubectl's printers need.
func setKinds(objects []runtime.Object) error {
	for _, obj := range objects {
		gvk, err := apiutil.GVKForObject(obj, clientgoscheme.Scheme)
		if err != nil {
			return err
		}
		obj.GetObjectKind().SetGroupVersionKind(gvk)
	}
	return nil
}
