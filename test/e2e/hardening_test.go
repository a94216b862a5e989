package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrole/meshrole/certs"
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
		config.Webhooks[0].ClientConfig.CABundle = oldCA
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
