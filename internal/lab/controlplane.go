package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// controlPlane starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in the root namespace, each bound to loopback or the
// lab bridge's address only.
func (l *Lab) startControlPlane(ctx context.Context, st *State) error {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("etcd not found: install Debian's etcd-server (make deps does): %w", err)
	}
	k8s := l.layout.Bin("glia-k8s")
	if _, err := os.Stat(k8s); err != nil {
		return fmt.Errorf("%s missing: run `make build` first: %w", k8s, err)
	}
	p := pki{dir: l.layout.PKIDir()}
	cg := filepath.Join(l.layout.CgroupRoot, "control-plane")
	logs := l.layout.LogDir()
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(EtcdClientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(EtcdPeerPort)

	l.progress("starting etcd")
	etcd, err := spawn("etcd", "", cg, filepath.Join(logs, "etcd.log"), []string{etcdBin,
		"--name=glia-lab", "--data-dir=" + l.layout.EtcdDir(),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=glia-lab=" + peerURL,
	}, nil)
	if err != nil {
		return err
	}
	st.add(etcd)
	if err := waitHTTP(ctx, http.DefaultClient, etcdURL+"/health", "", 30*time.Second); err != nil {
		return fmt.Errorf("etcd did not become healthy (log: %s): %w", etcd.Log, err)
	}

	l.progress("starting kube-apiserver")
	api, err := spawn("kube-apiserver", "", cg, filepath.Join(logs, "kube-apiserver.log"), []string{k8s, "apiserver",
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + BridgeAddr.String(), "--advertise-address=" + BridgeAddr.String(),
		"--secure-port=" + strconv.Itoa(APIServerPort),
		"--tls-cert-file=" + p.ServerCert(), "--tls-private-key-file=" + p.ServerKey(),
		"--client-ca-file=" + p.CACert(),
		// exec, attach and logs reach the node runners' kubelet API.
		"--kubelet-client-certificate=" + p.KubeletClientCert(), "--kubelet-client-key=" + p.KubeletClientKey(),
		"--kubelet-certificate-authority=" + p.CACert(), "--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc." + ClusterDomain,
		"--service-account-key-file=" + p.SAPub(), "--service-account-signing-key-file=" + p.SAKey(),
		"--token-auth-file=" + p.TokenFile(),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + ServiceCIDR.String(),
		"--service-node-port-range=30000-32767",
		"--allow-privileged=true",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--v=1",
	}, nil)
	if err != nil {
		return err
	}
	st.add(api)
	client, err := l.httpsClient(st.Token)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, client, l.apiURL()+"/readyz", st.Token, 120*time.Second); err != nil {
		return fmt.Errorf("kube-apiserver did not become ready (log: %s): %w", api.Log, err)
	}

	l.progress("starting kube-controller-manager and kube-scheduler")
	cm, err := spawn("kube-controller-manager", "", cg, filepath.Join(logs, "kube-controller-manager.log"), []string{k8s, "controller-manager",
		"--kubeconfig=" + l.layout.Kubeconfig(),
		"--allocate-node-cidrs=true", "--cluster-cidr=" + ClusterCIDR.String(), "--node-cidr-mask-size=24",
		"--service-cluster-ip-range=" + ServiceCIDR.String(),
		"--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file=" + p.SAKey(), "--root-ca-file=" + p.CACert(),
		"--cluster-name=glia-lab",
		"--profiling=false",
		"--v=1",
	}, nil)
	if err != nil {
		return err
	}
	st.add(cm)
	sched, err := spawn("kube-scheduler", "", cg, filepath.Join(logs, "kube-scheduler.log"), []string{k8s, "scheduler",
		"--kubeconfig=" + l.layout.Kubeconfig(),
		"--authentication-kubeconfig=" + l.layout.Kubeconfig(),
		"--authorization-kubeconfig=" + l.layout.Kubeconfig(),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259",
		"--profiling=false",
		"--v=1",
	}, nil)
	if err != nil {
		return err
	}
	st.add(sched)
	return nil
}

func (l *Lab) apiURL() string {
	return fmt.Sprintf("https://%s:%d", BridgeAddr, APIServerPort)
}

func (l *Lab) httpsClient(token string) (*http.Client, error) {
	ca, err := os.ReadFile(pki{dir: l.layout.PKIDir()}.CACert())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, c *http.Client, url, token string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
