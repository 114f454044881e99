package lab

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// kubeletServing writes (once) the serving certificate of node's kubelet
// API, for its address ip, signed by the lab CA, and returns its paths.
func (p pki) kubeletServing(node string, ip netip.Addr) (cert, key string, err error) {
	cert = filepath.Join(p.dir, "kubelet-"+node+".crt")
	key = filepath.Join(p.dir, "kubelet-"+node+".key")
	if _, err := os.Stat(cert); err == nil {
		return cert, key, nil
	}
	caKey, ca, err := p.loadCA()
	if err != nil {
		return "", "", err
	}
	k, der, err := newKey()
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{node},
		IPAddresses:  []net.IP{ip.AsSlice()},
	}
	crt, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("kubelet serving certificate of %s: %w", node, err)
	}
	if err := writePEM(key, "EC PRIVATE KEY", der, 0o600); err != nil {
		return "", "", err
	}
	return cert, key, writePEM(cert, "CERTIFICATE", crt, 0o644)
}

// loadCA reads the lab CA's key and certificate.
func (p pki) loadCA() (any, *x509.Certificate, error) {
	kb, err := os.ReadFile(filepath.Join(p.dir, "ca.key"))
	if err != nil {
		return nil, nil, err
	}
	cb, err := os.ReadFile(p.CACert())
	if err != nil {
		return nil, nil, err
	}
	kp, _ := pem.Decode(kb)
	cp, _ := pem.Decode(cb)
	if kp == nil || cp == nil {
		return nil, nil, errors.New("lab CA files are not PEM")
	}
	key, err := x509.ParseECPrivateKey(kp.Bytes)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(cp.Bytes)
	return key, ca, err
}
