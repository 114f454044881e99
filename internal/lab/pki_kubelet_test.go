package lab

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestPKIKubelet: the API server's kubelet client certificate and a node's
// kubelet serving certificate are issued by the lab CA for their one use
// each, and their keys match.
func TestPKIKubelet(t *testing.T) {
	p := pki{dir: filepath.Join(t.TempDir(), "pki")}
	if _, err := p.generate(); err != nil {
		t.Fatal(err)
	}
	ip := NodeIP(2)
	certFile, keyFile, err := p.kubeletServing("lab-node-2", ip)
	if err != nil {
		t.Fatal(err)
	}
	if certFile != p.KubeletServingCert("lab-node-2") || keyFile != p.KubeletServingKey("lab-node-2") {
		t.Errorf("serving files %s %s", certFile, keyFile)
	}
	parse := func(path string) *x509.Certificate {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM", path)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	roots := x509.NewCertPool()
	roots.AddCert(parse(p.CACert()))
	serving, client := parse(certFile), parse(p.KubeletClientCert())

	if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: ip.String(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("serving certificate not valid for %s: %v", ip, err)
	}
	if err := serving.VerifyHostname(NodeIP(3).String()); err == nil {
		t.Error("node 2's certificate is valid for node 3's address")
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the serving certificate works as a client certificate")
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("kubelet client certificate: %v", err)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the kubelet client certificate works as a serving certificate")
	}
	for _, f := range []string{keyFile, p.KubeletClientKey()} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, st.Mode().Perm(), err)
		}
	}
	// The pairs load as TLS key pairs (key matches certificate).
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("serving pair: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(p.KubeletClientCert(), p.KubeletClientKey()); err != nil {
		t.Errorf("client pair: %v", err)
	}
	// Issuing again (a runner restart) gives a fresh certificate.
	again, _, err := p.kubeletServing("lab-node-2", ip)
	if err != nil {
		t.Fatal(err)
	}
	if parse(again).SerialNumber.Cmp(serving.SerialNumber) == 0 {
		t.Error("reissued certificate has the same serial number")
	}
	// Without a CA there is a clear error.
	if _, _, err := (pki{dir: t.TempDir()}).kubeletServing("n", netip.MustParseAddr("198.18.0.9")); err == nil {
		t.Error("issued a certificate without a CA")
	}
}
