package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/suggest"
)

func init() { addSubcommand(NewSuggestCommand) }

// suggestOptions are suggest's flags.
type suggestOptions struct {
	files         fileFlags
	allNamespaces bool
	minConfidence string
	output        structuredOutput
}

// NewSuggestCommand is `kubectl meshrole suggest`.
func NewSuggestCommand(streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) *cobra.Command {
	var o suggestOptions
	cmd := &cobra.Command{
		Use:   "suggest [-f FILE ... | -n NAMESPACE | -A] [--min-confidence low|medium|high] [-o table|yaml|json]",
		Short: "Find the peer-replicating workloads and the clients that dial them, and write their policies",
		Long: `Finds the workloads whose replicas replicate among themselves (Eureka, ZooKeeper, Kafka,
Cassandra, Elasticsearch, Redis Cluster, RabbitMQ, Consul, Nacos, etcd, Hazelcast, Galera,
NATS, Akka/Pekko clusters) by their signature: a StatefulSet or Deployment behind a headless
Service, ports of a known peer protocol, a known image; and the workloads whose environment,
arguments or ConfigMaps name such a Service. See docs/suggest.md.

Offline with -f (files, directories with -R, - for stdin: helm template ... | kubectl meshrole
suggest -f -); otherwise live, in the namespace of -n (else the current context's), or in
every namespace with -A.

-o table (the default) lists the findings with their evidence; -o yaml prints ready-to-apply
MeshRolePolicies, one per namespace; -o json prints the findings and the policies. Workloads
an existing policy already treats as the catalogue recommends are reported as covered, not
suggested again; one it treats differently is reported as a disagreement.`,
		Example: `  helm template zk bitnami/zookeeper | kubectl meshrole suggest -f -
  kubectl meshrole suggest -A
  kubectl meshrole suggest -n shop -o yaml | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), streams, configFlags)
		},
	}
	o.files.addFlags(cmd, "manifests to look at instead of the cluster")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "look at every namespace of the cluster")
	cmd.Flags().StringVar(&o.minConfidence, "min-confidence", string(suggest.Medium), "report findings of at least this confidence: low, medium or high")
	_ = cmd.RegisterFlagCompletionFunc("min-confidence", cobra.FixedCompletions([]string{"low", "medium", "high"}, cobra.ShellCompDirectiveNoFileComp))
	o.output.addFlags(cmd)
	return cmd
}

func (o *suggestOptions) run(ctx context.Context, streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) error {
	if err := o.output.validate(); err != nil {
		return err
	}
	confidence := suggest.Confidence(o.minConfidence)
	switch confidence {
	case suggest.Low, suggest.Medium, suggest.High:
	default:
		return fmt.Errorf("--min-confidence %s: use low, medium or high", o.minConfidence)
	}
	inv, err := o.inventory(ctx, configFlags)
	if err != nil {
		return err
	}
	findings, err := suggest.Suggest(inv, suggest.Options{MinConfidence: confidence})
	if err != nil {
		return err
	}
	policies := suggest.Policies(findings)
	switch o.output.format {
	case "yaml":
		out, err := suggest.MarshalPolicies(policies)
		if err != nil {
			return err
		}
		if len(policies) == 0 {
			_, _ = fmt.Fprintln(streams.ErrOut, "No policy to suggest.")
		}
		_, err = streams.Out.Write(out)
		return err
	case "json":
		if findings == nil {
			findings = []suggest.Finding{}
		}
		if policies == nil {
			policies = []v1alpha1.MeshRolePolicy{}
		}
		return o.output.print(streams.Out, map[string]any{"findings": findings, "policies": policies})
	}
	return renderSuggestions(streams.Out, findings)
}

// inventory reads the -f files, or the cluster.
func (o *suggestOptions) inventory(ctx context.Context, configFlags *genericclioptions.ConfigFlags) (*suggest.Inventory, error) {
	namespace, err := offlineNamespace(configFlags)
	if err != nil {
		return nil, err
	}
	inv := &suggest.Inventory{}
	if len(o.files.Filenames) > 0 || o.files.Kustomize != "" {
		docs, err := o.files.read("suggest")
		if err != nil {
			return nil, err
		}
		for _, doc := range docs {
			if _, err := inv.AddDocument(doc, namespace); err != nil {
				return nil, err
			}
		}
		return inv, nil
	}
	if explicit := explicitNamespace(configFlags); o.allNamespaces && explicit != "" {
		return nil, fmt.Errorf("-n %s and -A: pass one of them", explicit)
	}
	c, err := newClient(configFlags)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if o.allNamespaces {
		namespace = ""
	}
	return readCluster(ctx, c, namespace)
}

// readCluster reads what suggest looks at in namespace, every namespace
// when empty. Unlike the publisher, it reads the ReplicaSets no controller
// owns: they are workloads of their own, as they are in -f's manifests.
func readCluster(ctx context.Context, c client.Reader, namespace string) (*suggest.Inventory, error) {
	return suggest.ReadInventory(ctx, c, suggest.ReadOptions{Namespace: namespace, ReplicaSets: true})
}

// renderSuggestions is the table of findings.
func renderSuggestions(w io.Writer, findings []suggest.Finding) error {
	if len(findings) == 0 {
		_, err := fmt.Fprintln(w, "No peer-replicating workload found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "NAMESPACE\tWORKLOAD\tFINDING\tSYSTEM\tCONFIDENCE\tTREATMENT\tEVIDENCE")
	for _, f := range findings {
		_, _ = fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", f.Workload.Namespace, strings.ToLower(f.Workload.Kind), f.Workload.Name,
			f.Kind, f.System, f.Confidence, treatmentText(&f), strings.Join(f.Evidence.Signals, ","))
	}
	return tw.Flush()
}

func treatmentText(f *suggest.Finding) string {
	ports := func(p []int32) string {
		s := make([]string, len(p))
		for i, n := range p {
			s[i] = strconv.Itoa(int(n))
		}
		return strings.Join(s, ",")
	}
	t := f.Treatment
	switch {
	case f.Role == v1alpha1.RolePeerStateful && t.Proxy == v1alpha1.PeerProxyBypassPorts:
		return "peer BypassPorts " + ports(t.Ports)
	case f.Role == v1alpha1.RolePeerStateful:
		return "peer " + string(t.Proxy)
	case len(t.ExcludeOutboundPorts) > 0:
		return "client excludeOutboundPorts " + ports(t.ExcludeOutboundPorts)
	default:
		return "client (no entry needed)"
	}
}
