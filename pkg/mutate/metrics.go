package mutate

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts admissions by outcome and role. Latency comes from
// controller-runtime's controller_runtime_webhook_latency_seconds, which
// instruments every registered webhook path.
type Metrics struct {
	admissions *prometheus.CounterVec
}

// NewMetrics creates meshrole's admission metrics and registers them.
func NewMetrics(registerer prometheus.Registerer) *Metrics {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshrole_admissions_total",
			Help: "Pod admissions answered by meshrole, by outcome (patched, unchanged, unmatched, dry-run, already-injected, error) and role.",
		}, []string{"outcome", "role"}),
	}
	registerer.MustRegister(m.admissions)
	return m
}

// Admission counts one admission.
func (m *Metrics) Admission(outcome, role string) {
	m.admissions.WithLabelValues(outcome, role).Inc()
}
