//go:build tools

// Package tools pins the etcd binary used by the integration tests
// (envtest). The etcd main package is the root package of module
// go.etcd.io/etcd/server/v3 (server/main.go, a wrapper around
// etcdmain.Main); ../build.sh builds it into bin/k8s/etcd.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
