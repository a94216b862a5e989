// Command kubectl-meshrole is meshrole's kubectl plugin:
//
//	kubectl meshrole explain -f policy.yaml -f workload.yaml
//	kubectl meshrole native -f policy.yaml
//
// explain shows, offline, what the webhook would do to a workload's pods,
// by running them through the very engine and handler the webhook serves;
// native prints what native mode would generate, with the server's compiler.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `kubectl meshrole: what meshrole's policies do to your workloads.

Commands:
  explain -f FILE [-f FILE ...] [--namespace NS] [--namespace-labels k=v,...] [-o table|json|yaml]
      Offline: for each Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob
      in the files, which policies match its pods, which wins, and the exact labels and
      annotations the webhook would write.
  audit [--kubeconfig FILE] [--webhook-configuration-name NAME] [-o table|json]
      Against a live cluster: StatefulSets behind headless Services whose pods run istio-proxy,
      pods whose Istio keys disagree with the policy that now matches them (recreate them),
      BypassPorts peers whose clients do not exclude those ports, and an Istio injector
      ordered before meshrole. Exits 1 when there are findings.
  native -f FILE [-f FILE ...] [--namespace NS] [--excluded-namespaces NS,...]
      Offline: the MutatingAdmissionPolicies and bindings native mode would keep for the
      policies in the files (the server's own compiler), and the policies it would refuse.
`

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		switch {
		case errors.Is(err, errFindings):
			os.Exit(1)
		case !errors.Is(err, flag.ErrHelp):
			fmt.Fprintln(os.Stderr, "kubectl-meshrole:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stdout, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "explain":
		return explainCommand(args[1:], stdout)
	case "audit":
		return auditCommand(args[1:], stdout)
	case "native":
		return nativeCommand(args[1:], stdout)
	case "help", "-h", "--help":
		_, _ = fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q; run kubectl meshrole help", args[0])
	}
}
