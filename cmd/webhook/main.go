// Command webhook is meshrole's server: flags → options → controller-runtime
// manager. In webhook mode it answers admissions; in native mode it keeps
// MutatingAdmissionPolicies compiled from the policies instead.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/native"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/pkg/status"
)

// options are the server's settings.
type options struct {
	Mode                     string
	WebhookHost              string
	WebhookPort              int
	CertDir                  string
	MetricsAddr              string
	ProbeAddr                string
	WebhookConfigurationName string
	LeaderElect              bool
	LeaderElectionNamespace  string
	ShutdownDelay            time.Duration
	// Native mode only.
	ExcludedNamespaces []string
	FailurePolicy      string
	OwnerClusterRole   string
}

const (
	modeWebhook = "webhook"
	modeNative  = "native"
)

func main() {
	var opts options
	flag.StringVar(&opts.Mode, "mode", modeWebhook, "webhook: answer admissions on the webhook port; native: compile policies into MutatingAdmissionPolicies (Kubernetes 1.36+) and serve no admissions.")
	flag.StringVar(&opts.WebhookHost, "webhook-host", "", "Address the webhook listens on (empty: all).")
	flag.IntVar(&opts.WebhookPort, "webhook-port", 9443, "Port the webhook serves HTTPS on.")
	flag.StringVar(&opts.CertDir, "cert-dir", "/etc/meshrole/tls", "Directory holding tls.crt and tls.key; reloaded when the files change.")
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (0 disables it).")
	flag.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.StringVar(&opts.WebhookConfigurationName, "webhook-configuration-name", "00-meshrole", "Name of meshrole's MutatingWebhookConfiguration, for the ordering check against Istio's injector.")
	flag.BoolVar(&opts.LeaderElect, "leader-elect", false, "Elect one replica to run the controllers that write (status); every replica serves admissions.")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the leader-election Lease (default: $POD_NAMESPACE, else the pod's own namespace in a cluster).")
	flag.DurationVar(&opts.ShutdownDelay, "shutdown-delay", 5*time.Second,
		"On SIGTERM, keep serving this long before shutting down: Kubernetes removes a terminating pod's endpoint only about when it sends SIGTERM. "+
			"Requests in flight when it is over are completed. Keep it below the pod's terminationGracePeriodSeconds.")
	flag.Func("native-excluded-namespaces", "Native mode: comma-separated namespaces never mutated, even when labelled (default: kube-system and $POD_NAMESPACE).", func(v string) error {
		opts.ExcludedNamespaces = strings.Split(v, ",")
		return nil
	})
	flag.StringVar(&opts.FailurePolicy, "native-failure-policy", string(admissionregistrationv1.Fail), "Native mode: failurePolicy of the generated MutatingAdmissionPolicies (Fail or Ignore).")
	flag.StringVar(&opts.OwnerClusterRole, "native-owner-cluster-role", "", "Native mode: ClusterRole that owns the generated objects, so that deleting it (uninstalling the chart) removes them.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine) // --zap-log-level, --zap-devel, ...
	// --kubeconfig is registered by controller-runtime's config package.
	flag.Parse()
	if opts.ExcludedNamespaces == nil {
		opts.ExcludedNamespaces = []string{"kube-system"}
		if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
			opts.ExcludedNamespaces = append(opts.ExcludedNamespaces, ns)
		}
	}
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
		// Pods and policies keep only what their readers use
		// (docs/performance.md).
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Pod{}:                     {Transform: status.TransformPodMetadata},
				&v1alpha1.MeshRolePolicy{}:        {Transform: status.TransformPolicy},
				&v1alpha1.ClusterMeshRolePolicy{}: {Transform: status.TransformPolicy},
			},
		},
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
	shutdownDelay := opts.ShutdownDelay
	if opts.Mode == modeNative {
		shutdownDelay = 0 // no admissions to drain
	}
	ctx := delayedShutdown(ctrl.SetupSignalHandler(), shutdownDelay, log)
	if err := setupMode(ctx, mgr, opts); err != nil {
		log.Error(err, "setting up meshrole", "mode", opts.Mode)
		os.Exit(1)
	}
	if err := status.SetupWithManager(ctx, mgr, opts.Mode == modeNative); err != nil {
		log.Error(err, "setting up policy status")
		os.Exit(1)
	}
	if opts.Mode == modeNative {
		log.Info("starting", "mode", opts.Mode, "excludedNamespaces", opts.ExcludedNamespaces)
	} else {
		log.Info("starting", "mode", opts.Mode, "webhookPort", opts.WebhookPort, "certDir", opts.CertDir)
	}
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "running the manager")
		os.Exit(1)
	}
}

func setupMode(ctx context.Context, mgr manager.Manager, opts options) error {
	switch opts.Mode {
	case modeWebhook:
		return mutate.SetupWithManager(ctx, mgr, opts.WebhookConfigurationName)
	case modeNative:
		failurePolicy := admissionregistrationv1.FailurePolicyType(opts.FailurePolicy)
		if failurePolicy != admissionregistrationv1.Fail && failurePolicy != admissionregistrationv1.Ignore {
			return fmt.Errorf("--native-failure-policy=%q: want Fail or Ignore", opts.FailurePolicy)
		}
		r := &native.Reconciler{
			Client:  mgr.GetClient(),
			Options: native.Options{FailurePolicy: failurePolicy, ExcludedNamespaces: opts.ExcludedNamespaces},
		}
		if opts.OwnerClusterRole != "" {
			owner, err := native.ClusterRoleOwner(ctx, mgr.GetAPIReader(), opts.OwnerClusterRole)
			if err != nil {
				return err
			}
			r.Owner = owner
		}
		return r.SetupWithManager(mgr)
	default:
		return fmt.Errorf("--mode=%q: want %s or %s", opts.Mode, modeWebhook, modeNative)
	}
}

// delayedShutdown returns a context cancelled delay after parent is. Shutting
// down at once on SIGTERM fails admissions sent just before it: the webhook
// server closes its listener and cancels the context of connections still in
// their TLS handshake (their requests get EOF or a reset), while the API
// server may not yet know that the endpoint is gone.
func delayedShutdown(parent context.Context, delay time.Duration, log logr.Logger) context.Context {
	if delay <= 0 {
		return parent
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	go func() {
		<-parent.Done()
		log.Info("shutdown signal received; serving on before shutting down", "shutdownDelay", delay)
		time.Sleep(delay)
		cancel()
	}()
	return ctx
}
