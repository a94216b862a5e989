package istio_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/istio/injector"
)

// Istio's names, as its injector and its charts spell them.
const (
	istioInjectionLabel = "istio-injection"
	istioProxy          = "istio-proxy"
	istioInit           = "istio-init"
	istioValidation     = "istio-validation"
	istioStatus         = "sidecar.istio.io/status"
	nativeSidecarAnno   = "sidecar.istio.io/nativeSidecar"
)

// istioBin is the injector of the selected Istio version, built by TestMain.
var istioBin string

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime's logger.
	ctrllog.SetLogger(logr.Discard())
	bin, err := buildInjector()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	istioBin = bin
	os.Exit(m.Run())
}

// buildInjector builds the injector of $MESHROLE_ISTIO_VERSION (the master
// pin by default) from its own module, or finds it built already.
func buildInjector() (string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	version := injector.SelectedVersion()
	start := time.Now()
	bin, built, err := injector.Build(context.Background(), root, version)
	if err != nil {
		return "", err
	}
	if built {
		fmt.Printf("built Istio %s's injector into %s in %v\n", version, bin, time.Since(start).Round(time.Second))
	} else {
		fmt.Printf("Istio %s's injector: %s (up to date)\n", version, bin)
	}
	return bin, nil
}

// env is one control plane with meshrole and Istio's injector registered.
type env struct {
	h     *harness.Harness
	istio *injector.Server
	// meshroleConfig is the name meshrole's webhook configuration has.
	meshroleConfig string
}

// startEnv starts the harness (kube-apiserver, etcd, kube-controller-manager,
// meshrole's webhook registered as 00-meshrole), Istio's injector, and
// registers Istio's istio-sidecar-injector configuration. With
// meshroleConfig other than harness.WebhookConfigurationName, meshrole's
// configuration is re-registered under that name and the webhook restarted
// with --webhook-configuration-name set to it.
func startEnv(t *testing.T, meshroleConfig string, mode harness.Mode) *env {
	t.Helper()
	ctx := t.Context()
	opts := harness.Options{Progress: func(step string) { t.Log(step) }, Mode: mode}
	if meshroleConfig != harness.WebhookConfigurationName {
		opts.WebhookArgs = []string{"--webhook-configuration-name=" + meshroleConfig}
	}
	h, err := harness.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{h: h, meshroleConfig: meshroleConfig}
	t.Cleanup(func() {
		if t.Failed() {
			h.KeepWorkDir = true
			t.Log(h.Diagnostics(40))
			if e.istio != nil {
				t.Logf("istio-injector's log (%s), last lines:\n%s", filepath.Join(h.WorkDir, "istio-injector.log"), e.istio.LogTail(40))
			}
		}
		if e.istio != nil {
			if err := e.istio.Stop(); err != nil {
				t.Errorf("stopping Istio's injector: %v", err)
			}
		}
		if err := h.Stop(); err != nil {
			t.Errorf("stopping the harness: %v", err)
		}
	})

	t.Logf("starting Istio's injector (%s)", istioBin)
	if e.istio, err = injector.Start(ctx, injector.Options{
		Bin:        istioBin,
		Kubeconfig: h.Kubeconfig,
		CertDir:    h.CertDir,
		LogPath:    filepath.Join(h.WorkDir, "istio-injector.log"),
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("Istio's injector: istio.io/istio %s, charts rendered with %v", e.istio.IstioVersion, e.istio.Flags)
	istioMWC := e.istio.WebhookConfiguration()
	t.Logf("registering MutatingWebhookConfiguration %s (%d webhooks) -> %s", istioMWC.Name, len(istioMWC.Webhooks), e.istio.URL)
	if err := h.Client.Create(ctx, istioMWC); err != nil {
		t.Fatal(err)
	}

	if mode != harness.ModeNative && meshroleConfig != harness.WebhookConfigurationName {
		renamed := h.WebhookConfiguration()
		renamed.Name = meshroleConfig
		t.Logf("re-registering meshrole's webhook configuration as %s", meshroleConfig)
		if err := h.Client.Create(ctx, renamed); err != nil {
			t.Fatal(err)
		}
		if err := h.Client.Delete(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: harness.WebhookConfigurationName},
		}); err != nil {
			t.Fatal(err)
		}
		// Restart so that meshrole's start-up ordering check sees both
		// configurations at once.
		if err := h.Webhook.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := h.Webhook.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const probeNS = "istio-probe"
	e.namespace(t, probeNS, map[string]string{istioInjectionLabel: "enabled"})
	e.waitForIstio(t, probeNS)
	return e
}

// waitForIstio returns once the API server calls Istio's injector for pods
// in ns: a dry-run pod that no policy matches comes back injected.
func (e *env) waitForIstio(t *testing.T, ns string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := e.h.DryRunPod(t.Context(), probePod(ns))
		if err == nil && hasIstioProxy(p) {
			return
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("containers %v", containerNames(p))
			}
			t.Fatalf("Istio's injector does not inject pods in %s: %v", ns, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probePod is harness.ProbePod with the service account the API server's
// ServiceAccount admission plugin would have set (envtest turns that plugin
// off): Istio's injected istio-token volume is invalid without one.
func probePod(ns string) *corev1.Pod {
	p := harness.ProbePod(ns, map[string]string{"app": "istio-probe"})
	p.Spec.ServiceAccountName = "default"
	return p
}

func (e *env) namespace(t *testing.T, name string, lbls map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	if err := e.h.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// meshNamespace creates namespace ns with both meshrole
// (meshrole.io/enabled=true) and Istio's sidecar injection
// (istio-injection=enabled) turned on, and in it a MeshRolePolicy with the
// given workloads; it returns once meshrole enforces the policy and Istio's
// injector is called for pods in ns.
//
// The namespace gets istio-injection only once meshrole enforces the policy,
// so that the wait works with meshrole called after Istio too.
func (e *env) meshNamespace(t *testing.T, ns, policyName string, workloads ...v1alpha1.Workload) {
	t.Helper()
	e.namespace(t, ns, map[string]string{policy.EnabledNamespaceLabel: "true"})
	e.policy(t, ns, policyName, workloads...)
	var nsObj corev1.Namespace
	if err := e.h.Client.Get(t.Context(), client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Labels[istioInjectionLabel] = "enabled"
	if err := e.h.Client.Update(t.Context(), &nsObj); err != nil {
		t.Fatal(err)
	}
	e.waitForIstio(t, ns)
}

// policy creates a MeshRolePolicy and waits until meshrole enforces it: a
// dry-run pod matching its first workload entry names it. (Not
// harness.WaitForPolicy: its probe pods have no service account, and Istio's
// injector, which meshrole's inject label calls even in namespaces without
// istio-injection, makes them invalid.)
func (e *env) policy(t *testing.T, ns, name string, workloads ...v1alpha1.Workload) {
	t.Helper()
	p := &v1alpha1.MeshRolePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha1.PolicySpec{Workloads: workloads},
	}
	if err := e.h.Client.Create(t.Context(), p); err != nil {
		t.Fatalf("creating MeshRolePolicy %s/%s: %v", ns, name, err)
	}
	w := workloads[0]
	lbls := map[string]string{}
	for k, v := range w.Selector.MatchLabels {
		lbls[k] = v
	}
	for _, r := range w.Selector.MatchExpressions {
		if r.Operator != metav1.LabelSelectorOpIn {
			t.Fatalf("policy %s/%s: write the first workload's selector with matchLabels or In", ns, name)
		}
		lbls[r.Key] = r.Values[0]
	}
	probe := harness.ProbePod(ns, lbls)
	probe.Spec.ServiceAccountName = "default"
	ref := harness.PolicyRef(p)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := e.h.DryRunPod(t.Context(), probe)
		if err != nil {
			t.Fatalf("waiting for policy %s: dry-run pod: %v", ref, err)
		}
		if got.Annotations[policy.PolicyAnnotation] == ref && got.Annotations[policy.WorkloadAnnotation] == w.Name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshrole does not enforce policy %s after 30s; last probe pod annotations: %v", ref, got.Annotations)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) namespaceExists(t *testing.T, name string) bool {
	t.Helper()
	err := e.h.Client.Get(t.Context(), client.ObjectKey{Name: name}, &corev1.Namespace{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func (e *env) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := e.h.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("creating %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

// pods waits for n pods labelled app=<app> in ns, created by the
// controllers, and returns them as the API server stored them.
func (e *env) pods(t *testing.T, ns, app string, n int) []corev1.Pod {
	t.Helper()
	pods, err := e.h.WaitForPods(t.Context(), ns, map[string]string{"app": app}, n, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

// istioCalls returns the admission requests Istio's injector got for pods
// labelled app=<app> in ns.
func (e *env) istioCalls(t *testing.T, ns, app string) []injector.Call {
	t.Helper()
	calls, err := e.istio.Calls(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []injector.Call
	for _, c := range calls {
		if c.Namespace == ns && c.Labels["app"] == app {
			out = append(out, c)
		}
	}
	return out
}

// metric scrapes meshrole's metrics endpoint and returns the value of the
// sample of family name whose labels include lbls (0 when absent).
func (e *env) metric(t *testing.T, name string, lbls map[string]string) float64 {
	t.Helper()
	resp, err := http.Get(e.h.Webhook.MetricsURL())
	if err != nil {
		t.Fatalf("scraping meshrole's metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	parser := expfmt.NewTextParser(prommodel.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing meshrole's metrics: %v", err)
	}
	fam, ok := families[name]
	if !ok {
		return 0
	}
	for _, m := range fam.GetMetric() {
		if labelsInclude(m.GetLabel(), lbls) {
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// waitForMetric polls metric until it has value want or timeout passes, and
// returns the last value.
func (e *env) waitForMetric(t *testing.T, name string, lbls map[string]string, want float64, timeout time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := e.metric(t, name, lbls)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func labelsInclude(have []*dto.LabelPair, want map[string]string) bool {
	n := 0
	for _, l := range have {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// --- workloads -------------------------------------------------------------

func statefulSet(ns, name string, replicas int32, podLabels, podAnnotations map[string]string, ports ...int32) *appsv1.StatefulSet {
	lbls := map[string]string{"app": name}
	for k, v := range podLabels {
		lbls[k] = v
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: name,
			Replicas:    ptr.To(replicas),
			// No node ever runs these pods: Parallel creates them all at once
			// instead of waiting for each to become Ready.
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template:            podTemplate(name, lbls, podAnnotations, ports),
		},
	}
}

func deployment(ns, name string, replicas int32, podLabels, podAnnotations map[string]string, ports ...int32) *appsv1.Deployment {
	lbls := map[string]string{"app": name}
	for k, v := range podLabels {
		lbls[k] = v
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: podTemplate(name, lbls, podAnnotations, ports),
		},
	}
}

func podTemplate(name string, lbls, annotations map[string]string, ports []int32) corev1.PodTemplateSpec {
	c := corev1.Container{Name: name, Image: "example.invalid/" + name + ":never-pulled"}
	for _, p := range ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: "tcp-" + strconv.Itoa(int(p)), ContainerPort: p})
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: lbls, Annotations: annotations},
		Spec: corev1.PodSpec{
			// What the ServiceAccount admission plugin, off in envtest, sets
			// before any webhook runs.
			ServiceAccountName: "default",
			Containers:         []corev1.Container{c},
		},
	}
}

// --- reading injected pods -------------------------------------------------

// findContainer returns the container called name among the pod's containers
// or init containers (where Istio puts istio-proxy as a native sidecar), and
// whether it is an init container.
func findContainer(p *corev1.Pod, name string) (c *corev1.Container, init bool) {
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == name {
			return &p.Spec.InitContainers[i], true
		}
	}
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			return &p.Spec.Containers[i], false
		}
	}
	return nil, false
}

func hasIstioProxy(p *corev1.Pod) bool {
	c, _ := findContainer(p, istioProxy)
	return c != nil
}

// containerNames lists init containers (prefixed "init:") then containers.
func containerNames(p *corev1.Pod) []string {
	var names []string
	for _, c := range p.Spec.InitContainers {
		names = append(names, "init:"+c.Name)
	}
	for _, c := range p.Spec.Containers {
		names = append(names, c.Name)
	}
	return names
}

// flagValue returns the value following flag in args (istio-iptables style
// "-o", "8761").
func flagValue(args []string, flag string) (string, bool) {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

// portsIn reports whether the comma-separated list holds every port.
func portsIn(list string, ports ...string) bool {
	var have []string
	for _, p := range strings.Split(list, ",") {
		have = append(have, strings.TrimSpace(p))
	}
	for _, p := range ports {
		if !slices.Contains(have, p) {
			return false
		}
	}
	return true
}

// iptablesArgs returns the args of the container that programs the pod's
// traffic redirection: the one Istio's rendered configuration produces,
// istio-init, or istio-validation when the values enable Istio's CNI plugin
// (pilot.cni.enabled). The other one must be absent.
func (e *env) iptablesArgs(t *testing.T, p *corev1.Pod) []string {
	t.Helper()
	want, other := istioInit, istioValidation
	if e.istio.CNI {
		want, other = istioValidation, istioInit
	}
	if c, _ := findContainer(p, other); c != nil {
		t.Errorf("pod %s has %s, which Istio's rendered configuration (pilot.cni.enabled=%v) does not produce; containers: %v", p.Name, other, e.istio.CNI, containerNames(p))
	}
	c, init := findContainer(p, want)
	if c == nil || !init {
		t.Fatalf("pod %s has no %s init container, which Istio's rendered configuration (pilot.cni.enabled=%v) produces; containers: %v", p.Name, want, e.istio.CNI, containerNames(p))
	}
	return c.Args
}

// envValue returns the value of the environment variable name in c.
func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// servesMutatingAdmissionPolicy tells from the control plane's kube-apiserver
// --version whether it serves MutatingAdmissionPolicy in
// admissionregistration.k8s.io/v1 (GA in Kubernetes 1.36), before any
// control plane is started; it returns the version.
func servesMutatingAdmissionPolicy(t *testing.T) (string, bool) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := harness.K8sBinDir(root)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), filepath.Join(dir, "kube-apiserver"), "--version").Output()
	if err != nil {
		t.Fatalf("%s/kube-apiserver --version: %v", dir, err)
	}
	version := strings.TrimPrefix(strings.TrimSpace(string(out)), "Kubernetes ")
	var major, minor int
	if _, err := fmt.Sscanf(version, "v%d.%d.", &major, &minor); err != nil {
		t.Fatalf("%s/kube-apiserver --version says %q", dir, out)
	}
	return version, major > 1 || major == 1 && minor >= 36
}

// nativeModeRefused starts the harness in native mode on an API server
// without MutatingAdmissionPolicy: the server must exit before it is ready,
// naming the Kubernetes version native mode needs and this one.
func nativeModeRefused(t *testing.T, version string) {
	h, err := harness.Start(t.Context(), harness.Options{Progress: func(step string) { t.Log(step) }, Mode: harness.ModeNative})
	if err == nil {
		_ = h.Stop()
		t.Fatalf("native mode started on Kubernetes %s", version)
	}
	t.Logf("harness.Start: %v", err)
	want := "native mode needs Kubernetes 1.36 or later (MutatingAdmissionPolicy admissionregistration.k8s.io/v1); this API server is " +
		version + "; use mode: webhook"
	if !strings.Contains(err.Error(), "exited before it was ready (exit status 1)") || !strings.Contains(err.Error(), want) {
		t.Errorf("want the server to exit with status 1 saying %q", want)
	}
}
