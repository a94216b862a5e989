package install_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/release"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/test/harness"
)

// meshrole's CRDs, installed by Helm from the chart's crds/.
var meshroleCRDs = []string{"meshrolepolicies.meshrole.io", "clustermeshrolepolicies.meshrole.io"}

// webhookConfigurationName is the chart's default webhook.name.
const webhookConfigurationName = "00-meshrole"

// checkAccepted checks that every object of the release's manifest exists in
// the API server as Helm created it, that the kinds in want were rendered,
// that the chart's CRDs are established, and that the hooks (`helm test`'s
// pod, in webhook mode) would be accepted too (server-side dry-run create: no kubelet here to
// run them).
func checkAccepted(t *testing.T, e *env, rel *release.Release, want []string) {
	t.Helper()
	ctx := t.Context()
	objs := manifestObjects(t, rel.Manifest)
	t.Logf("rendered: %s", strings.Join(objectIDs(objs), ", "))
	got := kinds(objs)
	for _, k := range want {
		if got[k] == 0 {
			t.Errorf("the chart rendered no %s (rendered kinds: %v)", k, got)
		}
	}
	for _, u := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
			t.Errorf("%s: not in the API server after helm install: %v", objectID(u), err)
			continue
		}
		namespaced, err := e.Client.IsObjectNamespaced(u)
		if err != nil {
			t.Errorf("%s: %v", objectID(u), err)
			continue
		}
		if namespaced && u.GetNamespace() != releaseNamespace {
			t.Errorf("%s: rendered in namespace %q, want the release namespace %s", objectID(u), u.GetNamespace(), releaseNamespace)
		}
		if a := live.GetAnnotations(); a["meta.helm.sh/release-name"] != releaseName || a["meta.helm.sh/release-namespace"] != releaseNamespace {
			t.Errorf("%s: Helm ownership annotations %v", objectID(u), a)
		}
		if l := live.GetLabels(); l["app.kubernetes.io/instance"] != releaseName || l["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s: labels %v lack the chart's instance/managed-by labels", objectID(u), l)
		}
	}
	for _, name := range meshroleCRDs {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
			t.Errorf("CRD %s from the chart's crds/: %v", name, err)
			continue
		}
		established := false
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			t.Errorf("CRD %s is not Established: %v", name, crd.Status.Conditions)
		}
	}
	if len(rel.Hooks) == 0 && slices.Contains(want, "MutatingWebhookConfiguration") {
		t.Errorf("the release has no hooks; the chart's `helm test` pod is missing")
	}
	for _, h := range rel.Hooks {
		for _, u := range manifestObjects(t, h.Manifest) {
			if err := e.Client.Create(ctx, u.DeepCopy(), client.DryRunAll); err != nil {
				t.Errorf("hook %s (%s, events %v) refused by the API server (dry run): %v", h.Name, h.Path, h.Events, err)
			} else {
				t.Logf("hook %s (%s, events %v): accepted (server-side dry run)", objectID(u), h.Path, h.Events)
			}
		}
	}
}

// installedWebhook returns the MutatingWebhookConfiguration the chart
// installed and its one webhook.
func installedWebhook(t *testing.T, e *env) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.MutatingWebhook) {
	t.Helper()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := e.Client.Get(t.Context(), client.ObjectKey{Name: webhookConfigurationName}, &mwc); err != nil {
		t.Fatalf("MutatingWebhookConfiguration %s: %v", webhookConfigurationName, err)
	}
	if len(mwc.Webhooks) != 1 || mwc.Webhooks[0].Name != "pods.meshrole.io" {
		t.Fatalf("MutatingWebhookConfiguration %s has webhooks %v, want exactly pods.meshrole.io", mwc.Name, webhookNames(&mwc))
	}
	return &mwc, &mwc.Webhooks[0]
}

func webhookNames(mwc *admissionregistrationv1.MutatingWebhookConfiguration) []string {
	var names []string
	for _, w := range mwc.Webhooks {
		names = append(names, w.Name)
	}
	return names
}

// checkWebhookContract checks the installed webhook against docs/design.md, "Webhook contract":
// the Service path, CREATE pods only, v1 reviews, no side effects, Fail,
// timeout ≤ 5 s, never reinvoked, opt-in namespaces without the release
// namespace and kube-system.
func checkWebhookContract(t *testing.T, e *env) {
	t.Helper()
	_, w := installedWebhook(t, e)
	svc := w.ClientConfig.Service
	if svc == nil || svc.Name != fullname || svc.Namespace != releaseNamespace || svc.Path == nil || *svc.Path != harness.WebhookPath || svc.Port == nil || *svc.Port != 443 {
		t.Errorf("clientConfig.service = %+v, want %s/%s:443%s", svc, releaseNamespace, fullname, harness.WebhookPath)
	}
	if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy %v, want Fail", w.FailurePolicy)
	}
	if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
		t.Errorf("sideEffects %v, want None", w.SideEffects)
	}
	if w.TimeoutSeconds == nil || *w.TimeoutSeconds > 5 {
		t.Errorf("timeoutSeconds %v, want <= 5", w.TimeoutSeconds)
	}
	if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.NeverReinvocationPolicy {
		t.Errorf("reinvocationPolicy %v, want Never", w.ReinvocationPolicy)
	}
	if !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions %v, want [v1]", w.AdmissionReviewVersions)
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
		!slices.Equal(w.Rules[0].Resources, []string{"pods"}) || !slices.Equal(w.Rules[0].APIGroups, []string{""}) {
		t.Errorf("rules %+v, want CREATE on core pods only", w.Rules)
	}
	sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
	if err != nil {
		t.Fatalf("namespaceSelector: %v", err)
	}
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"meshrole.io/enabled": "true", "kubernetes.io/metadata.name": "shop"}, true},
		{map[string]string{"kubernetes.io/metadata.name": "shop"}, false},
		{map[string]string{"meshrole.io/enabled": "false", "kubernetes.io/metadata.name": "shop"}, false},
		{map[string]string{"meshrole.io/enabled": "true", "kubernetes.io/metadata.name": releaseNamespace}, false},
		{map[string]string{"meshrole.io/enabled": "true", "kubernetes.io/metadata.name": "kube-system"}, false},
	} {
		if got := sel.Matches(labels.Set(tc.labels)); got != tc.want {
			t.Errorf("namespaceSelector %q matches a namespace labelled %v: %v, want %v", sel, tc.labels, got, tc.want)
		}
	}
}

// parseCert decodes exactly one PEM certificate.
func parseCert(t *testing.T, what string, data []byte) *x509.Certificate {
	t.Helper()
	blk, rest := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: not a PEM certificate", what)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: more than one PEM block", what)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return c
}

// verifyServing checks that certPEM chains to caPEM as a TLS server
// certificate for every name the API server or an in-cluster client may dial.
func verifyServing(t *testing.T, caPEM, certPEM []byte, names ...string) {
	t.Helper()
	ca := parseCert(t, "CA", caPEM)
	if !ca.IsCA {
		t.Errorf("CA certificate %q is not a CA (basicConstraints)", ca.Subject)
	}
	cert := parseCert(t, "serving certificate", certPEM)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range names {
		if _, err := cert.Verify(x509.VerifyOptions{
			DNSName:   name,
			Roots:     roots,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			t.Errorf("serving certificate (SANs %v %v) does not verify for %s against the CA %q: %v",
				cert.DNSNames, cert.IPAddresses, name, ca.Subject, err)
		}
	}
	t.Logf("serving certificate %q (SANs %v %v, expires %s) verifies against CA %q for %v",
		cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses, cert.NotAfter.Format(time.DateOnly), ca.Subject.CommonName, names)
}

// serviceDNSNames are the names the chart's serving certificate must cover.
var serviceDNSNames = []string{
	fullname,
	fullname + "." + releaseNamespace,
	fullname + "." + releaseNamespace + ".svc",
	fullname + "." + releaseNamespace + ".svc.cluster.local",
}

func getSecret(ctx context.Context, e *env, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: name}, &s)
	return &s, err
}

// checkUninstalled checks that nothing the release's manifest created is
// left, that Helm's release records are gone and that the CRDs are kept (as
// Helm does with crds/).
func checkUninstalled(t *testing.T, e *env, rel *release.Release) {
	t.Helper()
	ctx := t.Context()
	for _, u := range manifestObjects(t, rel.Manifest) {
		err := eventually(ctx, 30*time.Second, func() (bool, string, error) {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(u.GroupVersionKind())
			err := e.Client.Get(ctx, client.ObjectKeyFromObject(u), live)
			switch {
			case apierrors.IsNotFound(err):
				return true, "", nil
			case err != nil:
				return false, err.Error(), nil
			case live.GetDeletionTimestamp() != nil:
				return false, fmt.Sprintf("being deleted (finalizers %v)", live.GetFinalizers()), nil
			}
			return false, "still exists", nil
		})
		if err != nil {
			t.Errorf("%s after helm uninstall: %v", objectID(u), err)
		}
	}
	var secrets corev1.SecretList
	if err := e.Client.List(ctx, &secrets, client.InNamespace(releaseNamespace), client.MatchingLabels{"owner": "helm", "name": releaseName}); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		t.Errorf("Helm release record %s left after uninstall", s.Name)
	}
	for _, name := range meshroleCRDs {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
			t.Errorf("CRD %s should stay after helm uninstall (Helm never deletes crds/): %v", name, err)
		}
	}
	// Nothing cluster-scoped with the release's labels may remain.
	sel := client.MatchingLabels{"app.kubernetes.io/instance": releaseName}
	for _, list := range []client.ObjectList{
		&admissionregistrationv1.MutatingWebhookConfigurationList{},
		&rbacv1.ClusterRoleList{},
		&rbacv1.ClusterRoleBindingList{},
	} {
		if err := e.Client.List(ctx, list, sel); err != nil {
			t.Fatal(err)
		}
		if n := apimeta.LenList(list); n > 0 {
			t.Errorf("%T: %d objects labelled app.kubernetes.io/instance=%s left", list, n, releaseName)
		}
	}
}
