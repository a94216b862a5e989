package mutate

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts admissions by outcome and role, and namespace-cache misses.
// Latency comes from controller-runtime's
// controller_runtime_webhook_latency_seconds, which instruments every
// registered webhook path.
type Metrics struct {
	admissions      *prometheus.CounterVec
	namespaceMisses *prometheus.CounterVec
}

var (
	_ AdmissionMetrics     = &Metrics{}
	_ NamespaceCacheMisses = &Metrics{}
)

// NewMetrics creates meshrole's admission metrics and registers them.
func NewMetrics(registerer prometheus.Registerer) *Metrics {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshrole_admissions_total",
			Help: "Pod admissions answered by meshrole, by outcome (patched, unchanged, unmatched, dry-run, already-injected, error) and role; server-side dry-run requests are not counted.",
		}, []string{"outcome", "role"}),
		namespaceMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshrole_namespace_cache_misses_total",
			Help: "Admissions whose namespace was not in the informer cache yet, so it was read from the API server once, by result (found, not-found, error). Zero while the cache is warm.",
		}, []string{"result"}),
	}
	registerer.MustRegister(m.admissions, m.namespaceMisses)
	return m
}

// NamespaceCacheMiss counts one live namespace read.
func (m *Metrics) NamespaceCacheMiss(result string) {
	m.namespaceMisses.WithLabelValues(result).Inc()
}

// Admission counts one admission.
func (m *Metrics) Admission(outcome Outcome, role string) {
	m.admissions.WithLabelValues(string(outcome), role).Inc()
}
