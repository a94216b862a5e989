package install_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"helm.sh/helm/v3/pkg/action"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/certs"
)

// Kinds every install renders; each mode adds its TLS objects.
var baseKinds = []string{
	"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"Service", "Deployment", "PodDisruptionBudget", "MutatingWebhookConfiguration",
}

// cleanSlateAfter uninstalls the release if a test left it installed and
// deletes the release namespace (kube-controller-manager's namespace
// controller empties it), so that the next install starts from nothing.
func (e *env) cleanSlateAfter(t *testing.T) {
	t.Cleanup(func() {
		un := action.NewUninstall(e.helmConfig(t, releaseNamespace))
		un.IgnoreNotFound = true
		un.Wait = true
		un.Timeout = time.Minute
		if _, err := un.Run(releaseName); err != nil {
			t.Errorf("cleanup: helm uninstall: %v", err)
		}
		ctx := context.Background()
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}}
		if err := e.Client.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: deleting namespace %s: %v", releaseNamespace, err)
			return
		}
		if err := eventually(ctx, time.Minute, func() (bool, string, error) {
			err := e.Client.Get(ctx, client.ObjectKeyFromObject(ns), ns)
			if apierrors.IsNotFound(err) {
				return true, "", nil
			}
			return false, "namespace still there", err
		}); err != nil {
			t.Errorf("cleanup: namespace %s: %v", releaseNamespace, err)
		}
	})
}

// TestInstallWithCertManager installs the chart with its defaults
// (certManager.enabled=true) next to cert-manager v1.21.2's real
// controllers and CA injector.
func TestInstallWithCertManager(t *testing.T) {
	e := controlPlane(t)
	e.certManagerFor(t)
	e.cleanSlateAfter(t)
	ctx := t.Context()
	rel := e.helmInstall(t, nil)

	t.Run("every rendered object is accepted by the API server", func(t *testing.T) {
		checkAccepted(t, e, rel, append(baseKinds, "Issuer", "Certificate"))
		checkWebhookContract(t, e)
		mwc, _ := installedWebhook(t, e)
		if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], releaseNamespace+"/"+fullname+"-serving"; got != want {
			t.Errorf("annotation cert-manager.io/inject-ca-from = %q, want %q", got, want)
		}
	})

	t.Run("cert-manager issues the chart's CA and serving certificate", func(t *testing.T) {
		for _, name := range []string{fullname + "-ca", fullname + "-serving"} {
			waitCertificateReady(t, e, name)
		}
		ca, err := getSecret(ctx, e, fullname+"-ca")
		if err != nil {
			t.Fatal(err)
		}
		tlsSecret, err := getSecret(ctx, e, certManagerSecret)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if len(tlsSecret.Data[k]) == 0 {
				t.Errorf("Secret %s has no %s", tlsSecret.Name, k)
			}
		}
		if !bytes.Equal(tlsSecret.Data["ca.crt"], ca.Data["tls.crt"]) {
			t.Errorf("Secret %s's ca.crt is not the chart's CA (Secret %s's tls.crt)", tlsSecret.Name, ca.Name)
		}
		verifyServing(t, tlsSecret.Data["ca.crt"], tlsSecret.Data["tls.crt"], serviceDNSNames...)
		if got := tlsSecret.Labels["app.kubernetes.io/instance"]; got != releaseName {
			t.Errorf("Secret %s lacks the chart's labels (secretTemplate): %v", tlsSecret.Name, tlsSecret.Labels)
		}
	})

	t.Run("the CA injector puts the serving certificate's CA into the webhook's caBundle", func(t *testing.T) {
		// The chart renders no caBundle in this mode: whatever is there
		// comes from the CA injector.
		for _, u := range manifestObjects(t, rel.Manifest) {
			if u.GetKind() != "MutatingWebhookConfiguration" {
				continue
			}
			webhooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
			for _, w := range webhooks {
				if ca, ok, _ := unstructured.NestedString(w.(map[string]any), "clientConfig", "caBundle"); ok {
					t.Errorf("the chart rendered a caBundle (%d bytes) with certManager.enabled=true", len(ca))
				}
			}
		}
		tlsSecret, err := getSecret(ctx, e, certManagerSecret)
		if err != nil {
			t.Fatal(err)
		}
		waitCABundle(t, e, tlsSecret.Data["ca.crt"])
		_, w := installedWebhook(t, e)
		verifyServing(t, w.ClientConfig.CABundle, tlsSecret.Data["tls.crt"], fullname+"."+releaseNamespace+".svc")
	})

	t.Run("the service account can do what the server needs and nothing more", func(t *testing.T) {
		checkRBAC(t, e, modeWebhook)
	})

	t.Run("namespace editors may write MeshRolePolicies there, and no ClusterMeshRolePolicy", func(t *testing.T) {
		checkPolicyAuthorRBAC(t, e)
	})

	t.Run("end to end: the installed configuration sends pods to meshrole, serving a certificate from the chart's CA Issuer", func(t *testing.T) {
		// A certificate for 127.0.0.1 from the chart's own CA Issuer, issued
		// by cert-manager: the caBundle the CA injector maintains then
		// verifies the local server, and is left as injected.
		crt := &cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-local-webhook", Namespace: releaseNamespace},
			Spec: cmapi.CertificateSpec{
				SecretName:  "e2e-local-webhook",
				CommonName:  "127.0.0.1",
				IPAddresses: []string{"127.0.0.1"},
				Usages:      []cmapi.KeyUsage{cmapi.UsageServerAuth, cmapi.UsageDigitalSignature},
				PrivateKey:  &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256},
				IssuerRef:   cmmeta.IssuerReference{Group: "cert-manager.io", Kind: "Issuer", Name: fullname + "-ca"},
			},
		}
		if err := e.Client.Create(ctx, crt); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = e.Client.Delete(context.Background(), crt)
			_ = e.Client.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: crt.Spec.SecretName, Namespace: releaseNamespace}})
		})
		waitCertificateReady(t, e, crt.Name)
		s, err := getSecret(ctx, e, crt.Spec.SecretName)
		if err != nil {
			t.Fatal(err)
		}
		w := startLocalWebhook(t, e, "webhook-cert-manager", s.Data["ca.crt"], s.Data["tls.crt"], s.Data["tls.key"])
		pointInstalledWebhookAt(t, e, w.URL(), nil)
		waitCABundle(t, e, s.Data["ca.crt"])
		e2eThroughInstalledChart(t, e, w, "shop-cm")
	})

	t.Run("helm uninstall removes everything the chart created", func(t *testing.T) {
		e.helmUninstall(t)
		checkUninstalled(t, e, rel)
		// cert-manager's CertificateRequests are owned by the deleted
		// Certificates: the garbage collector removes them.
		if err := eventually(ctx, time.Minute, func() (bool, string, error) {
			var crs cmapi.CertificateRequestList
			if err := e.Client.List(ctx, &crs, client.InNamespace(releaseNamespace)); err != nil {
				return false, "", err
			}
			return len(crs.Items) == 0, "CertificateRequests left", nil
		}); err != nil {
			t.Error(err)
		}
		// What cert-manager issued stays, as cert-manager keeps the Secrets
		// of deleted Certificates unless it runs with
		// --enable-certificate-owner-ref (the chart's README says so).
		var secrets corev1.SecretList
		if err := e.Client.List(ctx, &secrets, client.InNamespace(releaseNamespace)); err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets.Items {
			if owner := s.Annotations[cmapi.CertificateNameKey]; owner != "" {
				t.Logf("left by cert-manager (not by the chart): Secret %s (issued for Certificate %s)", s.Name, owner)
				continue
			}
			t.Errorf("Secret %s left after helm uninstall", s.Name)
		}
	})
}

// TestInstallWithGeneratedCertificates installs the chart without
// cert-manager: Helm generates the CA and the serving certificate.
func TestInstallWithGeneratedCertificates(t *testing.T) {
	e := controlPlane(t)
	e.cleanSlateAfter(t)
	ctx := t.Context()
	vals := map[string]any{"certManager": map[string]any{"enabled": false}}
	rel := e.helmInstall(t, vals)

	var firstSecret *corev1.Secret
	t.Run("every rendered object is accepted by the API server", func(t *testing.T) {
		checkAccepted(t, e, rel, append(baseKinds, "Secret"))
		checkWebhookContract(t, e)
		if got := kinds(manifestObjects(t, rel.Manifest)); got["Certificate"]+got["Issuer"] != 0 {
			t.Errorf("cert-manager objects rendered with certManager.enabled=false: %v", got)
		}
		mwc, _ := installedWebhook(t, e)
		if _, ok := mwc.Annotations["cert-manager.io/inject-ca-from"]; ok {
			t.Errorf("cert-manager.io/inject-ca-from set with certManager.enabled=false")
		}
	})

	t.Run("the caBundle is the generated CA, and the serving certificate verifies against it for the Service", func(t *testing.T) {
		s, err := getSecret(ctx, e, generatedSecret)
		if err != nil {
			t.Fatal(err)
		}
		firstSecret = s
		if s.Type != corev1.SecretTypeTLS {
			t.Errorf("Secret %s has type %s, want %s", s.Name, s.Type, corev1.SecretTypeTLS)
		}
		_, w := installedWebhook(t, e)
		if len(w.ClientConfig.CABundle) == 0 || !bytes.Equal(w.ClientConfig.CABundle, s.Data["ca.crt"]) {
			t.Fatalf("caBundle (%d bytes) is not the ca.crt of Secret %s", len(w.ClientConfig.CABundle), s.Name)
		}
		verifyServing(t, w.ClientConfig.CABundle, s.Data["tls.crt"], serviceDNSNames...)
	})

	t.Run("helm upgrade keeps the generated certificate (read back with lookup)", func(t *testing.T) {
		if firstSecret == nil {
			t.Skip("no Secret from the install")
		}
		upVals := map[string]any{
			"certManager": map[string]any{"enabled": false},
			"webhook":     map[string]any{"timeoutSeconds": 4},
		}
		up := e.helmUpgrade(t, upVals)
		if up.Version != 2 {
			t.Errorf("upgrade made revision %d, want 2", up.Version)
		}
		rel = up
		s, err := getSecret(ctx, e, generatedSecret)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if !bytes.Equal(s.Data[k], firstSecret.Data[k]) {
				t.Errorf("Secret %s: %s changed on helm upgrade", s.Name, k)
			}
		}
		_, w := installedWebhook(t, e)
		if !bytes.Equal(w.ClientConfig.CABundle, firstSecret.Data["ca.crt"]) {
			t.Errorf("caBundle changed on helm upgrade")
		}
		if w.TimeoutSeconds == nil || *w.TimeoutSeconds != 4 {
			t.Errorf("timeoutSeconds %v after upgrading with webhook.timeoutSeconds=4: the upgrade was not applied", w.TimeoutSeconds)
		}
	})

	t.Run("the service account can do what the server needs and nothing more", func(t *testing.T) {
		checkRBAC(t, e, modeWebhook)
	})

	t.Run("end to end: the installed configuration sends pods to meshrole, with a caBundle the test controls", func(t *testing.T) {
		b, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		w := startLocalWebhook(t, e, "webhook-generated", b.CAPEM, b.CertPEM, b.KeyPEM)
		pointInstalledWebhookAt(t, e, w.URL(), b.CAPEM)
		e2eThroughInstalledChart(t, e, w, "shop-gen")
	})

	t.Run("helm uninstall removes everything the chart created", func(t *testing.T) {
		e.helmUninstall(t)
		checkUninstalled(t, e, rel)
		var secrets corev1.SecretList
		if err := e.Client.List(ctx, &secrets, client.InNamespace(releaseNamespace)); err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets.Items {
			t.Errorf("Secret %s left after helm uninstall", s.Name)
		}
	})
}

func waitCertificateReady(t *testing.T, e *env, name string) {
	t.Helper()
	ctx := t.Context()
	var crt cmapi.Certificate
	err := eventually(ctx, 90*time.Second, func() (bool, string, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: name}, &crt); err != nil {
			return false, err.Error(), nil
		}
		for _, c := range crt.Status.Conditions {
			if c.Type == cmapi.CertificateConditionReady && c.Status == cmmeta.ConditionTrue {
				return true, "", nil
			}
		}
		return false, "conditions " + conditionsString(crt.Status.Conditions), nil
	})
	if err != nil {
		t.Fatalf("Certificate %s/%s not Ready: %v", releaseNamespace, name, err)
	}
	t.Logf("Certificate %s/%s Ready (secret %s, revision %d)", releaseNamespace, name, crt.Spec.SecretName, ptrValue(crt.Status.Revision))
}

func conditionsString(conds []cmapi.CertificateCondition) string {
	var b bytes.Buffer
	for _, c := range conds {
		b.WriteString(string(c.Type) + "=" + string(c.Status) + " (" + c.Reason + ": " + c.Message + ") ")
	}
	return b.String()
}

func ptrValue(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// waitCABundle waits until the installed webhook's caBundle is want.
func waitCABundle(t *testing.T, e *env, want []byte) {
	t.Helper()
	ctx := t.Context()
	err := eventually(ctx, 60*time.Second, func() (bool, string, error) {
		_, w := installedWebhook(t, e)
		if bytes.Equal(w.ClientConfig.CABundle, want) {
			return true, "", nil
		}
		return false, fmt.Sprintf("caBundle has %d bytes, not the CA", len(w.ClientConfig.CABundle)), nil
	})
	if err != nil {
		t.Fatalf("caBundle of %s: %v", webhookConfigurationName, err)
	}
}
