package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshrole/meshrole/certs"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
)

// kyvernoVersion is the version pinned in test/peers/kyverno/go.mod; the
// run checks that the binary says so.
const kyvernoVersion = "v1.19.1"

// Kyverno's in-cluster names, as the chart sets them; the secrets follow
// its naming.
const (
	kyvernoNamespace = "kyverno"
	kyvernoCASecret  = "kyverno-svc.kyverno.svc.kyverno-tls-ca"
	kyvernoTLSSecret = "kyverno-svc.kyverno.svc.kyverno-tls-pair"
	kyvernoPolicy    = "meshrole-bench-eureka"
	// Kyverno names its resource webhook configuration so; the run checks it
	// points at the local server.
	kyvernoResourceWebhooks = "kyverno-resource-mutating-webhook-cfg"
)

// kyvernoEnv is what the chart's Deployment tells Kyverno about itself;
// Kyverno refuses to start without it.
var kyvernoEnv = map[string]string{
	"KYVERNO_NAMESPACE":           kyvernoNamespace,
	"KYVERNO_SERVICEACCOUNT_NAME": "kyverno-admission-controller",
	"KYVERNO_DEPLOYMENT":          "kyverno-admission-controller",
	"KYVERNO_POD_NAME":            "kyverno-admission-controller-local",
	"KYVERNO_SVC":                 "kyverno-svc",
	"INIT_CONFIG":                 "kyverno",
	"METRICS_CONFIG":              "kyverno-metrics",
}

// The chart's default resource filters (charts/kyverno/values.yaml,
// config.resourceFilters), without those naming the chart's own objects.
var kyvernoResourceFilters = strings.Join([]string{
	"[Event,*,*]", "[*/*,kube-system,*]", "[*/*,kube-public,*]", "[*/*,kube-node-lease,*]",
	"[Node,*,*]", "[Node/?*,*,*]", "[APIService,*,*]", "[APIService/?*,*,*]",
	"[TokenReview,*,*]", "[SubjectAccessReview,*,*]", "[SelfSubjectAccessReview,*,*]",
	"[Binding,*,*]", "[Pod/binding,*,*]", "[ReplicaSet,*,*]", "[ReplicaSet/?*,*,*]",
	"[EphemeralReport,*,*]", "[ClusterEphemeralReport,*,*]",
}, "")

// kyvernoPeer is Kyverno's admission controller, run out of cluster against
// the harness's API server.
type kyvernoPeer struct {
	proc *harness.Process
	// webhooks describes the pod webhooks Kyverno registered.
	webhooks []string
}

// startKyverno installs what Kyverno's admission controller needs (its CRDs,
// namespace, configuration and serving certificate), starts bin/peers/kyverno
// on a loopback port, creates the ClusterPolicy equivalent to the eureka
// example for nsKyverno, and returns once a dry-run pod there comes back
// mutated. Kyverno registers its own webhook configurations (its default,
// autoUpdateWebhooks): https://127.0.0.1:<port>/... from --serverIP, the CA
// generated here from its CA secret, limited to nsKyverno by its
// configuration's webhooks.namespaceSelector.
func startKyverno(ctx context.Context, h *harness.Harness, bin, crdDir string) (*kyvernoPeer, variant, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, variant{}, fmt.Errorf("kyverno binary: %w (build it: test/peers/kyverno/build.sh)", err)
	}
	if _, err := envtest.InstallCRDs(h.Config, envtest.CRDInstallOptions{
		Paths: []string{crdDir}, ErrorIfPathMissing: true, MaxTime: time.Minute,
	}); err != nil {
		return nil, variant{}, fmt.Errorf("installing Kyverno's CRDs from %s: %w", crdDir, err)
	}
	for _, ns := range []string{kyvernoNamespace, nsKyverno} {
		if err := h.CreateNamespace(ctx, ns, false); err != nil {
			return nil, variant{}, err
		}
	}
	ports, err := harness.FreePorts(3)
	if err != nil {
		return nil, variant{}, err
	}
	serverPort, metricsPort, crMetricsPort := ports[0], ports[1], ports[2]
	if err := writeKyvernoConfig(ctx, h); err != nil {
		return nil, variant{}, err
	}
	if err := writeKyvernoCerts(ctx, h); err != nil {
		return nil, variant{}, err
	}

	// harness.Process passes this process's environment on.
	for k, v := range kyvernoEnv {
		if err := os.Setenv(k, v); err != nil {
			return nil, variant{}, err
		}
	}
	p := &kyvernoPeer{proc: &harness.Process{
		Name:    "kyverno",
		Path:    bin,
		LogPath: filepath.Join(h.WorkDir, "kyverno.log"),
		Args: []string{
			"--kubeconfig=" + h.Kubeconfig,
			"--serverIP=127.0.0.1:" + strconv.Itoa(serverPort),
			"--webhookServerHost=127.0.0.1",
			"--webhookServerPort=" + strconv.Itoa(serverPort),
			"--caSecretName=" + kyvernoCASecret,
			"--tlsSecretName=" + kyvernoTLSSecret,
			"--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller",
			"--reportsServiceAccountName=system:serviceaccount:kyverno:kyverno-reports-controller",
			"--metricsHost=127.0.0.1",
			"--metricsPort=" + strconv.Itoa(metricsPort),
			"--controllerRuntimeMetricsAddress=127.0.0.1:" + strconv.Itoa(crMetricsPort),
			// The chart's defaults for the admission controller.
			"--omitEvents=PolicyApplied,PolicySkipped",
			"--loggingFormat=text",
			"--disableLogColor",
			"--v=2",
		},
	}}
	if err := p.proc.Start(); err != nil {
		return nil, variant{}, err
	}
	v, err := p.install(ctx, h, serverPort)
	if err != nil {
		return p, variant{}, fmt.Errorf("%w\n--- kyverno log (last 30 lines of %s)\n%s", err, p.proc.LogPath, p.proc.LogTail(30))
	}
	return p, v, nil
}

func (p *kyvernoPeer) Stop() error {
	if p == nil {
		return nil
	}
	return p.proc.Stop()
}

// install creates the ClusterPolicy once Kyverno serves, and waits until the
// API server calls Kyverno for nsKyverno and Kyverno applies it.
func (p *kyvernoPeer) install(ctx context.Context, h *harness.Harness, serverPort int) (variant, error) {
	// Kyverno validates policies through its own webhook: create the policy
	// once that is registered, as kubectl apply after a helm install would.
	if err := p.waitFor(ctx, 3*time.Minute, "Kyverno's policy validating webhook", func() (bool, error) {
		var vwc admissionregistrationv1.ValidatingWebhookConfiguration
		err := h.Client.Get(ctx, client.ObjectKey{Name: "kyverno-policy-validating-webhook-cfg"}, &vwc)
		return err == nil, client.IgnoreNotFound(err)
	}); err != nil {
		return variant{}, err
	}
	example, err := examplePolicy(h.Root, nsKyverno)
	if err != nil {
		return variant{}, err
	}
	effects := kyvernoEffects(example)
	cp := clusterPolicy(effects)
	if err := p.waitFor(ctx, time.Minute, "the ClusterPolicy to be accepted", func() (bool, error) {
		err := h.Client.Create(ctx, cp.DeepCopy())
		return err == nil, nil
	}); err != nil {
		return variant{}, err
	}
	v := variant{name: variantKyverno, namespace: nsKyverno, want: effects[eurekaServer]}
	if err := p.waitFor(ctx, 3*time.Minute, "a dry-run pod in "+nsKyverno+" mutated by Kyverno", func() (bool, error) {
		pod, err := h.DryRunPod(ctx, harness.ProbePod(nsKyverno, map[string]string{"app": eurekaServer}))
		return err == nil && carries(pod, &v.want), nil
	}); err != nil {
		return variant{}, err
	}

	if !strings.Contains(p.proc.LogTail(1<<20), "logger=setup/version v=2 version="+kyvernoVersion) {
		return variant{}, fmt.Errorf("%s does not log version %s at start-up: rebuild it with test/peers/kyverno/build.sh", p.proc.Path, kyvernoVersion)
	}
	// What the API server calls: Kyverno's own registration, at the local
	// server, for nothing but nsKyverno.
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := h.Client.Get(ctx, client.ObjectKey{Name: kyvernoResourceWebhooks}, &mwc); err != nil {
		return variant{}, fmt.Errorf("kyverno's resource webhook configuration: %w", err)
	}
	prefix := "https://127.0.0.1:" + strconv.Itoa(serverPort) + "/"
	for _, w := range mwc.Webhooks {
		if w.ClientConfig.URL == nil || !strings.HasPrefix(*w.ClientConfig.URL, prefix) {
			return variant{}, fmt.Errorf("kyverno's webhook %s does not call %s: %+v", w.Name, prefix, w.ClientConfig)
		}
		var timeout int32
		if w.TimeoutSeconds != nil {
			timeout = *w.TimeoutSeconds
		}
		selector, err := json.Marshal(w.NamespaceSelector)
		if err != nil {
			return variant{}, err
		}
		p.webhooks = append(p.webhooks, fmt.Sprintf("%s: %s, failurePolicy %s, timeout %ds, namespaceSelector %s",
			w.Name, strings.TrimPrefix(*w.ClientConfig.URL, prefix[:len(prefix)-1]), deref(w.FailurePolicy), timeout, selector))
	}
	return v, nil
}

// waitFor polls done every 200ms until it is true, the timeout passes, or
// Kyverno exits.
func (p *kyvernoPeer) waitFor(ctx context.Context, timeout time.Duration, what string, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s within %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.proc.Exited():
			return fmt.Errorf("kyverno exited (%s) while waiting for %s", p.proc.ExitStatus(), what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// kyvernoEffects are, by app label, the keys meshrole writes on the eureka
// example's pods when its policy is in nsKyverno, its record annotations
// under bench.meshrole.io/ (benchKeys).
func kyvernoEffects(example *v1alpha1.MeshRolePolicy) map[string]policy.Effect {
	effects := map[string]policy.Effect{}
	for _, app := range []string{eurekaServer, eurekaClient} {
		effects[app] = benchKeys(effectFor(example, app))
	}
	return effects
}

// clusterPolicy is the eureka example as a Kyverno ClusterPolicy: one rule
// per app label, each a patchStrategicMerge writing that pod's keys
// (effects by app label), for pod creates in nsKyverno only. Autogen is off:
// meshrole mutates pods, not the pod templates of their controllers.
func clusterPolicy(effects map[string]policy.Effect) *unstructured.Unstructured {
	var rules []any
	for _, app := range slices.Sorted(maps.Keys(effects)) {
		e := effects[app]
		annotations := map[string]any{}
		for k, v := range e.Annotations {
			annotations[k] = v
		}
		for k, ports := range e.Ports {
			annotations[k] = portList(ports)
		}
		lbls := map[string]any{}
		for k, v := range e.Labels {
			lbls[k] = v
		}
		rules = append(rules, map[string]any{
			"name": app,
			"match": map[string]any{"any": []any{map[string]any{"resources": map[string]any{
				"kinds":      []any{"Pod"},
				"operations": []any{"CREATE"},
				"namespaces": []any{nsKyverno},
				"selector":   map[string]any{"matchLabels": map[string]any{"app": app}},
			}}}},
			"mutate": map[string]any{"patchStrategicMerge": map[string]any{
				"metadata": map[string]any{"labels": lbls, "annotations": annotations},
			}},
		})
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kyverno.io/v1",
		"kind":       "ClusterPolicy",
		"metadata": map[string]any{
			"name":        kyvernoPolicy,
			"annotations": map[string]any{"pod-policies.kyverno.io/autogen-controllers": "none"},
		},
		"spec": map[string]any{
			"background": false,
			"rules":      rules,
		},
	}}
}

// writeKyvernoConfig writes Kyverno's configuration ConfigMaps as the chart
// would, except that its webhooks only ever see nsKyverno (the other
// variants' pods must go through no Kyverno webhook).
func writeKyvernoConfig(ctx context.Context, h *harness.Harness) error {
	webhooks, err := json.Marshal(map[string]any{"namespaceSelector": metav1.LabelSelector{
		MatchLabels: map[string]string{corev1.LabelMetadataName: nsKyverno},
	}})
	if err != nil {
		return err
	}
	for _, cm := range []*corev1.ConfigMap{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: kyvernoNamespace, Name: "kyverno"},
			Data: map[string]string{
				"enableDefaultRegistryMutation": "true",
				"generateSuccessEvents":         "false",
				"resourceFilters":               kyvernoResourceFilters,
				"webhooks":                      string(webhooks),
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: kyvernoNamespace, Name: "kyverno-metrics"},
			Data:       map[string]string{"namespaces": `{"include": [], "exclude": []}`},
		},
	} {
		if err := h.Client.Create(ctx, cm); err != nil {
			return fmt.Errorf("kyverno's ConfigMap %s: %w", cm.Name, err)
		}
	}
	return nil
}

// writeKyvernoCerts generates a CA and a serving certificate for 127.0.0.1
// and stores them where Kyverno reads its own. They are not labelled as
// managed by Kyverno: it uses them as they are, and would refuse to renew
// them rather than replace them.
func writeKyvernoCerts(ctx context.Context, h *harness.Harness) error {
	b, err := certs.WriteDir(filepath.Join(h.WorkDir, "kyverno-certs"), certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return err
	}
	for _, s := range []*corev1.Secret{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: kyvernoNamespace, Name: kyvernoCASecret},
			Data:       map[string][]byte{corev1.TLSCertKey: b.CAPEM},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: kyvernoNamespace, Name: kyvernoTLSSecret},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: b.CertPEM, corev1.TLSPrivateKeyKey: b.KeyPEM},
		},
	} {
		if err := h.Client.Create(ctx, s); err != nil {
			return fmt.Errorf("kyverno's secret %s: %w", s.Name, err)
		}
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
