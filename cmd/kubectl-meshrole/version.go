package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// version is the release, set by make dist with -ldflags "-X main.version=...".
var version = "dev"

func init() { addSubcommand(NewVersionCommand) }

// Version is what `kubectl meshrole version` reports.
type Version struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// NewVersionCommand is `kubectl meshrole version`.
func NewVersionCommand(streams genericiooptions.IOStreams, _ *genericclioptions.ConfigFlags) *cobra.Command {
	output := structuredOutput{}
	cmd := &cobra.Command{
		Use:   "version [-o json|yaml]",
		Short: "The plugin's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := output.validate(); err != nil {
				return err
			}
			v := currentVersion()
			if output.format != "table" {
				return output.print(streams.Out, v)
			}
			commit := ""
			if v.Commit != "" {
				commit = " " + v.Commit
			}
			_, err := fmt.Fprintf(streams.Out, "kubectl-meshrole %s%s (%s, %s)\n", v.Version, commit, v.GoVersion, v.Platform)
			return err
		},
	}
	output.addFlags(cmd)
	return cmd
}

func currentVersion() Version {
	v := Version{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}
