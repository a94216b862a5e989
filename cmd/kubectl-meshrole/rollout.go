package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/rollout"
)

func init() { addSubcommand(NewRolloutCommand) }

// rolloutOptions are rollout's flags.
type rolloutOptions struct {
	allNamespaces   bool
	policy          string
	dryRun          bool
	timeout         time.Duration
	includeBarePods bool
}

// NewRolloutCommand is `kubectl meshrole rollout`.
func NewRolloutCommand(streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) *cobra.Command {
	var o rolloutOptions
	cmd := &cobra.Command{
		Use:   "rollout [-n NAMESPACE | -A] [--policy NAMESPACE/NAME|cluster/NAME] [--dry-run] [--timeout 5m] [--include-bare-pods]",
		Short: "Restart, without losing a quorum, only the pods that disagree with their verdict",
		Long: `Finds the pods whose labels and annotations differ from what the current policies would
give them (created before meshrole or before their policy, a peer still running Istio's
sidecar, a verdict from an edited or deleted policy) and restarts only those: through the
Eviction API, so PodDisruptionBudgets decide; one pod at a time per owner, a StatefulSet from
its highest ordinal down; each time waiting until the owner has replaced the pod, the
replacement is Ready and carries its verdict. It stops at the first replacement that does not,
and says why. Pods without a controller are left alone unless --include-bare-pods.

--dry-run prints the plan and changes nothing. Progress is one line per step.`,
		Example: `  kubectl meshrole rollout -n shop --dry-run
  kubectl meshrole rollout -n shop
  kubectl meshrole rollout -A --policy cluster/zookeeper --timeout 10m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), streams, configFlags)
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "every enabled namespace")
	cmd.Flags().StringVar(&o.policy, "policy", "", "only the pods this policy decides or names: NAMESPACE/NAME, or cluster/NAME")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print the plan, restart nothing")
	cmd.Flags().DurationVar(&o.timeout, "timeout", rollout.DefaultTimeout, "how long to wait for one pod: its eviction (while a budget refuses it) and its Ready replacement")
	cmd.Flags().BoolVar(&o.includeBarePods, "include-bare-pods", false, "also delete drifted pods that no controller owns (nothing recreates them)")
	return cmd
}

func (o *rolloutOptions) run(ctx context.Context, streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) error {
	scope := rollout.Scope{AllNamespaces: o.allNamespaces}
	if explicit := explicitNamespace(configFlags); o.allNamespaces && explicit != "" {
		return fmt.Errorf("-n %s and -A: pass one of them", explicit)
	}
	if !o.allNamespaces {
		ns, err := offlineNamespace(configFlags)
		if err != nil {
			return err
		}
		scope.Namespace = ns
	}
	if o.policy != "" {
		ref, ok := policy.ParseRef(o.policy)
		if !ok {
			return fmt.Errorf("--policy %q: write NAMESPACE/NAME or cluster/NAME", o.policy)
		}
		scope.Policy = &ref
	}
	c, err := newClient(configFlags)
	if err != nil {
		return err
	}
	store, err := clusterPolicies(ctx, c, scope.Namespace)
	if err != nil {
		return err
	}
	targets, err := rollout.Find(ctx, c, store, scope)
	if err != nil {
		return err
	}
	plan := rollout.NewPlan(targets, rollout.PlanOptions{IncludeBarePods: o.includeBarePods})
	if o.dryRun {
		return plan.Write(streams.Out)
	}
	runner := &rollout.Runner{Client: c, Policies: store, Timeout: o.timeout, Progress: rollout.Lines(streams.Out)}
	result, err := runner.Run(ctx, plan)
	if err != nil {
		return fmt.Errorf("rollout stopped after %d restarted: %w", result.Restarted, err)
	}
	_, err = fmt.Fprintf(streams.Out, "%d pods restarted, %d no longer needed it, %d skipped\n", result.Restarted, result.Unchanged, len(plan.Skipped))
	return err
}
