// Command webhook is meshrole's server: flags → options → controller-runtime
// manager. In webhook mode it answers admissions; in native mode it keeps
// MutatingAdmissionPolicies compiled from the policies instead.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
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
	"github.com/meshrole/meshrole/pkg/rollout"
	"github.com/meshrole/meshrole/pkg/status"
	"github.com/meshrole/meshrole/pkg/suggest"
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
	// AutomaticRollout runs the Automatic mode (spec.rollout: Automatic);
	// off, those policies are reported like Manual ones and nothing is evicted.
	AutomaticRollout        bool
	AutomaticRolloutTimeout time.Duration
	// SuggestEvents publishes suggest's findings as Events on the workloads.
	SuggestEvents bool
	// Native mode only.
	ExcludedNamespaces []string
	FailurePolicy      string
	OwnerClusterRole   string
	// Zap configures logging (--zap-log-level, ...).
	Zap zap.Options
}

const (
	modeWebhook = "webhook"
	modeNative  = "native"
)

// extraMetricsHandlers are served beside /metrics: none, except in a build
// with -tags pprof (pprof.go).
var extraMetricsHandlers map[string]http.Handler

func main() {
	opts, err := parseOptions(flag.CommandLine, os.Args[1:])
	if err != nil {
		// Refused before any cluster access: a mistyped flag is reported
		// as itself, not as whatever connecting would have failed with.
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts.Zap)))
	if err := run(opts); err != nil {
		ctrl.Log.WithName("setup").Error(err, "meshrole stopped", "mode", opts.Mode)
		os.Exit(1)
	}
}

// parseOptions reads the flags into options, fills in the defaults that
// depend on the environment, and validates them.
func parseOptions(fs *flag.FlagSet, args []string) (options, error) {
	var opts options
	fs.StringVar(&opts.Mode, "mode", modeWebhook, "webhook: answer admissions on the webhook port; native: compile policies into MutatingAdmissionPolicies (Kubernetes 1.36+) and serve no admissions.")
	fs.StringVar(&opts.WebhookHost, "webhook-host", "", "Address the webhook listens on (empty: all).")
	fs.IntVar(&opts.WebhookPort, "webhook-port", 9443, "Port the webhook serves HTTPS on.")
	fs.StringVar(&opts.CertDir, "cert-dir", "/etc/meshrole/tls", "Directory holding tls.crt and tls.key; reloaded when the files change.")
	fs.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (0 disables it).")
	fs.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.StringVar(&opts.WebhookConfigurationName, "webhook-configuration-name", "00-meshrole", "Name of meshrole's MutatingWebhookConfiguration, for the ordering check against Istio's injector.")
	fs.BoolVar(&opts.LeaderElect, "leader-elect", false, "Elect one replica to run the controllers that write (status); every replica serves admissions.")
	fs.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"),
		"Namespace of the leader-election Lease (default: $POD_NAMESPACE, else the pod's own namespace in a cluster).")
	fs.DurationVar(&opts.ShutdownDelay, "shutdown-delay", 5*time.Second,
		"On SIGTERM, keep serving this long before shutting down: Kubernetes removes a terminating pod's endpoint only about when it sends SIGTERM. "+
			"Requests in flight when it is over are completed. Keep it below the pod's terminationGracePeriodSeconds.")
	fs.BoolVar(&opts.AutomaticRollout, "automatic-rollout", true,
		"Let the leader restart the drifted pods of policies with spec.rollout: Automatic, as kubectl meshrole rollout does. "+
			"false: no pod is ever evicted by meshrole; Automatic policies are reported like Manual ones.")
	fs.BoolVar(&opts.SuggestEvents, "suggest-events", false,
		"Publish what kubectl meshrole suggest finds (peer-replicating workloads, their clients, policies that disagree) as Events on the workloads. "+
			"Caches every StatefulSet, Deployment, DaemonSet, Service and ConfigMap of the cluster, and needs read access to them.")
	fs.DurationVar(&opts.AutomaticRolloutTimeout, "automatic-rollout-timeout", rollout.DefaultTimeout,
		"Automatic mode: how long one pod may take, its eviction while a PodDisruptionBudget refuses it and then its Ready replacement, before the rollout stops and backs off.")
	fs.Func("native-excluded-namespaces", "Native mode: comma-separated namespaces never mutated, even when labelled (default: kube-system and $POD_NAMESPACE).", func(v string) error {
		opts.ExcludedNamespaces = strings.Split(v, ",")
		return nil
	})
	fs.StringVar(&opts.FailurePolicy, "native-failure-policy", string(admissionregistrationv1.Fail), "Native mode: failurePolicy of the generated MutatingAdmissionPolicies (Fail or Ignore).")
	fs.StringVar(&opts.OwnerClusterRole, "native-owner-cluster-role", "", "Native mode: ClusterRole that owns the generated objects, so that deleting it (uninstalling the chart) removes them.")
	opts.Zap.BindFlags(fs) // --zap-log-level, --zap-devel, ...
	// --kubeconfig is registered on flag.CommandLine by controller-runtime's config package.
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if opts.ExcludedNamespaces == nil {
		opts.ExcludedNamespaces = []string{"kube-system"}
		if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
			opts.ExcludedNamespaces = append(opts.ExcludedNamespaces, ns)
		}
	}
	return opts, opts.validate()
}

func (o *options) validate() error {
	var errs []error
	switch o.Mode {
	case modeWebhook:
		if o.WebhookPort < 1 || o.WebhookPort > 65535 {
			errs = append(errs, fmt.Errorf("--webhook-port=%d: want a port in 1-65535", o.WebhookPort))
		}
	case modeNative:
		if fp := admissionregistrationv1.FailurePolicyType(o.FailurePolicy); fp != admissionregistrationv1.Fail && fp != admissionregistrationv1.Ignore {
			errs = append(errs, fmt.Errorf("--native-failure-policy=%q: want Fail or Ignore", o.FailurePolicy))
		}
	default:
		errs = append(errs, fmt.Errorf("--mode=%q: want %s or %s", o.Mode, modeWebhook, modeNative))
	}
	if o.ShutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-delay=%v: want zero or more", o.ShutdownDelay))
	}
	if o.AutomaticRollout && o.AutomaticRolloutTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--automatic-rollout-timeout=%v: want more than zero (or --automatic-rollout=false)", o.AutomaticRolloutTimeout))
	}
	return errors.Join(errs...)
}

// run builds the manager from validated options and runs it until a signal.
func run(opts options) error {
	log := ctrl.Log.WithName("setup")
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("building the scheme: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return fmt.Errorf("building the scheme: %w", err)
	}
	config, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(config, manager.Options{
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
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr, ExtraHandlers: extraMetricsHandlers},
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
		return fmt.Errorf("creating the manager: %w", err)
	}
	shutdownDelay := opts.ShutdownDelay
	if opts.Mode == modeNative {
		shutdownDelay = 0 // no admissions to drain
	}
	ctx := delayedShutdown(ctrl.SetupSignalHandler(), shutdownDelay, log)
	if err := setupMode(ctx, mgr, opts); err != nil {
		return fmt.Errorf("setting up %s mode: %w", opts.Mode, err)
	}
	if err := status.SetupWithManager(ctx, mgr, opts.Mode == modeNative); err != nil {
		return fmt.Errorf("setting up policy status: %w", err)
	}
	if opts.AutomaticRollout {
		if !opts.LeaderElect {
			log.Info("the Automatic rollout mode runs in every replica started without --leader-elect: " +
				"run one replica, or --leader-elect (the chart does), or --automatic-rollout=false")
		}
		if err := setupAutomaticRollout(mgr, opts); err != nil {
			return fmt.Errorf("setting up the Automatic rollout mode: %w", err)
		}
	}
	if opts.SuggestEvents {
		if err := suggest.SetupPublisher(mgr, suggest.PublisherOptions{}); err != nil {
			return fmt.Errorf("setting up the suggest events: %w", err)
		}
	}
	if opts.Mode == modeNative {
		log.Info("starting", "mode", opts.Mode, "excludedNamespaces", opts.ExcludedNamespaces, "automaticRollout", opts.AutomaticRollout, "suggestEvents", opts.SuggestEvents)
	} else {
		log.Info("starting", "mode", opts.Mode, "webhookPort", opts.WebhookPort, "certDir", opts.CertDir, "automaticRollout", opts.AutomaticRollout, "suggestEvents", opts.SuggestEvents)
	}
	return mgr.Start(ctx)
}

func setupMode(ctx context.Context, mgr manager.Manager, opts options) error {
	switch opts.Mode {
	case modeWebhook:
		return mutate.SetupWithManager(ctx, mgr, opts.WebhookConfigurationName)
	case modeNative:
		r := &native.Reconciler{
			Client: mgr.GetClient(),
			Options: native.Options{
				FailurePolicy:      admissionregistrationv1.FailurePolicyType(opts.FailurePolicy),
				ExcludedNamespaces: opts.ExcludedNamespaces,
			},
		}
		if opts.OwnerClusterRole != "" {
			owner, err := native.ClusterRoleOwner(ctx, mgr.GetAPIReader(), opts.OwnerClusterRole)
			if err != nil {
				return err
			}
			r.Owner = owner
		}
		return r.SetupWithManager(mgr)
	default: // refused by validate
		return fmt.Errorf("--mode=%q: want %s or %s", opts.Mode, modeWebhook, modeNative)
	}
}

// setupAutomaticRollout adds the Automatic mode, in either mode: drift is
// decided by the same engine whoever stamps the verdicts. Its rollouts read
// pods from the API server, not the cache: the cache holds only pod metadata
// (status.TransformPodMetadata), and a cached read of whole pods would start
// an informer holding every pod of the cluster.
func setupAutomaticRollout(mgr manager.Manager, opts options) error {
	live, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return fmt.Errorf("creating the rollout's API client: %w", err)
	}
	a := &rollout.Automatic{
		Policies: mgr.GetCache(),
		Client:   live,
		Recorder: mgr.GetEventRecorder("meshrole"),
		Runner:   rollout.Runner{Timeout: opts.AutomaticRolloutTimeout},
	}
	return a.SetupWithManager(mgr)
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
