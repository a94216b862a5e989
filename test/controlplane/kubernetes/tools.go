//go:build tools

// Package tools pins the Kubernetes control-plane binaries used by the
// integration tests (envtest) and demos. Nothing here is compiled into
// meshrole; ../build.sh builds the commands below into bin/k8s/.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
