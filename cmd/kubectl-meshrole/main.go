// Command kubectl-meshrole is meshrole's kubectl plugin:
//
//	kubectl meshrole explain -f policy.yaml -f workload.yaml -n shop
//	kubectl meshrole audit --context prod
//	kubectl meshrole native -f policy.yaml -o yaml
//
// explain shows, offline, what the webhook would do to a workload's pods,
// by running them through the very engine and handler the webhook serves;
// audit looks for meshrole's traps in a live cluster; native prints what
// native mode would generate, with the server's compiler.
//
// The command line is kubectl's own: cobra commands, k8s.io/cli-runtime's
// ConfigFlags for every kubeconfig flag (--kubeconfig, --context, -n, --as,
// ...), its printers for Kubernetes objects and its resource.Builder for -f.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// errFindings makes the command exit 1 when audit found something.
var errFindings = errors.New("findings")

// errNoCommand keeps the exit code of a bare `kubectl meshrole`: usage, then 2.
var errNoCommand = errors.New("no command given")

// A subcommand is one file: its NewXCommand constructor, registered from that
// file's init with addSubcommand.
type newSubcommand func(genericiooptions.IOStreams, *genericclioptions.ConfigFlags) *cobra.Command

var subcommands []newSubcommand

func addSubcommand(c newSubcommand) { subcommands = append(subcommands, c) }

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	os.Exit(exitCode(execute(os.Args[1:], streams), streams.ErrOut))
}

// execute runs the plugin with args as kubectl would pass them.
func execute(args []string, streams genericiooptions.IOStreams) error {
	root := NewRootCommand(streams)
	root.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	return root.Execute()
}

// exitCode is 0 on success, 1 when audit has findings, and 2 (after saying
// why on stderr) for anything else.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errFindings):
		return 1
	case errors.Is(err, errNoCommand):
		return 2
	}
	_, _ = fmt.Fprintln(stderr, "kubectl-meshrole:", err)
	return 2
}

// NewRootCommand is `kubectl meshrole` with every subcommand and kubectl's
// kubeconfig flags on all of them.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   "kubectl-meshrole",
		Short: "What meshrole's policies do to your workloads",
		Long: `kubectl meshrole: what meshrole's policies do to your workloads.

explain and native are offline: they read -f files (files, directories with -R,
- for stdin) and decide in the namespace of -n (else the context's, else default).
audit reads the cluster of the current kubeconfig context (--context, --as, ...).`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl meshrole"},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return errNoCommand
		},
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	configFlags.AddFlags(root.PersistentFlags())
	registerKubeconfigCompletions(root, configFlags)
	// A flag error names the command's help, as kubectl does.
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w\nSee '%s --help' for usage", err, cmd.CommandPath())
	})
	for _, newCommand := range subcommands {
		root.AddCommand(newCommand(streams, configFlags))
	}
	return root
}
