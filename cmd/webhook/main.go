// Command webhook is meshrole's admission webhook server: flags → options →
// controller-runtime manager.
package main

import (
	"crypto/tls"
	"flag"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/status"
)

// options are the server's settings.
type options struct {
	WebhookHost              string
	WebhookPort              int
	CertDir                  string
	MetricsAddr              string
	ProbeAddr                string
	WebhookConfigurationName string
	LeaderElect              bool
	LeaderElectionNamespace  string
}

func main() {
	var opts options
	flag.StringVar(&opts.WebhookHost, "webhook-host", "", "Address the webhook listens on (empty: all).")
	flag.IntVar(&opts.WebhookPort, "webhook-port", 9443, "Port the webhook serves HTTPS on.")
	flag.StringVar(&opts.CertDir, "cert-dir", "/etc/meshrole/tls", "Directory holding tls.crt and tls.key; reloaded when the files change.")
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (0 disables it).")
	flag.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.StringVar(&opts.WebhookConfigurationName, "webhook-configuration-name", "00-meshrole", "Name of meshrole's MutatingWebhookConfiguration, for the ordering check against Istio's injector.")
	flag.BoolVar(&opts.LeaderElect, "leader-elect", false, "Elect one replica to run the controllers that write (status); every replica serves admissions.")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the leader-election Lease (default: $POD_NAMESPACE, else the pod's own namespace in a cluster).")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine) // --zap-log-level, --zap-devel, ...
	// --kubeconfig is registered by controller-runtime's config package.
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		log.Error(err, "building the scheme")
		os.Exit(1)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		log.Error(err, "building the scheme")
		os.Exit(1)
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), manager.Options{
		Scheme: scheme,
		// Policies, namespaces and pod metadata are cached; their
		// managedFields are never read and would be most of the memory.
		Cache:                   cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.ProbeAddr,
		LeaderElection:          opts.LeaderElect,
		LeaderElectionID:        "meshrole.io",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:     opts.WebhookHost,
			Port:     opts.WebhookPort,
			CertDir:  opts.CertDir,
			CertName: "tls.crt",
			KeyName:  "tls.key",
			TLSOpts:  []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }},
		}),
	})
	if err != nil {
		log.Error(err, "creating the manager")
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := mutate.SetupWithManager(ctx, mgr, opts.WebhookConfigurationName); err != nil {
		log.Error(err, "setting up meshrole")
		os.Exit(1)
	}
	if err := status.SetupWithManager(ctx, mgr); err != nil {
		log.Error(err, "setting up policy status")
		os.Exit(1)
	}
	log.Info("starting", "webhookPort", opts.WebhookPort, "certDir", opts.CertDir)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "running the manager")
		os.Exit(1)
	}
}
