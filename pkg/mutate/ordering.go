package mutate

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// IstioInjectorsBefore returns the names of the mutating webhook
// configurations that hold an Istio sidecar injector and that the API server
// calls before ours: it calls them sorted by name, so such an injector decides
// about the sidecar before meshrole has stamped its verdict.
func IstioInjectorsBefore(ours string, configs []admissionregistrationv1.MutatingWebhookConfiguration) []string {
	var before []string
	for i := range configs {
		c := &configs[i]
		if c.Name < ours && isIstioInjector(c) {
			before = append(before, c.Name)
		}
	}
	slices.Sort(before)
	return before
}

func isIstioInjector(c *admissionregistrationv1.MutatingWebhookConfiguration) bool {
	if strings.HasPrefix(c.Name, "istio-sidecar-injector") || strings.HasPrefix(c.Name, "istio-revision-tag-") {
		return true
	}
	return slices.ContainsFunc(c.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool {
		return strings.HasSuffix(w.Name, "sidecar-injector.istio.io")
	})
}

// OrderingCheck reports, at start-up and then periodically, any Istio
// injector the API server would call before meshrole: in the log and in the
// gauge meshrole_istio_injectors_before_meshrole.
type OrderingCheck struct {
	reader   client.Reader
	ours     string
	interval time.Duration
	gauge    prometheus.Gauge
}

// NewOrderingCheck creates the check and registers its gauge.
func NewOrderingCheck(reader client.Reader, ours string, registerer prometheus.Registerer) *OrderingCheck {
	c := &OrderingCheck{
		reader:   reader,
		ours:     ours,
		interval: time.Minute,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshrole_istio_injectors_before_meshrole",
			Help: "Istio sidecar injector webhook configurations whose names sort before meshrole's, so the API server calls them first. Should be 0.",
		}),
	}
	registerer.MustRegister(c.gauge)
	return c
}

// Start runs the check until ctx ends.
func (c *OrderingCheck) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("ordering-check")
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		var list admissionregistrationv1.MutatingWebhookConfigurationList
		if err := c.reader.List(ctx, &list); err != nil {
			logger.Error(err, "listing mutating webhook configurations")
		} else {
			before := IstioInjectorsBefore(c.ours, list.Items)
			c.gauge.Set(float64(len(before)))
			if len(before) > 0 {
				logger.Info("Istio's injector runs before meshrole: its verdict comes too late for these pods; rename meshrole's configuration so it sorts first",
					"meshrole", c.ours, "istioInjectors", before)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// NeedLeaderElection is false: every replica reports what it sees.
func (c *OrderingCheck) NeedLeaderElection() bool { return false }
