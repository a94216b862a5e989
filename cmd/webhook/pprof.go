//go:build pprof

package main

import (
	"net/http"
	"net/http/pprof"
)

// Built with -tags pprof, the metrics server also serves net/http/pprof's
// profiles, for `go run ./test/bench -webhook-pprof` (docs/performance.md).
// The product's build serves none: profiles expose the process's memory.
func init() {
	extraMetricsHandlers = map[string]http.Handler{
		"/debug/pprof/":        http.HandlerFunc(pprof.Index),
		"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
	}
}
