package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the lab's certificate authority, the API server's serving
// certificate and its client certificate for the kubelet API, the node
// runners' kubelet serving certificates, the service-account signing key
// and the admin token.
type pki struct {
	dir string
}

func (p pki) CACert() string     { return filepath.Join(p.dir, "ca.crt") }
func (p pki) ServerCert() string { return filepath.Join(p.dir, "apiserver.crt") }
func (p pki) ServerKey() string  { return filepath.Join(p.dir, "apiserver.key") }
func (p pki) SAKey() string      { return filepath.Join(p.dir, "sa.key") }
func (p pki) SAPub() string      { return filepath.Join(p.dir, "sa.pub") }
func (p pki) TokenFile() string  { return filepath.Join(p.dir, "tokens.csv") }
func (p pki) caKey() string      { return filepath.Join(p.dir, "ca.key") }

// KubeletClientCert and KubeletClientKey are the API server's client
// certificate towards the node runners' kubelet API
// (--kubelet-client-certificate, --kubelet-client-key).
func (p pki) KubeletClientCert() string { return filepath.Join(p.dir, "apiserver-kubelet-client.crt") }
func (p pki) KubeletClientKey() string  { return filepath.Join(p.dir, "apiserver-kubelet-client.key") }

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	return k, der, err
}

// generate writes a fresh CA, a serving certificate for the API server valid
// for its lab addresses, a service-account key pair and an admin token. It
// returns the token.
func (p pki) generate() (string, error) {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return "", err
	}
	caKey, caKeyDER, err := newKey()
	if err != nil {
		return "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "glia-lab-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", fmt.Errorf("create lab CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", err
	}
	srvKey, srvKeyDER, err := newKey()
	if err != nil {
		return "", err
	}
	kubernetesSvc := ServiceCIDR.Addr().Next() // the "kubernetes" Service's ClusterIP
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + ClusterDomain},
		IPAddresses: []net.IP{BridgeAddr.AsSlice(), kubernetesSvc.AsSlice(), net.IPv4(127, 0, 0, 1)},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return "", fmt.Errorf("create API server certificate: %w", err)
	}
	kcKey, kcKeyDER, err := newKey()
	if err != nil {
		return "", err
	}
	kcSerial, err := randSerial()
	if err != nil {
		return "", err
	}
	kcTmpl := &x509.Certificate{
		SerialNumber: kcSerial,
		// As kubeadm names it; the node runners accept any client
		// certificate of the lab CA.
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	kcDER, err := x509.CreateCertificate(rand.Reader, kcTmpl, ca, &kcKey.PublicKey, caKey)
	if err != nil {
		return "", fmt.Errorf("create API server kubelet client certificate: %w", err)
	}
	_, saDER, err := newKey()
	if err != nil {
		return "", err
	}
	saKey, err := x509.ParseECPrivateKey(saDER)
	if err != nil {
		return "", err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return "", err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return "", err
	}
	token := hex.EncodeToString(tok)
	for _, w := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{p.caKey(), "EC PRIVATE KEY", caKeyDER, 0o600},
		{p.CACert(), "CERTIFICATE", caDER, 0o644},
		{p.ServerKey(), "EC PRIVATE KEY", srvKeyDER, 0o600},
		{p.ServerCert(), "CERTIFICATE", srvDER, 0o644},
		{p.KubeletClientKey(), "EC PRIVATE KEY", kcKeyDER, 0o600},
		{p.KubeletClientCert(), "CERTIFICATE", kcDER, 0o644},
		{p.SAKey(), "EC PRIVATE KEY", saDER, 0o600},
		{p.SAPub(), "PUBLIC KEY", saPubDER, 0o644},
	} {
		if err := writePEM(w.path, w.typ, w.der, w.mode); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(p.TokenFile(), []byte(token+",glia-lab-admin,glia-lab-admin,system:masters\n"), 0o600); err != nil {
		return "", err
	}
	return token, nil
}

// kubeconfig renders a kubeconfig for the lab's admin user.
func (p pki) kubeconfig(token string) (string, error) {
	ca, err := os.ReadFile(p.CACert())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: glia-lab
  cluster:
    server: https://%s:%d
    certificate-authority-data: %s
users:
- name: glia-lab-admin
  user:
    token: %s
contexts:
- name: glia-lab
  context:
    cluster: glia-lab
    user: glia-lab-admin
current-context: glia-lab
`, BridgeAddr, APIServerPort, b64(ca), token), nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
