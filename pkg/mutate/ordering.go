package mutate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
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
// injector the API server would call before meshrole: in the log, in the
// gauge meshrole_istio_injectors_before_meshrole, and as a Warning event on
// meshrole's MutatingWebhookConfiguration (kubectl describe shows it) when
// the set of such injectors changes.
type OrderingCheck struct {
	reader   client.Reader
	recorder recorder.EventRecorder
	ours     string
	interval time.Duration
	gauge    prometheus.Gauge
	reported []string
}

// NewOrderingCheck creates the check and registers its gauge.
func NewOrderingCheck(reader client.Reader, rec recorder.EventRecorder, ours string, registerer prometheus.Registerer) *OrderingCheck {
	c := &OrderingCheck{
		reader:   reader,
		recorder: rec,
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
			c.report(logger, list.Items)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

func (c *OrderingCheck) report(logger logr.Logger, configs []admissionregistrationv1.MutatingWebhookConfiguration) {
	before := IstioInjectorsBefore(c.ours, configs)
	c.gauge.Set(float64(len(before)))
	if len(before) == 0 {
		c.reported = nil
		return
	}
	message := fmt.Sprintf("Istio's injector %s sorts before %s, so the API server calls it first and meshrole's verdict comes too late: rename %s so it sorts before every istio-* configuration",
		strings.Join(before, ", "), c.ours, c.ours)
	logger.Info("Istio's injector sorts before meshrole, so meshrole's verdict comes too late; rename meshrole's configuration so it sorts before every istio-* one",
		"meshrole", c.ours, "istioInjectors", before)
	if slices.Equal(before, c.reported) {
		return
	}
	c.reported = before
	if i := slices.IndexFunc(configs, func(m admissionregistrationv1.MutatingWebhookConfiguration) bool { return m.Name == c.ours }); i >= 0 && c.recorder != nil {
		c.recorder.Eventf(&configs[i], nil, corev1.EventTypeWarning, "IstioInjectorFirst", "CheckOrder", "%s", message)
	}
}

// NeedLeaderElection is false: every replica reports what it sees.
func (c *OrderingCheck) NeedLeaderElection() bool { return false }
