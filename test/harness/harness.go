// Package harness runs meshrole against a real control plane for the e2e
// tests (test/e2e) and the demo (test/demo): kube-apiserver and etcd through
// controller-runtime's envtest, kube-controller-manager and the meshrole
// webhook as child processes, and the webhook registered with a
// MutatingWebhookConfiguration the API server really calls.
//
// Binaries come from bin/ (make testenv, make build), or from the
// directories and files named by MESHROLE_K8S_BIN and MESHROLE_WEBHOOK_BIN.
package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshrole/meshrole/certs"
	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

const (
	// WebhookConfigurationName is the MutatingWebhookConfiguration the
	// harness registers; it sorts before every istio-* configuration.
	WebhookConfigurationName = "00-meshrole"
	// WebhookName is the webhook's name inside that configuration.
	WebhookName = "pods.meshrole.io"
	// WebhookPath is where the server answers AdmissionReviews.
	WebhookPath = mutate.Path

	// ProbeNamespace and ProbePolicy are what the harness itself creates to
	// check, end to end, that the API server calls the webhook and that the
	// webhook sees policies.
	ProbeNamespace = "meshrole-harness-probe"
	ProbePolicy    = "harness-probe"
	probeAppLabel  = "meshrole-harness-probe"

	// EnvK8sBin and EnvWebhookBin override where binaries are found.
	EnvK8sBin     = "MESHROLE_K8S_BIN"
	EnvWebhookBin = "MESHROLE_WEBHOOK_BIN"
	// EnvCRDDir overrides where the CRDs are read from.
	EnvCRDDir = "MESHROLE_CRD_DIR"

	fieldOwner = "meshrole-harness"
)

// Options configure Start. The zero value works.
type Options struct {
	// Root is the repository root; found by walking up from the working
	// directory to meshrole's go.mod when empty.
	Root string
	// CRDDir holds the CRDs to install: $MESHROLE_CRD_DIR, else
	// <root>/charts/meshrole/crds when empty.
	CRDDir string
	// WorkDir holds logs, kubeconfigs and certificates; a new temporary
	// directory when empty.
	WorkDir string
	// Progress is called with a short description before each step
	// ("starting kube-apiserver + etcd", ...). May be nil.
	Progress func(step string)
	// WebhookArgs are appended to the webhook's command line.
	WebhookArgs []string
	// FailurePolicy of the registered webhook; Fail when empty.
	FailurePolicy admissionregistrationv1.FailurePolicyType
	// Mode is the server's mode: ModeWebhook (the default) registers a
	// MutatingWebhookConfiguration; ModeNative registers none, and the server
	// keeps MutatingAdmissionPolicies instead.
	Mode Mode
	// Controllers are kube-controller-manager controllers to run on top of
	// the harness's own (WorkloadControllers): ClusterControllers for a
	// cluster whose pods run (StartCluster).
	Controllers []string
}

// Mode is meshrole's mode of operation (the server's --mode flag).
type Mode string

const (
	ModeWebhook Mode = "webhook"
	ModeNative  Mode = "native"
)

// Harness is a running control plane with meshrole registered in it.
type Harness struct {
	Root    string
	WorkDir string
	// KeepWorkDir leaves WorkDir on disk after Stop (it holds the logs).
	KeepWorkDir bool

	Env *envtest.Environment
	// Config is the admin user's REST config (system:masters).
	Config *rest.Config
	Scheme *runtime.Scheme
	// Client is a controller-runtime client for Config with Scheme
	// (client-go kinds and meshrole's policy kinds).
	Client client.Client
	// Kubeconfig is a kubeconfig file for the admin user, for kubectl.
	Kubeconfig string
	// CRDDir is where the installed CRDs came from.
	CRDDir string
	// K8sBin is the directory holding kube-apiserver, etcd, kubectl and
	// kube-controller-manager.
	K8sBin string

	// Certs is the webhook's CA and serving certificate; CertDir holds them.
	Certs   *certs.Bundle
	CertDir string

	ControllerManager *Process
	Webhook           *Webhook

	failurePolicy admissionregistrationv1.FailurePolicyType
	progress      func(string)

	// The controller manager's credentials and controllers, for
	// AddControllers.
	kcmKubeconfig string
	controllers   []string

	// What StartWebhook needs to start more replicas like Webhook, and the
	// replicas it started (Stop stops them too).
	webhookBin        string
	webhookKubeconfig string
	webhookArgs       []string
	replicas          []*Webhook
}

// Start brings everything up: envtest (kube-apiserver + etcd, meshrole's
// CRDs installed), kube-controller-manager, the webhook, and the webhook
// configuration; it returns once a pod created in an enabled namespace is
// mutated by the webhook. On error, whatever was started is stopped again.
func Start(ctx context.Context, opts Options) (h *Harness, err error) {
	h = &Harness{progress: opts.Progress, failurePolicy: opts.FailurePolicy, controllers: slices.Concat(WorkloadControllers, opts.Controllers)}
	if h.progress == nil {
		h.progress = func(string) {}
	}
	if h.failurePolicy == "" {
		h.failurePolicy = admissionregistrationv1.Fail
	}
	defer func() {
		if err != nil {
			h.KeepWorkDir = true
			if stopErr := h.Stop(); stopErr != nil {
				err = fmt.Errorf("%w (and stopping: %w)", err, stopErr)
			}
			if h.WorkDir != "" {
				err = fmt.Errorf("%w\n(logs kept in %s)", err, h.WorkDir)
			}
		}
	}()

	if h.Root = opts.Root; h.Root == "" {
		if h.Root, err = RepoRoot(); err != nil {
			return h, err
		}
	}
	if h.CRDDir = opts.CRDDir; h.CRDDir == "" {
		if h.CRDDir = os.Getenv(EnvCRDDir); h.CRDDir == "" {
			h.CRDDir = filepath.Join(h.Root, "charts", "meshrole", "crds")
		}
	}
	if h.K8sBin, err = K8sBinDir(h.Root); err != nil {
		return h, err
	}
	webhookBin, err := WebhookBinary(h.Root)
	if err != nil {
		return h, err
	}
	if h.WorkDir = opts.WorkDir; h.WorkDir == "" {
		if h.WorkDir, err = os.MkdirTemp("", "meshrole-harness-"); err != nil {
			return h, err
		}
	} else if err = os.MkdirAll(h.WorkDir, 0o755); err != nil {
		return h, err
	}

	h.Scheme = runtime.NewScheme()
	if err = clientgoscheme.AddToScheme(h.Scheme); err != nil {
		return h, err
	}
	if err = v1alpha1.AddToScheme(h.Scheme); err != nil {
		return h, err
	}

	h.progress("starting kube-apiserver + etcd")
	if err = h.startControlPlane(); err != nil {
		return h, err
	}

	h.progress("starting kube-controller-manager")
	if err = h.startControllerManager(); err != nil {
		return h, err
	}

	h.progress("starting meshrole webhook")
	if h.CertDir, err = filepath.Abs(filepath.Join(h.WorkDir, "certs")); err != nil {
		return h, err
	}
	if h.Certs, err = certs.WriteDir(h.CertDir, certs.Options{Hosts: []string{"localhost", "127.0.0.1"}}); err != nil {
		return h, err
	}
	webhookKubeconfig, err := h.writeUserKubeconfig("meshrole-webhook")
	if err != nil {
		return h, err
	}
	if opts.Mode == ModeNative {
		opts.WebhookArgs = append([]string{"--mode=native"}, opts.WebhookArgs...)
	}
	h.webhookBin, h.webhookKubeconfig, h.webhookArgs = webhookBin, webhookKubeconfig, opts.WebhookArgs
	if h.Webhook, err = newWebhook("webhook", webhookBin, h.WorkDir, h.CertDir, webhookKubeconfig, h.Certs.CAPEM, opts.WebhookArgs); err != nil {
		return h, err
	}
	if err = h.Webhook.Start(ctx); err != nil {
		return h, err
	}

	if opts.Mode != ModeNative {
		h.progress("registering MutatingWebhookConfiguration " + WebhookConfigurationName)
		if err = h.InstallWebhookConfiguration(ctx); err != nil {
			return h, err
		}
	}
	if err = h.WaitForWebhook(ctx); err != nil {
		return h, err
	}
	return h, nil
}

// StartWebhook starts one more webhook server like Webhook — same binary,
// arguments, API server user and cert dir, ports of its own, its log in
// webhook-<n>.log — and returns once it is ready (see Webhook.Start). The
// webhook configuration still names Webhook only: the API server does not
// call the new replica, a test sends it AdmissionReviews itself (as a
// Service would spread them over replicas). Stop stops it if the test has
// not.
func (h *Harness) StartWebhook(ctx context.Context) (*Webhook, error) {
	if h.Webhook == nil {
		return nil, errors.New("harness: StartWebhook before Start")
	}
	name := fmt.Sprintf("webhook-%d", len(h.replicas)+2)
	w, err := newWebhook(name, h.webhookBin, h.WorkDir, h.CertDir, h.webhookKubeconfig, h.Certs.CAPEM, h.webhookArgs)
	if err != nil {
		return nil, err
	}
	h.replicas = append(h.replicas, w)
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

func (h *Harness) startControlPlane() error {
	h.Env = &envtest.Environment{
		BinaryAssetsDirectory: h.K8sBin,
		CRDDirectoryPaths:     []string{h.CRDDir},
		ErrorIfCRDPathMissing: true,
		Scheme:                h.Scheme,
		// envtest's default admission plugins (ServiceAccount disabled) are
		// kept: pods need no service account here.
	}
	cfg, err := h.Env.Start()
	if err != nil {
		// envtest may have started some processes before failing.
		_ = h.Env.Stop()
		h.Env = nil
		return fmt.Errorf("starting kube-apiserver + etcd from %s with the CRDs in %s: %w", h.K8sBin, h.CRDDir, err)
	}
	h.Config = cfg
	if h.Client, err = client.New(cfg, client.Options{Scheme: h.Scheme}); err != nil {
		return err
	}
	h.Kubeconfig = filepath.Join(h.WorkDir, "kubeconfig")
	if err := os.WriteFile(h.Kubeconfig, h.Env.KubeConfig, 0o600); err != nil {
		return err
	}
	return nil
}

// writeUserKubeconfig provisions a system:masters user and writes a
// kubeconfig for it into the work directory.
func (h *Harness) writeUserKubeconfig(name string) (string, error) {
	user, err := h.Env.AddUser(envtest.User{Name: name, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("adding user %s: %w", name, err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path, err := filepath.Abs(filepath.Join(h.WorkDir, name+".kubeconfig"))
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, data, 0o600)
}

// WorkloadControllers are the kube-controller-manager controllers every
// harness runs: the workload controllers create pods, the rest keep
// namespaces usable and deletable.
var WorkloadControllers = []string{
	"deployment-controller", "replicaset-controller", "statefulset-controller",
	"serviceaccount-controller", "garbage-collector-controller", "namespace-controller",
}

func (h *Harness) startControllerManager() (err error) {
	if h.kcmKubeconfig, err = h.writeUserKubeconfig("kcm"); err != nil {
		return err
	}
	h.ControllerManager, err = StartControllerManager(h.K8sBin, h.kcmKubeconfig, filepath.Join(h.WorkDir, "kube-controller-manager.log"), h.controllers...)
	return err
}

// AddControllers restarts kube-controller-manager with these controllers
// added to the ones it runs, for a suite whose harness was started without
// them (ClusterControllers before StartCluster). Those it runs already are
// not added twice; when nothing is new it does nothing.
func (h *Harness) AddControllers(controllers ...string) error {
	if h.ControllerManager == nil {
		return errors.New("harness: AddControllers before Start")
	}
	var added []string
	for _, c := range controllers {
		if !slices.Contains(h.controllers, c) && !slices.Contains(added, c) {
			added = append(added, c)
		}
	}
	if len(added) == 0 {
		return nil
	}
	if err := h.ControllerManager.Stop(); err != nil {
		return fmt.Errorf("stopping kube-controller-manager to add %s: %w", strings.Join(added, ", "), err)
	}
	h.controllers = slices.Concat(h.controllers, added)
	kcm, err := StartControllerManager(h.K8sBin, h.kcmKubeconfig, h.ControllerManager.LogPath, h.controllers...)
	if err != nil {
		return err
	}
	h.ControllerManager = kcm
	return nil
}

// StartControllerManager runs the kube-controller-manager of k8sBin with the
// credentials of kubeconfig and only the named controllers, logging to
// logPath. It has no health endpoint (--secure-port=0): it returns once the
// process has stayed up for a moment, and the callers' own waits then tell
// whether its controllers work.
func StartControllerManager(k8sBin, kubeconfig, logPath string, controllers ...string) (*Process, error) {
	kcm := &Process{
		Name:    "kube-controller-manager",
		Path:    filepath.Join(k8sBin, "kube-controller-manager"),
		LogPath: logPath,
		Args: []string{
			"--kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--controllers=" + strings.Join(controllers, ","),
		},
	}
	if err := kcm.Start(); err != nil {
		return nil, err
	}
	select {
	case <-kcm.Exited():
		return nil, fmt.Errorf("kube-controller-manager exited at start-up (%s):\n%s", kcm.ExitStatus(), kcm.LogTail(30))
	case <-time.After(200 * time.Millisecond):
	}
	return kcm, nil
}

// WebhookConfiguration is the MutatingWebhookConfiguration the harness
// registers: the chart's, with a URL pointing at the local webhook.
func (h *Harness) WebhookConfiguration() *admissionregistrationv1.MutatingWebhookConfiguration {
	url := h.Webhook.URL()
	fail := h.failurePolicy
	none := admissionregistrationv1.SideEffectClassNone
	never := admissionregistrationv1.NeverReinvocationPolicy
	equivalent := admissionregistrationv1.Equivalent
	scope := admissionregistrationv1.NamespacedScope
	timeout := int32(5)
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    WebhookName,
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			TimeoutSeconds:          &timeout,
			ReinvocationPolicy:      &never,
			MatchPolicy:             &equivalent,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      &url,
				CABundle: h.Certs.CAPEM,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods"},
					Scope:       &scope,
				},
			}},
			NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{policy.EnabledNamespaceLabel: "true"},
				// As the chart: never kube-system, even if labelled.
				MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"},
				}},
			},
		}},
	}
}

// InstallWebhookConfiguration creates or replaces the webhook configuration.
func (h *Harness) InstallWebhookConfiguration(ctx context.Context) error {
	want := h.WebhookConfiguration()
	var got admissionregistrationv1.MutatingWebhookConfiguration
	err := h.Client.Get(ctx, client.ObjectKey{Name: want.Name}, &got)
	switch {
	case err == nil:
		got.Webhooks = want.Webhooks
		err = h.Client.Update(ctx, &got)
	case isNotFound(err):
		err = h.Client.Create(ctx, want)
	}
	if err != nil {
		return fmt.Errorf("registering MutatingWebhookConfiguration %s: %w", want.Name, err)
	}
	return nil
}

// WaitForWebhook returns once the API server calls the webhook and the
// webhook applies policies: it keeps a probe namespace and policy, and
// dry-run creates a matching pod until the response carries the verdict.
func (h *Harness) WaitForWebhook(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   ProbeNamespace,
		Labels: map[string]string{policy.EnabledNamespaceLabel: "true"},
	}}
	if err := h.Client.Create(ctx, ns); err != nil && !isAlreadyExists(err) {
		return fmt.Errorf("creating probe namespace: %w", err)
	}
	mrp := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: ProbePolicy, Namespace: ProbeNamespace},
		Spec: v1alpha1.PolicySpec{Workloads: []v1alpha1.Workload{{
			Name:     "probe",
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": probeAppLabel}},
			Role:     v1alpha1.RoleClientStateless,
			Client:   &v1alpha1.ClientSettings{Proxy: v1alpha1.ClientProxyUnchanged},
		}}},
	}
	if err := h.Client.Create(ctx, mrp); err != nil && !isAlreadyExists(err) {
		return fmt.Errorf("creating probe policy: %w", err)
	}
	return h.WaitForPolicy(ctx, mrp, 30*time.Second)
}

// Stop tears everything down: webhook, controller manager, control plane;
// then removes the work directory unless KeepWorkDir.
func (h *Harness) Stop() error {
	var errs []error
	for _, w := range h.replicas {
		errs = append(errs, w.Stop())
	}
	if h.Webhook != nil {
		errs = append(errs, h.Webhook.Stop())
	}
	if h.ControllerManager != nil {
		errs = append(errs, h.ControllerManager.Stop())
	}
	if h.Env != nil {
		if err := h.Env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping kube-apiserver + etcd: %w", err))
		}
	}
	err := errors.Join(errs...)
	if err == nil && !h.KeepWorkDir && h.WorkDir != "" {
		_ = os.RemoveAll(h.WorkDir)
	}
	return err
}

// Diagnostics returns the tails of the webhook's and the controller
// manager's logs, and where the full logs are.
func (h *Harness) Diagnostics(lines int) string {
	var b strings.Builder
	if h.Webhook != nil {
		fmt.Fprintf(&b, "--- meshrole webhook log (last %d lines of %s)\n%s\n", lines, h.Webhook.LogPath(), h.Webhook.LogTail(lines))
	}
	for _, w := range h.replicas {
		fmt.Fprintf(&b, "--- meshrole webhook replica log (last %d lines of %s)\n%s\n", lines, w.LogPath(), w.LogTail(lines))
	}
	if h.ControllerManager != nil {
		fmt.Fprintf(&b, "--- kube-controller-manager log (last %d lines of %s)\n%s\n", lines, h.ControllerManager.LogPath, h.ControllerManager.LogTail(lines))
	}
	return b.String()
}
