package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteDirVerifiesForEveryHost(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	hosts := []string{"localhost", "127.0.0.1", "meshrole.meshrole-system.svc", "::1"}
	b, err := WriteDir(dir, Options{Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}

	read := func(name string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	caPEM, crtPEM, keyPEM := read(CAFile), read(CertFile), read(KeyFile)
	if string(caPEM) != string(b.CAPEM) {
		t.Errorf("%s differs from Bundle.CAPEM", CAFile)
	}
	if blk, rest := pem.Decode(caPEM); blk == nil || blk.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Errorf("%s is not exactly one CERTIFICATE block", CAFile)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode: %v %v, want 0600", KeyFile, fi.Mode().Perm(), err)
	}

	// The key matches the certificate.
	pair, err := tls.X509KeyPair(crtPEM, keyPEM)
	if err != nil {
		t.Fatalf("tls.crt and tls.key do not form a pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.IsCA {
		t.Error("serving certificate is a CA")
	}
	if !b.CA.IsCA {
		t.Error("CA certificate is not a CA")
	}
	if got := time.Until(leaf.NotAfter); got < DefaultValidity-time.Hour {
		t.Errorf("serving certificate expires in %v, want about %v", got, DefaultValidity)
	}

	// It verifies against the CA for each host, for server auth.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{
			DNSName:   h,
			Roots:     roots,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			t.Errorf("verify for %q: %v", h, err)
		}
	}
	// ... and not for a host it was not made for, nor against another CA.
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "example.org", Roots: roots}); err == nil {
		t.Error("verified for a host not in the certificate")
	}
	other, err := Generate(Options{Hosts: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.CA)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: otherRoots}); err == nil {
		t.Error("verified against an unrelated CA")
	}

	// A real TLS handshake, as the API server does it.
	srvCfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	for _, name := range []string{"localhost", "127.0.0.1"} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
		if err != nil {
			t.Errorf("TLS handshake as %q: %v", name, err)
			continue
		}
		_ = conn.Close()
	}
	if ip := net.ParseIP("127.0.0.1"); !leaf.IPAddresses[0].Equal(ip) {
		t.Errorf("first IP SAN = %v, want %v", leaf.IPAddresses[0], ip)
	}
}

func TestGenerateNeedsHosts(t *testing.T) {
	if _, err := Generate(Options{}); err == nil {
		t.Fatal("Generate without hosts succeeded")
	}
}
