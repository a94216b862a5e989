package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/resource"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// fileFlags are kubectl's -f, -R and -k, read by cli-runtime's resource.Builder.
type fileFlags struct {
	resource.FilenameOptions
}

func (f *fileFlags) addFlags(cmd *cobra.Command, what string) {
	cmd.Flags().StringSliceVarP(&f.Filenames, "filename", "f", nil, what+"; a file, a directory, or - for stdin; repeatable")
	cmd.Flags().BoolVarP(&f.Recursive, "recursive", "R", false, "read the directories given with -f recursively")
	cmd.Flags().StringVarP(&f.Kustomize, "kustomize", "k", "", "a kustomization directory to build and read")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	_ = cmd.MarkFlagDirname("kustomize")
}

// read returns every object of the files, in order, Lists flattened. It
// never calls the API server: the files may hold kinds it does not serve.
func (f *fileFlags) read(command string) ([]policy.Document, error) {
	if len(f.Filenames) == 0 && f.Kustomize == "" {
		return nil, fmt.Errorf("%s needs at least one -f file", command)
	}
	infos, err := resource.NewLocalBuilder().
		Unstructured().
		FilenameParam(false, &f.FilenameOptions).
		Flatten().
		Do().
		Infos()
	if err != nil {
		return nil, err
	}
	docs := make([]policy.Document, 0, len(infos))
	for _, info := range infos {
		raw, err := json.Marshal(info.Object)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", info.Source, err)
		}
		gvk := info.Object.GetObjectKind().GroupVersionKind()
		docs = append(docs, policy.Document{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Raw: raw})
	}
	return docs, nil
}

// offlineNamespace is where explain and native put objects that name no
// namespace: -n, else the current context's namespace, else default, as
// kubectl apply -f would.
func offlineNamespace(configFlags *genericclioptions.ConfigFlags) (string, error) {
	ns, _, err := configFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("reading the kubeconfig for the default namespace: %w", err)
	}
	return ns, nil
}

// explicitNamespace is -n as given on the command line, "" without it.
func explicitNamespace(configFlags *genericclioptions.ConfigFlags) string {
	if configFlags.Namespace == nil {
		return ""
	}
	return *configFlags.Namespace
}

// newClient is a client for the cluster of the kubeconfig flags, knowing
// Kubernetes' own types and meshrole's.
func newClient(configFlags *genericclioptions.ConfigFlags) (client.Client, error) {
	config, err := configFlags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(config, client.Options{Scheme: scheme})
}

// structuredOutput is -o for meshrole's own reports (findings,
// explanations): table, or their JSON shape as JSON or YAML.
type structuredOutput struct{ format string }

var structuredFormats = []string{"table", "json", "yaml"}

func (o *structuredOutput) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.format, "output", "o", "table", "output format: "+strings.Join(structuredFormats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(structuredFormats, cobra.ShellCompDirectiveNoFileComp))
}

func (o *structuredOutput) validate() error {
	if !slices.Contains(structuredFormats, o.format) {
		return fmt.Errorf("-o %s: use one of %s", o.format, strings.Join(structuredFormats, ", "))
	}
	return nil
}

// print writes v as JSON or YAML; the table is each command's own.
func (o *structuredOutput) print(w io.Writer, v any) error {
	switch o.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return errors.New("no table for this output")
}

// registerKubeconfigCompletions completes --context, --cluster and --user
// from the kubeconfig, and -n from the cluster's namespaces.
func registerKubeconfigCompletions(root *cobra.Command, configFlags *genericclioptions.ConfigFlags) {
	fromKubeconfig := func(names func(clientcmdapi.Config) []string) cobra.CompletionFunc {
		return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			raw, err := configFlags.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return names(raw), cobra.ShellCompDirectiveNoFileComp
		}
	}
	_ = root.RegisterFlagCompletionFunc("context", fromKubeconfig(func(c clientcmdapi.Config) []string { return slices.Sorted(maps.Keys(c.Contexts)) }))
	_ = root.RegisterFlagCompletionFunc("cluster", fromKubeconfig(func(c clientcmdapi.Config) []string { return slices.Sorted(maps.Keys(c.Clusters)) }))
	_ = root.RegisterFlagCompletionFunc("user", fromKubeconfig(func(c clientcmdapi.Config) []string { return slices.Sorted(maps.Keys(c.AuthInfos)) }))
	_ = root.RegisterFlagCompletionFunc("namespace", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		c, err := newClient(configFlags)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var list corev1.NamespaceList
		if err := c.List(ctx, &list); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, ns := range list.Items {
			names = append(names, ns.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
}
