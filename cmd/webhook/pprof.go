//go:build pprof

package main

import (
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
)

// Built with -tags pprof, the metrics server also serves net/http/pprof's
// profiles, for `go run ./test/bench -webhook-pprof` (docs/performance.md).
// The product's build serves none: profiles expose the process's memory.
// MESHROLE_MEM_PROFILE_RATE sets runtime.MemProfileRate: the default samples
// one allocation per 512 KB, too coarse to break a heap of tens of MB down;
// a fine rate slows allocation, so CPU profiles of such a run are skewed.
func init() {
	extraMetricsHandlers = map[string]http.Handler{
		"/debug/pprof/":        http.HandlerFunc(pprof.Index),
		"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
	}
	if rate, err := strconv.Atoi(os.Getenv("MESHROLE_MEM_PROFILE_RATE")); err == nil && rate > 0 {
		runtime.MemProfileRate = rate
	}
}
