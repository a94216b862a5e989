package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/meshrole/meshrole/pkg/native"
	"github.com/meshrole/meshrole/pkg/policy"
)

// nativeCommand prints, offline, the MutatingAdmissionPolicies and bindings
// native mode would keep for the policies in the files, with the same
// compiler the server runs, and what native mode would refuse.
func nativeCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("native", flag.ContinueOnError)
	var files stringList
	fs.Var(&files, "f", "a file of policies; repeatable, - for stdin (other objects are skipped)")
	namespace := fs.String("namespace", "default", "namespace of MeshRolePolicies that name none")
	excluded := fs.String("excluded-namespaces", "kube-system", "namespaces never mutated, comma-separated (the chart adds its own namespace)")
	fs.SetOutput(stdout)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("native needs at least one -f file")
	}
	docs, err := readFiles(files)
	if err != nil {
		return err
	}
	store := policy.NewStore()
	for _, doc := range docs {
		if _, err := store.Add(doc, *namespace); err != nil {
			return err
		}
	}
	plan := store.Plan()
	objs, err := native.Compile(&plan, native.Options{ExcludedNamespaces: strings.Split(*excluded, ",")}, native.Coverage{})
	if err != nil {
		return err
	}
	for _, ref := range slices.SortedFunc(maps.Keys(plan.Refused), func(a, b policy.Ref) int {
		return strings.Compare(a.String(), b.String())
	}) {
		if _, err := fmt.Fprintf(stdout, "# refused: %s: %s\n", ref, strings.Join(plan.Refused[ref], "; ")); err != nil {
			return err
		}
	}
	for i := range objs {
		for _, o := range []any{&objs[i].Policy, &objs[i].Binding} {
			b, err := yaml.Marshal(o)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(stdout, "---\n%s", b); err != nil {
				return err
			}
		}
	}
	return nil
}
