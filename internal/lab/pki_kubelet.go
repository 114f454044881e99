package lab

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"glia.dev/glia/internal/atomicfile"
)

// KubeletServingCert and KubeletServingKey are a node runner's serving
// certificate for its kubelet API.
func (p pki) KubeletServingCert(node string) string {
	return filepath.Join(p.dir, "kubelet-"+node+".crt")
}
func (p pki) KubeletServingKey(node string) string {
	return filepath.Join(p.dir, "kubelet-"+node+".key")
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// loadCA reads the lab CA's certificate and key.
func (p pki) loadCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(p.CACert())
	if err != nil {
		return nil, nil, fmt.Errorf("read lab CA: %w", err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", p.CACert())
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse lab CA: %w", err)
	}
	keyPEM, err := os.ReadFile(p.caKey())
	if err != nil {
		return nil, nil, fmt.Errorf("read lab CA key: %w", err)
	}
	kblk, _ := pem.Decode(keyPEM)
	if kblk == nil {
		return nil, nil, fmt.Errorf("%s holds no PEM key", p.caKey())
	}
	key, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse lab CA key: %w", err)
	}
	return cert, key, nil
}

// kubeletServing writes a serving certificate for node's kubelet API, valid
// for the node's IP and name and signed by the lab CA, and returns the
// certificate and key paths (--tls-cert-file, --tls-private-key-file).
func (p pki) kubeletServing(node string, ip netip.Addr) (certFile, keyFile string, err error) {
	ca, caKey, err := p.loadCA()
	if err != nil {
		return "", "", err
	}
	key, keyDER, err := newKey()
	if err != nil {
		return "", "", err
	}
	serial, err := randSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     ca.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{node},
		IPAddresses:  []net.IP{ip.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("create kubelet serving certificate for %s: %w", node, err)
	}
	certFile, keyFile = p.KubeletServingCert(node), p.KubeletServingKey(node)
	if err := atomicfile.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	if err := atomicfile.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
