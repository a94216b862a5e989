package install_test

import (
	"bytes"
	"crypto/x509"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestSwitchCertificateModes moves an installed release from cert-manager to
// Helm-generated certificates and back with `helm upgrade`, as an operator
// does when cert-manager is removed from (or added to) a cluster, and
// reinstalls without cert-manager after uninstalling a cert-manager release
// (whose Secrets cert-manager leaves behind).
func TestSwitchCertificateModes(t *testing.T) {
	e := controlPlane(t)
	e.certManagerFor(t)
	e.cleanSlateAfter(t)
	ctx := t.Context()
	withCertManager := map[string]any{"certManager": map[string]any{"enabled": true}}
	generated := map[string]any{"certManager": map[string]any{"enabled": false}}

	rel := e.helmInstall(t, withCertManager)
	waitCertificateReady(t, e, fullname+"-serving")
	cmSecret, err := getSecret(ctx, e, certManagerSecret)
	if err != nil {
		t.Fatal(err)
	}
	waitCABundle(t, e, cmSecret.Data["ca.crt"])

	var genSecret *corev1.Secret
	t.Run("helm upgrade to certManager.enabled=false generates certificates and trusts both CAs while the pods roll", func(t *testing.T) {
		rel = e.helmUpgrade(t, generated)
		s, err := getSecret(ctx, e, generatedSecret)
		if err != nil {
			t.Fatal(err)
		}
		genSecret = s
		if bytes.Equal(s.Data["ca.crt"], cmSecret.Data["ca.crt"]) {
			t.Errorf("the generated CA is cert-manager's")
		}
		verifyServing(t, s.Data["ca.crt"], s.Data["tls.crt"], serviceDNSNames...)
		_, w := installedWebhook(t, e)
		verifyBundleServing(t, "the old (cert-manager) serving certificate", w.ClientConfig.CABundle, cmSecret.Data["tls.crt"])
		verifyBundleServing(t, "the new (generated) serving certificate", w.ClientConfig.CABundle, s.Data["tls.crt"])
		if got := deploymentSecret(t, e); got != generatedSecret {
			t.Errorf("the Deployment mounts Secret %s, want %s", got, generatedSecret)
		}
		var crts cmapi.CertificateList
		if err := e.Client.List(ctx, &crts, client.InNamespace(releaseNamespace)); err != nil {
			t.Fatal(err)
		}
		if len(crts.Items) != 0 {
			t.Errorf("%d cert-manager Certificates left after switching to generated certificates", len(crts.Items))
		}
	})

	t.Run("the next helm upgrade keeps the generated certificate and drops cert-manager's CA", func(t *testing.T) {
		if genSecret == nil {
			t.Skip("no generated Secret")
		}
		rel = e.helmUpgrade(t, generated)
		s, err := getSecret(ctx, e, generatedSecret)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if !bytes.Equal(s.Data[k], genSecret.Data[k]) {
				t.Errorf("%s of Secret %s changed on a plain upgrade", k, s.Name)
			}
		}
		_, w := installedWebhook(t, e)
		if !bytes.Equal(w.ClientConfig.CABundle, genSecret.Data["ca.crt"]) {
			t.Errorf("caBundle is not just the generated CA after the second upgrade")
		}
	})

	t.Run("helm upgrade back to cert-manager: it issues again, the CA injector follows, the generated Secret goes", func(t *testing.T) {
		rel = e.helmUpgrade(t, withCertManager)
		waitCertificateReady(t, e, fullname+"-serving")
		s, err := getSecret(ctx, e, certManagerSecret)
		if err != nil {
			t.Fatal(err)
		}
		waitCABundle(t, e, s.Data["ca.crt"])
		verifyServing(t, s.Data["ca.crt"], s.Data["tls.crt"], serviceDNSNames...)
		if got := deploymentSecret(t, e); got != certManagerSecret {
			t.Errorf("the Deployment mounts Secret %s, want %s", got, certManagerSecret)
		}
		if _, err := getSecret(ctx, e, generatedSecret); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s after switching back to cert-manager: %v, want it deleted", generatedSecret, err)
		}
	})

	t.Run("helm uninstall, then helm install without cert-manager next to cert-manager's leftover Secrets", func(t *testing.T) {
		e.helmUninstall(t)
		checkUninstalled(t, e, rel)
		if _, err := getSecret(ctx, e, certManagerSecret); err != nil {
			t.Fatalf("cert-manager's Secret %s should be left after uninstall: %v", certManagerSecret, err)
		}
		rel = e.helmInstall(t, generated)
		s, err := getSecret(ctx, e, generatedSecret)
		if err != nil {
			t.Fatal(err)
		}
		_, w := installedWebhook(t, e)
		if !bytes.Equal(w.ClientConfig.CABundle, s.Data["ca.crt"]) {
			t.Errorf("caBundle is not the generated CA on a fresh install")
		}
		verifyServing(t, w.ClientConfig.CABundle, s.Data["tls.crt"], serviceDNSNames...)
		e.helmUninstall(t)
		checkUninstalled(t, e, rel)
	})
}

// deploymentSecret is the Secret the chart's Deployment mounts as its
// serving certificate.
func deploymentSecret(t *testing.T, e *env) string {
	t.Helper()
	var d appsv1.Deployment
	if err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: releaseNamespace, Name: fullname}, &d); err != nil {
		t.Fatal(err)
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "tls" && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	t.Fatalf("Deployment %s has no tls Secret volume", d.Name)
	return ""
}

// verifyBundleServing checks that certPEM (what) verifies against some CA
// in bundlePEM for the Service's name.
func verifyBundleServing(t *testing.T, what string, bundlePEM, certPEM []byte) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundlePEM) {
		t.Fatal("caBundle holds no certificate")
	}
	cert := parseCert(t, what, certPEM)
	name := fullname + "." + releaseNamespace + ".svc"
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("%s does not verify against the caBundle for %s: %v", what, name, err)
	}
}
