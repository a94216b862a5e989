package install_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/certs"
	"github.com/meshrole/meshrole/pkg/policy"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
)

// startLocalWebhook runs bin/webhook on 127.0.0.1 as the chart's Deployment
// would run it: with the release's ServiceAccount's credentials (a token from
// the TokenRequest API), the chart's webhook configuration name, and the
// serving certificate written into a directory. No kubelet runs the
// Deployment's pods here. It runs until t ends.
func startLocalWebhook(t *testing.T, e *env, name string, caPEM, certPEM, keyPEM []byte) *harness.Webhook {
	t.Helper()
	certDir := filepath.Join(workDir, name, "certs")
	b := &certs.Bundle{CAPEM: caPEM, CertPEM: certPEM, KeyPEM: keyPEM}
	if err := b.Write(certDir); err != nil {
		t.Fatal(err)
	}
	w, err := harness.NewWebhook(harness.WebhookProcess{
		Name:    "meshrole webhook",
		Bin:     e.WebhookBin,
		LogPath: filepath.Join(workDir, name, "webhook.log"),
		CertDir: certDir,
		CAPEM:   caPEM,
		// The chart's arguments but for addresses and paths; leader
		// election needs the in-cluster namespace file, so it is off here
		// (the lease permissions are checked by the RBAC test).
		Args: []string{
			"--webhook-configuration-name=" + webhookConfigurationName,
			"--kubeconfig=" + serviceAccountKubeconfig(t, e, name),
			"--leader-elect=false",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runLocal(t, w)
	return w
}

// serviceAccountKubeconfig writes a kubeconfig with the pods' credentials: a
// bound token for the chart's ServiceAccount.
func serviceAccountKubeconfig(t *testing.T, e *env, name string) string {
	t.Helper()
	tr, err := e.Clientset.CoreV1().ServiceAccounts(releaseNamespace).CreateToken(t.Context(), serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount %s/%s: %v", releaseNamespace, serviceAccount, err)
	}
	kubeconfig, err := writeKubeconfig(name+"-sa", e.Config, clientcmdapi.AuthInfo{Token: tr.Status.Token})
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// runLocal starts the server, waits until it is ready (see
// harness.Webhook.Start), and stops it when the test ends.
func runLocal(t *testing.T, w *harness.Webhook) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(w.LogPath()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Stop(); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
		if t.Failed() {
			t.Logf("--- server log (%s):\n%s", w.LogPath(), w.LogTail(30))
		}
	})
}

// pointInstalledWebhookAt rewrites the installed configuration's
// clientConfig from the chart's Service to the local webhook's URL; with
// caBundle nil the caBundle is left as it is (cert-manager mode: the CA
// injector keeps it). Everything else stays as the chart rendered it.
func pointInstalledWebhookAt(t *testing.T, e *env, url string, caBundle []byte) {
	t.Helper()
	mwc, w := installedWebhook(t, e)
	w.ClientConfig.Service = nil
	w.ClientConfig.URL = &url
	if caBundle != nil {
		w.ClientConfig.CABundle = caBundle
	}
	if err := e.Client.Update(t.Context(), mwc); err != nil {
		t.Fatalf("pointing %s at %s: %v", mwc.Name, url, err)
	}
}

// e2eThroughInstalledChart runs meshrole behind the installed webhook
// configuration: the Eureka example policy in an enabled namespace, pods
// created for real, and the namespaces the chart excludes.
func e2eThroughInstalledChart(t *testing.T, e *env, w *harness.Webhook, appNS string) {
	ctx := t.Context()
	c := e.Client
	checkEurekaVerdicts(t, e, appNS, modeWebhook)

	t.Run("the release namespace and kube-system are never sent to the webhook, even labelled", func(t *testing.T) {
		create := func(t *testing.T, ns string, lbls map[string]string) *corev1.Pod {
			t.Helper()
			return createPod(t, t, e, ns, lbls)
		}
		control := enableExcludedNamespaces(t, e, appNS)

		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			// Bring the webhook back for whatever runs next.
			if err := w.Start(ctx); err != nil {
				t.Error(err)
			}
		}()
		// With failurePolicy Fail and the webhook down, an enabled namespace
		// refuses pods: proof that the API server calls the webhook for it.
		var refusal error
		err := eventually(ctx, 10*time.Second, func() (bool, string, error) {
			p := harness.ProbePod(control.Name, map[string]string{"app": "eureka-server"})
			if err := c.Create(ctx, p, client.DryRunAll); err != nil {
				refusal = err
				return true, "", nil
			}
			return false, "pod admitted", nil
		})
		if err != nil {
			t.Fatalf("enabled namespace %s still admits pods with the webhook down: %v", control.Name, err)
		}
		if !strings.Contains(refusal.Error(), "pods.meshrole.io") {
			t.Errorf("the refusal does not name the webhook: %v", refusal)
		}
		t.Logf("enabled namespace %s, webhook down: refused (%v)", control.Name, refusal)

		for _, name := range []string{releaseNamespace, "kube-system"} {
			p := create(t, name, map[string]string{"app": "eureka-server"})
			t.Logf("namespace %s (labelled %s=true), webhook down: pod %s created", name, policy.EnabledNamespaceLabel, p.Name)
		}
	})
}

// checkEurekaVerdicts applies examples/eureka/policy.yaml in a new namespace
// labelled meshrole.io/enabled=true, waits until pods get its verdict through
// the API server (from the webhook, or from the generated policies in native
// mode), then creates pods for real and checks what they got, and the
// policy's status as the server (with the ServiceAccount's permissions)
// writes it.
func checkEurekaVerdicts(t *testing.T, e *env, appNS, mode string) {
	ctx := t.Context()
	c := e.Client
	path := "the webhook behind " + webhookConfigurationName
	if mode == modeNative {
		path = "meshrole's MutatingAdmissionPolicies"
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS, Labels: map[string]string{policy.EnabledNamespaceLabel: "true"}}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })

	objs, err := harness.ReadManifests(filepath.Join(e.Root, "examples", "eureka", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].GetKind() != "MeshRolePolicy" {
		t.Fatalf("examples/eureka/policy.yaml: want one MeshRolePolicy, have %v", objectIDs(objs))
	}
	pol := objs[0]
	pol.SetNamespace(appNS)
	if err := c.Create(ctx, pol); err != nil {
		t.Fatalf("applying examples/eureka/policy.yaml in %s: %v", appNS, err)
	}
	ref := appNS + "/" + pol.GetName()

	// The server sees the policy through its informer (and, in native mode,
	// the API server sees the generated policy through its own): wait until
	// a dry-run pod gets its verdict through the API server.
	start := time.Now()
	if err := eventually(ctx, 30*time.Second, func() (bool, string, error) {
		p := harness.ProbePod(appNS, map[string]string{"app": "eureka-server"})
		if err := c.Create(ctx, p, client.DryRunAll); err != nil {
			return false, err.Error(), nil
		}
		return p.Annotations[policy.PolicyAnnotation] == ref, fmt.Sprintf("annotations %v", p.Annotations), nil
	}); err != nil {
		t.Fatalf("%s did not apply policy %s: %v", path, ref, err)
	}
	t.Logf("policy %s applied by %s %v after it was created", ref, path, time.Since(start).Round(time.Millisecond))

	// Pods stay until the end of the whole run (the status check counts
	// them); nothing runs them, so they are deleted at once.
	outer := t
	create := func(t *testing.T, ns string, lbls map[string]string) *corev1.Pod {
		t.Helper()
		return createPod(t, outer, e, ns, lbls)
	}

	t.Run("a peer-stateful pod (app=eureka-server) is created without the sidecar", func(t *testing.T) {
		p := create(t, appNS, map[string]string{"app": "eureka-server"})
		want := map[string]string{policy.IstioInjectKey: "false", policy.IstioDataplaneModeLabel: "none"}
		for k, v := range want {
			if p.Labels[k] != v {
				t.Errorf("label %s = %q, want %q (labels %v)", k, p.Labels[k], v, p.Labels)
			}
		}
		wantAnn := map[string]string{
			policy.IstioInjectKey:     "false",
			policy.RoleAnnotation:     string(v1alpha1.RolePeerStateful),
			policy.PolicyAnnotation:   ref,
			policy.WorkloadAnnotation: "eureka-peers",
		}
		for k, v := range wantAnn {
			if p.Annotations[k] != v {
				t.Errorf("annotation %s = %q, want %q (annotations %v)", k, p.Annotations[k], v, p.Annotations)
			}
		}
	})

	t.Run("a client-stateless pod (app=eureka-client) keeps the sidecar and dials 8761 directly", func(t *testing.T) {
		p := create(t, appNS, map[string]string{"app": "eureka-client"})
		if p.Labels[policy.IstioInjectKey] != "true" || p.Annotations[policy.IstioInjectKey] != "true" {
			t.Errorf("sidecar.istio.io/inject: label %q, annotation %q, want both \"true\"", p.Labels[policy.IstioInjectKey], p.Annotations[policy.IstioInjectKey])
		}
		if ports := strings.Split(p.Annotations[policy.IstioExcludeOutboundPorts], ","); !slices.Contains(ports, "8761") {
			t.Errorf("%s = %q, want it to contain 8761", policy.IstioExcludeOutboundPorts, p.Annotations[policy.IstioExcludeOutboundPorts])
		}
		if p.Annotations[policy.WorkloadAnnotation] != "eureka-clients" || p.Annotations[policy.RoleAnnotation] != string(v1alpha1.RoleClientStateless) {
			t.Errorf("annotations %v, want workload eureka-clients, role client-stateless", p.Annotations)
		}
	})

	t.Run("a pod no policy matches is admitted unchanged", func(t *testing.T) {
		p := create(t, appNS, map[string]string{"app": "billing"})
		for k := range p.Annotations {
			if strings.HasPrefix(k, "meshrole.io/") || strings.Contains(k, "istio.io/") {
				t.Errorf("unmatched pod got annotation %s=%q", k, p.Annotations[k])
			}
		}
		if len(p.Labels) != 1 {
			t.Errorf("unmatched pod's labels changed: %v", p.Labels)
		}
	})

	t.Run("the server counts the pods in the policy's status, with the service account's permissions", func(t *testing.T) {
		// One eureka-server and one eureka-client pod were created above.
		want := []v1alpha1.WorkloadStatus{{Name: "eureka-peers", MatchedPods: 1}, {Name: "eureka-clients", MatchedPods: 1}}
		var mrp v1alpha1.MeshRolePolicy
		err := eventually(ctx, 30*time.Second, func() (bool, string, error) {
			if err := c.Get(ctx, types.NamespacedName{Namespace: appNS, Name: pol.GetName()}, &mrp); err != nil {
				return false, "", err
			}
			ready := findCondition(mrp.Status.Conditions, "Ready")
			if mrp.Status.ObservedGeneration != mrp.Generation || ready == nil || ready.Status != metav1.ConditionTrue ||
				!slices.Equal(mrp.Status.Workloads, want) {
				return false, fmt.Sprintf("status %+v, want Ready, observedGeneration %d, workloads %+v", mrp.Status, mrp.Generation, want), nil
			}
			return true, "", nil
		})
		if err != nil {
			t.Fatalf("policy %s: %v", ref, err)
		}
		ready := findCondition(mrp.Status.Conditions, "Ready")
		if mode == modeNative && !strings.Contains(ready.Message, "MutatingAdmissionPolicies") {
			t.Errorf("policy %s: Ready message %q does not say it is compiled into MutatingAdmissionPolicies", ref, ready.Message)
		}
		t.Logf("policy %s status: observedGeneration %d, workloads %+v, Ready: %s", ref, mrp.Status.ObservedGeneration, mrp.Status.Workloads, ready.Message)
	})
}

// createPod creates a pod labelled lbls in ns for real and deletes it when
// owner ends.
func createPod(t, owner *testing.T, e *env, ns string, lbls map[string]string) *corev1.Pod {
	t.Helper()
	p := harness.ProbePod(ns, lbls)
	if err := e.Client.Create(t.Context(), p); err != nil {
		t.Fatalf("creating a pod labelled %v in %s: %v", lbls, ns, err)
	}
	owner.Cleanup(func() { _ = e.Client.Delete(context.Background(), p) })
	return p
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// setNamespaceLabel sets (value non-nil) or removes a namespace label.
func setNamespaceLabel(t *testing.T, e *env, name, key string, value *string) {
	t.Helper()
	var ns corev1.Namespace
	ctx := context.Background()
	if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		if apierrors.IsNotFound(err) && value == nil {
			return
		}
		t.Fatal(err)
	}
	orig := ns.DeepCopy()
	if value == nil {
		delete(ns.Labels, key)
	} else {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[key] = *value
	}
	if err := e.Client.Patch(ctx, &ns, client.MergeFrom(orig)); err != nil {
		t.Fatalf("labelling namespace %s: %v", name, err)
	}
}

// enableExcludedNamespaces labels the release namespace and kube-system
// meshrole.io/enabled=true for the test, then creates an enabled control
// namespace: once the API server's namespace informer shows the control
// namespace enabled, it has seen the earlier labels too (watch events arrive
// in resourceVersion order).
func enableExcludedNamespaces(t *testing.T, e *env, appNS string) *corev1.Namespace {
	t.Helper()
	for _, name := range []string{releaseNamespace, "kube-system"} {
		setNamespaceLabel(t, e, name, policy.EnabledNamespaceLabel, ptr.To("true"))
		t.Cleanup(func() { setNamespaceLabel(t, e, name, policy.EnabledNamespaceLabel, nil) })
	}
	control := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: appNS + "-control", Labels: map[string]string{policy.EnabledNamespaceLabel: "true"},
	}}
	if err := e.Client.Create(t.Context(), control); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), control) })
	return control
}
