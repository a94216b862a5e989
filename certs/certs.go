// Package certs makes a throw-away CA and a serving certificate signed by it,
// for running the meshrole webhook locally and in tests. It uses
// cert-manager's pkg/util/pki, the same code cert-manager's CA and SelfSigned
// issuers use, so local certificates look like the ones a cluster gets.
package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// File names written by WriteDir; tls.crt and tls.key are what the webhook's
// --cert-dir expects, ca.crt is the caBundle for the webhook configuration.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// DefaultValidity is how long generated certificates are valid.
const DefaultValidity = 365 * 24 * time.Hour

// Options for Generate.
type Options struct {
	// Hosts are DNS names and IP addresses the serving certificate is valid
	// for, e.g. "localhost", "127.0.0.1". At least one is required.
	Hosts []string
	// Validity of both certificates; DefaultValidity when zero.
	Validity time.Duration
	// CommonName of the serving certificate; the first DNS name (or
	// "meshrole-webhook") when empty.
	CommonName string
}

// Bundle is a CA and a serving certificate it signed, PEM-encoded.
type Bundle struct {
	// CAPEM is the CA certificate: the webhook configuration's caBundle.
	CAPEM []byte
	// CertPEM is the serving certificate (tls.crt).
	CertPEM []byte
	// KeyPEM is the serving certificate's private key (tls.key).
	KeyPEM []byte

	// CA and Cert are the parsed certificates.
	CA   *x509.Certificate
	Cert *x509.Certificate
}

// Generate makes an ECDSA P-256 CA and a serving certificate for opts.Hosts
// signed by it.
func Generate(opts Options) (*Bundle, error) {
	if len(opts.Hosts) == 0 {
		return nil, fmt.Errorf("certs: at least one host (DNS name or IP address) is required")
	}
	validity := opts.Validity
	if validity == 0 {
		validity = DefaultValidity
	}
	var dnsNames, ips []string
	for _, h := range opts.Hosts {
		if h == "" {
			return nil, fmt.Errorf("certs: empty host")
		}
		if net.ParseIP(h) != nil {
			ips = append(ips, h)
		} else {
			dnsNames = append(dnsNames, h)
		}
	}
	cn := opts.CommonName
	if cn == "" {
		cn = "meshrole-webhook"
		if len(dnsNames) > 0 {
			cn = dnsNames[0]
		}
	}

	// The CA: self-signed, as cert-manager's SelfSigned issuer does it.
	caKey, err := pki.GenerateECPrivateKey(pki.ECCurve256)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	caTmpl, err := template(&cmapi.Certificate{Spec: cmapi.CertificateSpec{
		CommonName: "meshrole-local-ca",
		IsCA:       true,
		Duration:   &metav1.Duration{Duration: validity},
		PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: pki.ECCurve256},
		Usages:     []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
	}}, caKey.Public())
	if err != nil {
		return nil, fmt.Errorf("certs: CA template: %w", err)
	}
	_, caCert, err := pki.SignCertificate(caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: sign CA: %w", err)
	}

	// The serving certificate, signed by the CA as cert-manager's CA issuer does it.
	key, err := pki.GenerateECPrivateKey(pki.ECCurve256)
	if err != nil {
		return nil, fmt.Errorf("certs: serving key: %w", err)
	}
	tmpl, err := template(&cmapi.Certificate{Spec: cmapi.CertificateSpec{
		CommonName:  cn,
		DNSNames:    dnsNames,
		IPAddresses: ips,
		Duration:    &metav1.Duration{Duration: validity},
		PrivateKey:  &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: pki.ECCurve256},
		Usages:      []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageServerAuth},
	}}, key.Public())
	if err != nil {
		return nil, fmt.Errorf("certs: serving template: %w", err)
	}
	certPEM, cert, err := pki.SignCertificate(tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: sign serving certificate: %w", err)
	}
	keyPEM, err := pki.EncodePrivateKey(key, cmapi.PKCS8)
	if err != nil {
		return nil, fmt.Errorf("certs: encode key: %w", err)
	}
	caPEM, err := pki.EncodeX509(caCert)
	if err != nil {
		return nil, fmt.Errorf("certs: encode CA: %w", err)
	}
	return &Bundle{CAPEM: caPEM, CertPEM: certPEM, KeyPEM: keyPEM, CA: caCert, Cert: cert}, nil
}

// template turns a cert-manager Certificate spec into an x509 template the
// way cert-manager's issuers do, and fills in the public key and a serial.
func template(crt *cmapi.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	tmpl, err := pki.CertificateTemplateFromCertificate(crt)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.PublicKey = pub
	// Tolerate small clock differences between the machine that signs and the
	// one that verifies.
	tmpl.NotBefore = tmpl.NotBefore.Add(-time.Minute)
	return tmpl, nil
}

// WriteDir generates a bundle (see Generate) and writes ca.crt, tls.crt and
// tls.key into dir, creating it if needed. Files are replaced atomically so
// that a webhook watching dir never reads a half-written pair.
func WriteDir(dir string, opts Options) (*Bundle, error) {
	b, err := Generate(opts)
	if err != nil {
		return nil, err
	}
	if err := b.Write(dir); err != nil {
		return nil, err
	}
	return b, nil
}

// Write writes the bundle's ca.crt, tls.crt and tls.key into dir.
func (b *Bundle) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, b.CAPEM, 0o644},
		// The key before the certificate: a watcher that reloads on tls.crt
		// then sees a matching pair.
		{KeyFile, b.KeyPEM, 0o600},
		{CertFile, b.CertPEM, 0o644},
	} {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
