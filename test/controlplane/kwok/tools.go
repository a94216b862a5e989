//go:build tools

// Package tools pins kwok, the node and pod simulator the harness runs so that
// pods in the test clusters reach Running and Ready without a kubelet.
// ../build.sh builds the controller below into bin/k8s/kwok and copies kwok's
// default stages from this same module version into bin/k8s/kwok-stages.yaml.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
