package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/certs"
	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

// allPeersPolicy makes every pod of its namespace peer-stateful.
const allPeersPolicy = `
apiVersion: meshrole.io/v1alpha1
kind: MeshRolePolicy
metadata: {name: peers}
spec:
  workloads:
  - name: all-peers
    selector: {}
    role: peer-stateful
`

func webhookAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Webhook.Port))
}

// servedCert returns the certificate the webhook presents now.
func servedCert(t *testing.T, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", webhookAddr(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS to the webhook: %v", err)
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0]
}

// restoreSuiteCertificate puts the suite's own serving certificate back in
// the webhook's cert dir and waits until it is served: the harness restarts
// the webhook trusting only the suite's CA.
func restoreSuiteCertificate(t *testing.T, roots *x509.CertPool) {
	t.Helper()
	if err := h.Certs.Write(h.CertDir); err != nil {
		t.Error(err)
		return
	}
	for deadline := time.Now().Add(30 * time.Second); !servedCert(t, roots).Equal(h.Certs.Cert); {
		if time.Now().After(deadline) {
			t.Error("the suite's certificate was not served again")
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testTLSVersions: the webhook port speaks TLS 1.2 and 1.3 only.
func testTLSVersions(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", webhookAddr(), &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v}) //nolint:gosec // probing that old versions are refused
		if err == nil {
			_ = conn.Close()
			t.Errorf("the webhook accepted %s", tls.VersionName(v))
		}
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", webhookAddr(), &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v}) //nolint:gosec // only the version matters here
		if err != nil {
			t.Errorf("%s refused: %v", tls.VersionName(v), err)
			continue
		}
		_ = conn.Close()
	}
}

// testNamespaceIsolation: a MeshRolePolicy in one namespace never decides
// for pods in another, even one where meshrole is enabled.
func testNamespaceIsolation(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	const a, b = "e2e-isolation-a", "e2e-isolation-b"
	createNamespace(t, ctx, a, true, nil)
	createNamespace(t, ctx, b, true, nil)
	applyYAML(t, ctx, a, allPeersPolicy)
	inA := newPod(a, "x", map[string]string{"app": "x"}, nil)
	inB := newPod(b, "x", map[string]string{"app": "x"}, nil)
	for _, p := range []*corev1.Pod{inA, inB} {
		if err := h.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if inA.Annotations[roleKey] != "peer-stateful" {
		t.Errorf("pod in %s: annotations %v, want the policy's verdict", a, inA.Annotations)
	}
	if got := meshKeys(merge(inB.Labels, inB.Annotations)); len(got) != 0 {
		t.Errorf("a policy in %s changed a pod in %s: %v", a, b, got)
	}
}

// testCertificateRotation: new serving certificate files in --cert-dir are
// served without a restart, and the API server keeps calling the webhook.
func testCertificateRotation(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	next, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	// As with cert-manager's CA injection, the bundle trusts both CAs while
	// the serving certificate changes.
	var config admissionregistrationv1.MutatingWebhookConfiguration
	if err := h.Client.Get(ctx, client.ObjectKey{Name: harness.WebhookConfigurationName}, &config); err != nil {
		t.Fatal(err)
	}
	oldCA := config.Webhooks[0].ClientConfig.CABundle
	config.Webhooks[0].ClientConfig.CABundle = append(bytes.Clone(oldCA), next.CAPEM...)
	if err := h.Client.Update(ctx, &config); err != nil {
		t.Fatal(err)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(oldCA)
	roots.AppendCertsFromPEM(next.CAPEM)
	before := servedCert(t, roots)
	if err := next.Write(h.CertDir); err != nil {
		t.Fatal(err)
	}
	// Put the suite's own certificate back afterwards (the harness restarts
	// the webhook trusting only its CA), and rotate it once more doing so.
	t.Cleanup(func() {
		restoreSuiteCertificate(t, roots)
		if err := h.Client.Get(ctx, client.ObjectKey{Name: harness.WebhookConfigurationName}, &config); err == nil {
			config.Webhooks[0].ClientConfig.CABundle = oldCA
			if err := h.Client.Update(ctx, &config); err != nil {
				t.Error(err)
			}
		}
	})
	start := time.Now()
	for !servedCert(t, roots).Equal(next.Cert) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("still serving %s 30s after rotation", before.SerialNumber)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("new certificate served %s after the files changed, without a restart", time.Since(start).Round(time.Millisecond))

	const ns = "e2e-rotation"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, allPeersPolicy)
	pod := newPod(ns, "after-rotation", map[string]string{"app": "x"}, nil)
	if err := h.Client.Create(ctx, pod); err != nil {
		t.Fatalf("pod creation after rotation: %v", err)
	}
	if pod.Annotations[roleKey] != "peer-stateful" {
		t.Errorf("pod after rotation: annotations %v", pod.Annotations)
	}
}

// testRotationUnderLoad: the serving certificate files change while
// admissions keep arriving, each on a new TLS connection: none fails, and
// both certificates are seen.
func testRotationUnderLoad(t *testing.T) {
	ctx := scenario(t, 60*time.Second)
	next, err := certs.Generate(certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.Certs.CAPEM)
	roots.AppendCertsFromPEM(next.CAPEM)
	t.Cleanup(func() {
		restoreSuiteCertificate(t, roots)
	})

	const ns = "e2e-rotation-load"
	createNamespace(t, ctx, ns, true, nil)
	applyYAML(t, ctx, ns, allPeersPolicy)
	body, err := loadgen.TypicalReview(ns)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var result loadgen.Result
	var runErr error
	go func() {
		defer close(done)
		result, runErr = loadgen.Run(ctx, loadgen.Options{
			URL: h.Webhook.URL(), RootCAs: roots, ServerName: "127.0.0.1",
			HTTP1: true, DisableKeepAlives: true, Workers: 2, Duration: 3 * time.Second, Body: body, ExpectPatch: true,
		})
	}()
	time.Sleep(time.Second)
	if err := next.Write(h.CertDir); err != nil {
		t.Fatal(err)
	}
	<-done
	if runErr != nil {
		t.Fatal(runErr)
	}
	t.Logf("%d admissions during the rotation, %d failed, %d handshakes, certificates served: %v",
		result.Requests, result.Errors, result.Handshakes, result.ServerCertificates)
	if result.Requests == 0 || result.Errors != 0 {
		t.Fatalf("%d requests, %d failed: %v %v", result.Requests, result.Errors, result.ErrorKinds, result.ErrorSamples)
	}
	serial := func(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }
	if !slices.Contains(result.ServerCertificates, serial(h.Certs.Cert)) || !slices.Contains(result.ServerCertificates, serial(next.Cert)) {
		t.Errorf("served certificates %v, want both %s (before) and %s (after)", result.ServerCertificates, serial(h.Certs.Cert), serial(next.Cert))
	}
}

// testPolicyChurnUnderLoad: policies are created, updated and deleted while
// admissions keep arriving. Every answer must be the whole verdict of one
// policy generation: a role, its policy and entry, and exactly that role's
// Istio keys — never a mix.
func testPolicyChurnUnderLoad(t *testing.T) {
	ctx := scenario(t, 90*time.Second)
	const ns, churn = "e2e-churn", 1000
	createNamespace(t, ctx, ns, true, nil)
	body, err := loadgen.TypicalReview(ns)
	if err != nil {
		t.Fatal(err)
	}

	consistent := func(resp *admissionv1.AdmissionResponse) error {
		if len(resp.Patch) == 0 {
			return nil // no policy at that instant
		}
		var ops []struct {
			Path  string `json:"path"`
			Value any    `json:"value"`
		}
		if err := json.Unmarshal(resp.Patch, &ops); err != nil {
			return err
		}
		set := map[string]any{}
		for _, op := range ops {
			set[op.Path] = op.Value
		}
		role, _ := set["/metadata/annotations/meshrole.io~1role"].(string)
		policyRef, _ := set["/metadata/annotations/meshrole.io~1policy"].(string)
		var want string
		switch role {
		case "peer-stateful":
			want = "false"
		case "client-stateless":
			want = "true"
		default:
			return fmt.Errorf("patch without a role: %s", resp.Patch)
		}
		if got := set["/metadata/labels/sidecar.istio.io~1inject"]; got != want {
			return fmt.Errorf("role %s from %s but inject label %v: %s", role, policyRef, got, resp.Patch)
		}
		// Policies named p-<n> with an even n make peers, odd n clients.
		var n int
		if _, err := fmt.Sscanf(policyRef, ns+"/p-%d", &n); err != nil {
			return fmt.Errorf("policy %q: %w", policyRef, err)
		}
		if (n%2 == 0) != (role == "peer-stateful") {
			return fmt.Errorf("policy %s gave role %s", policyRef, role)
		}
		return nil
	}

	// The load runs until the churn is over (bounded at 60 s).
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.Certs.CAPEM)
	done := make(chan struct{})
	var result loadgen.Result
	var runErr error
	go func() {
		defer close(done)
		result, runErr = loadgen.Run(loadCtx, loadgen.Options{
			URL: h.Webhook.URL(), RootCAs: roots, ServerName: "127.0.0.1",
			Workers: 2, Duration: 60 * time.Second, Body: body, Check: consistent,
		})
	}()

	policyOf := func(n int) *v1alpha1.MeshRolePolicy {
		role := v1alpha1.RolePeerStateful
		if n%2 == 1 {
			role = v1alpha1.RoleClientStateless
		}
		return &v1alpha1.MeshRolePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p-%d", n)},
			Spec: v1alpha1.PolicySpec{Priority: int32(n % 7), Workloads: []v1alpha1.Workload{
				{Name: "all", Role: role, Selector: metav1.LabelSelector{}},
			}},
		}
	}
	start := time.Now()
	for i := range churn {
		p := policyOf(i % 50)
		switch (i / 50) % 3 {
		case 0:
			err = client.IgnoreAlreadyExists(h.Client.Create(ctx, p))
		case 1:
			// An update that keeps the name but moves the priority.
			var cur v1alpha1.MeshRolePolicy
			if err = h.Client.Get(ctx, client.ObjectKeyFromObject(p), &cur); err == nil {
				cur.Spec.Priority = int32((i * 3) % 11)
				err = h.Client.Update(ctx, &cur)
			}
			err = client.IgnoreNotFound(err)
		default:
			err = client.IgnoreNotFound(h.Client.Delete(ctx, p))
		}
		if err != nil && !apierrors.IsConflict(err) {
			t.Fatalf("change %d: %v", i, err)
		}
	}
	changes := time.Since(start)
	stopLoad()
	<-done
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		t.Fatal(runErr)
	}
	t.Logf("%d policy changes in %s while %d admissions were answered (%d patched), %d inconsistent or failed",
		churn, changes.Round(time.Millisecond), result.Requests, result.Patched, result.Errors)
	if result.Requests == 0 || result.Errors != 0 {
		t.Fatalf("%d admissions, %d failed: %v %v", result.Requests, result.Errors, result.ErrorKinds, result.ErrorSamples)
	}
}
