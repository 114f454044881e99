package noderunner

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	clientremotecommand "k8s.io/client-go/tools/remotecommand"
	clientexec "k8s.io/client-go/util/exec"
	utilexec "k8s.io/utils/exec"
	"k8s.io/utils/ptr"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and key (PEM) for cn with the given usage.
func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, ips ...net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// fakePods is a podSource over fixed pods and states.
type fakePods struct {
	pods    map[string]*corev1.Pod
	states  map[types.UID]*PodState
	running map[int]bool
}

func (f *fakePods) Pod(ns, name string) (*corev1.Pod, bool) {
	p, ok := f.pods[ns+"/"+name]
	return p, ok
}

func (f *fakePods) State(uid types.UID) (*PodState, bool) {
	st, ok := f.states[uid]
	return st, ok
}

func (f *fakePods) Running(c ContainerState) bool { return f.running[c.PID] }

// fakeRuntime runs a few made-up commands.
type fakeRuntime struct {
	mu      sync.Mutex
	targets []string
}

func (f *fakeRuntime) Exec(_ context.Context, t execTarget, argv []string, s ioStreams) error {
	f.mu.Lock()
	f.targets = append(f.targets, fmt.Sprintf("%s/%s/%s pid %d", t.Pod.Namespace, t.Pod.Name, t.Container.Name, t.Container.PID))
	f.mu.Unlock()
	switch argv[0] {
	case "echo":
		fmt.Fprintln(s.Out, strings.Join(argv[1:], " "))
	case "warn":
		fmt.Fprintln(s.Err, strings.Join(argv[1:], " "))
	case "exit":
		var code int
		fmt.Sscan(argv[1], &code)
		fmt.Fprintln(s.Out, "exiting")
		return utilexec.CodeExitError{Err: errors.New("exited"), Code: code}
	case "cat":
		io.Copy(s.Out, s.In)
	case "tty":
		sz := <-s.Resize
		fmt.Fprintf(s.Out, "tty=%v %dx%d stderr=%v\n", s.TTY, sz.Width, sz.Height, s.Err != nil)
	case "broken":
		return errors.New("runtime failure")
	}
	return nil
}

func (f *fakeRuntime) Attach(_ context.Context, t execTarget, s ioStreams) error {
	fmt.Fprintf(s.Out, "attached to %s\n", t.Container.Name)
	if s.In != nil {
		io.Copy(s.Out, s.In)
	}
	return nil
}

type testKubelet struct {
	url     string
	ca      *testCA
	cert    []byte
	key     []byte
	rt      *fakeRuntime
	logsDir string
}

func kubeletTestPod(name string, uid types.UID, containers ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: uid}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c})
	}
	return p
}

func startTestKubelet(t *testing.T) *testKubelet {
	t.Helper()
	ca := newTestCA(t, "lab-ca")
	dir := t.TempDir()
	srvCert, srvKey := ca.issue(t, "node", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	for name, b := range map[string][]byte{"srv.crt": srvCert, "srv.key": srvKey, "ca.crt": ca.pem} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsCfg, err := serverTLS(filepath.Join(dir, "srv.crt"), filepath.Join(dir, "srv.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}

	logs := t.TempDir()
	started := t0
	web := kubeletTestPod("web", "uid-web", "web", "sidecar")
	web.Spec.InitContainers = []corev1.Container{{Name: "setup"}}
	crashy := kubeletTestPod("crashy", "uid-crashy", "c")
	waiting := kubeletTestPod("pending", "uid-pending", "c")
	waiting.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull"}}}}
	creating := kubeletTestPod("creating", "uid-creating", "c")
	creating.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
	done := kubeletTestPod("done", "uid-done", "c")

	write := func(name string, lines ...string) string {
		var b []byte
		for i, l := range lines {
			b = appendLogEntry(b, t0.Add(time.Duration(i)*time.Second), streamStdout, false, []byte(l))
		}
		p := filepath.Join(logs, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	webLog := write("web.log", "web one", "web two", "web three")
	write("web.log.previous", "web before restart")
	setupLog := write("setup.log", "setup ran")
	crashyLog := write("crashy.log", "crashed run")
	doneLog := write("done.log", "only run")
	one := int32(1)
	pods := &fakePods{
		pods: map[string]*corev1.Pod{"shop/web": web, "shop/crashy": crashy, "shop/pending": waiting, "shop/creating": creating, "shop/done": done},
		states: map[types.UID]*PodState{
			"uid-web": {UID: "uid-web", Dir: dir, Containers: []ContainerState{
				{Name: "setup", Init: true, Done: true, StartedAt: started, LogPath: setupLog, LastExitCode: new(int32)},
				{Name: "web", PID: 100, StartedAt: started, RestartCount: 1, LastExitCode: &one, LogPath: webLog},
				{Name: "sidecar", PID: 101, StartedAt: started, LogPath: filepath.Join(logs, "sidecar.log")},
			}},
			// Exited, waiting for its restart.
			"uid-crashy": {UID: "uid-crashy", Containers: []ContainerState{{Name: "c", StartedAt: started, LastExitCode: &one, LogPath: crashyLog}}},
			"uid-done":   {UID: "uid-done", Containers: []ContainerState{{Name: "c", StartedAt: started, Done: true, LastExitCode: new(int32), LogPath: doneLog}}},
		},
		running: map[int]bool{100: true}, // sidecar's 101 died
	}
	rt := &fakeRuntime{}
	ks := newKubeletServer(slog.New(slog.DiscardHandler), pods, rt)
	ks.now = func() time.Time { return t0.Add(2500 * time.Millisecond) }
	srv := httptest.NewUnstartedServer(ks.Handler())
	srv.TLS = tlsCfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	cert, key := ca.issue(t, "kube-apiserver-kubelet-client", x509.ExtKeyUsageClientAuth)
	return &testKubelet{url: srv.URL, ca: ca, cert: cert, key: key, rt: rt, logsDir: logs}
}

func (k *testKubelet) restConfig() *rest.Config {
	return &rest.Config{Host: k.url, TLSClientConfig: rest.TLSClientConfig{CAData: k.ca.pem, CertData: k.cert, KeyData: k.key}}
}

func (k *testKubelet) client(t *testing.T) *http.Client {
	t.Helper()
	c, err := rest.HTTPClientFor(k.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (k *testKubelet) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := k.client(t).Get(k.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type sizeQueue struct {
	sizes chan *clientremotecommand.TerminalSize
}

func (q sizeQueue) Next() *clientremotecommand.TerminalSize { return <-q.sizes }

// stream runs an exec or attach through the SPDY protocol, as the API
// server does towards a kubelet.
func (k *testKubelet) stream(t *testing.T, path string, opts clientremotecommand.StreamOptions) (stdout, stderr string, err error) {
	t.Helper()
	u, perr := url.Parse(k.url + path)
	if perr != nil {
		t.Fatal(perr)
	}
	q := u.Query()
	if opts.Stdin != nil {
		q.Set("input", "1")
	}
	q.Set("output", "1")
	if !opts.Tty {
		q.Set("error", "1")
	}
	if opts.Tty {
		q.Set("tty", "1")
	}
	u.RawQuery = q.Encode()
	exec, perr := clientremotecommand.NewSPDYExecutor(k.restConfig(), "POST", u)
	if perr != nil {
		t.Fatal(perr)
	}
	var out, errb bytes.Buffer
	opts.Stdout = &out
	if !opts.Tty {
		opts.Stderr = &errb
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = exec.StreamWithContext(ctx, opts)
	return out.String(), errb.String(), err
}

func TestKubeletExec(t *testing.T) {
	k := startTestKubelet(t)
	tests := []struct {
		name       string
		path       string
		stdin      string
		tty        bool
		wantOut    string
		wantErrOut string
		wantCode   int    // exit code reported, 0: success
		wantErr    string // other error
	}{
		{name: "stdout", path: "/exec/shop/web/web?command=echo&command=hello&command=world", wantOut: "hello world\n"},
		{name: "stderr", path: "/exec/shop/web/web?command=warn&command=careful", wantErrOut: "careful\n"},
		{name: "exit code", path: "/exec/shop/web/web?command=exit&command=3", wantOut: "exiting\n", wantCode: 3},
		{name: "stdin", path: "/exec/shop/web/web?command=cat", stdin: "some input\n", wantOut: "some input\n"},
		{name: "tty with resize", path: "/exec/shop/web/web?command=tty", tty: true, wantOut: "tty=true 120x40 stderr=false\n"},
		{name: "with pod uid", path: "/exec/shop/web/uid-web/web?command=echo&command=uid", wantOut: "uid\n"},
		{name: "runtime error", path: "/exec/shop/web/web?command=broken", wantErr: "runtime failure"},
		{name: "unknown pod", path: "/exec/shop/nope/web?command=echo", wantErr: "pod does not exist"},
		{name: "wrong pod uid", path: "/exec/shop/web/uid-other/web?command=echo", wantErr: "pod does not exist"},
		{name: "unknown container", path: "/exec/shop/web/nope?command=echo", wantErr: `container not found ("nope")`},
		{name: "container not running", path: "/exec/shop/web/sidecar?command=echo", wantErr: `container not found ("sidecar"): it is not running`},
		{name: "no command", path: "/exec/shop/web/web", wantErr: "no command given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := clientremotecommand.StreamOptions{Tty: tt.tty}
			if tt.stdin != "" {
				opts.Stdin = strings.NewReader(tt.stdin)
			}
			if tt.tty {
				q := sizeQueue{make(chan *clientremotecommand.TerminalSize, 1)}
				q.sizes <- &clientremotecommand.TerminalSize{Width: 120, Height: 40}
				opts.TerminalSizeQueue = q
			}
			out, errOut, err := k.stream(t, tt.path, opts)
			var code clientexec.CodeExitError
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			case tt.wantCode != 0:
				if !errors.As(err, &code) || code.Code != tt.wantCode {
					t.Fatalf("error %v (%T), want exit code %d", err, err, tt.wantCode)
				}
			case err != nil:
				t.Fatalf("exec: %v", err)
			}
			if out != tt.wantOut || errOut != tt.wantErrOut {
				t.Errorf("stdout %q stderr %q, want %q and %q", out, errOut, tt.wantOut, tt.wantErrOut)
			}
		})
	}
	if got := k.rt.targets[0]; got != "shop/web/web pid 100" {
		t.Errorf("exec ran in %q", got)
	}
}

func TestKubeletAttach(t *testing.T) {
	k := startTestKubelet(t)
	out, _, err := k.stream(t, "/attach/shop/web/web", clientremotecommand.StreamOptions{Stdin: strings.NewReader("typed\n")})
	if err != nil {
		t.Fatal(err)
	}
	if out != "attached to web\ntyped\n" {
		t.Errorf("attach output %q", out)
	}
	if _, _, err := k.stream(t, "/attach/shop/web/sidecar", clientremotecommand.StreamOptions{}); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("attach to a stopped container: %v", err)
	}
}

func TestKubeletLogs(t *testing.T) {
	k := startTestKubelet(t)
	ts1 := t0.Add(time.Second).Format(time.RFC3339Nano)
	tests := []struct {
		name     string
		path     string
		wantCode int
		want     string
	}{
		{"current", "/containerLogs/shop/web/web", 200, "web one\nweb two\nweb three\n"},
		{"previous", "/containerLogs/shop/web/web?previous=true", 200, "web before restart\n"},
		{"tailLines", "/containerLogs/shop/web/web?tailLines=1", 200, "web three\n"},
		{"legacy tail", "/containerLogs/shop/web/web?tail=2", 200, "web two\nweb three\n"},
		{"tail all", "/containerLogs/shop/web/web?tail=all", 200, "web one\nweb two\nweb three\n"},
		{"sinceSeconds", "/containerLogs/shop/web/web?sinceSeconds=1", 200, "web three\n"},
		{"sinceTime", "/containerLogs/shop/web/web?sinceTime=" + url.QueryEscape(t0.Add(time.Second).Format(time.RFC3339)), 200, "web two\nweb three\n"},
		{"timestamps", "/containerLogs/shop/web/web?timestamps=true&tailLines=2&limitBytes=" + fmt.Sprint(len(ts1)+9), 200, ts1 + " web two\n"},
		{"stream stderr", "/containerLogs/shop/web/web?stream=Stderr", 200, ""},
		{"init container", "/containerLogs/shop/web/setup", 200, "setup ran\n"},
		{"exited, awaiting restart", "/containerLogs/shop/crashy/c", 200, "crashed run\n"},
		{"exited, previous is that run", "/containerLogs/shop/crashy/c?previous=true", 200, "crashed run\n"},
		{"completed", "/containerLogs/shop/done/c", 200, "only run\n"},
		{"follow a completed container ends", "/containerLogs/shop/done/c?follow=true", 200, "only run\n"},
		{"no previous run", "/containerLogs/shop/done/c?previous=true", 400, `previous terminated container "c" in pod "done" not found`},
		{"no previous of a running container", "/containerLogs/shop/web/sidecar?previous=1", 400, `previous terminated container "sidecar" in pod "web" not found`},
		{"image pull", "/containerLogs/shop/pending/c", 400, `container "c" in pod "pending" is waiting to start: image can't be pulled`},
		{"creating", "/containerLogs/shop/creating/c", 400, `container "c" in pod "creating" is waiting to start: ContainerCreating`},
		{"unknown pod", "/containerLogs/shop/nope/c", 404, `pod "nope" does not exist`},
		{"unknown container", "/containerLogs/shop/web/nope", 404, `container "nope" not found in pod "web"`},
		{"since both ways", "/containerLogs/shop/web/web?sinceSeconds=5&sinceTime=2026-05-04T10:00:00Z", 422, "at most one of sinceSeconds and sinceTime"},
		{"negative tail", "/containerLogs/shop/web/web?tailLines=-1", 422, "tailLines must not be negative"},
		{"zero limit", "/containerLogs/shop/web/web?limitBytes=0", 422, "limitBytes must be at least 1"},
		{"bad stream", "/containerLogs/shop/web/web?stream=Stdin", 422, `stream must be All, Stdout or Stderr (got "Stdin")`},
		{"tail with one stream", "/containerLogs/shop/web/web?stream=Stdout&tailLines=1", 422, "tailLines cannot be combined with stream Stdout"},
		{"undecodable", "/containerLogs/shop/web/web?sinceSeconds=soon", 400, "unable to decode query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := k.get(t, tt.path)
			if code != tt.wantCode {
				t.Fatalf("status %d (%s), want %d", code, body, tt.wantCode)
			}
			if tt.wantCode == 200 && body != tt.want || tt.wantCode != 200 && !strings.Contains(body, tt.want) {
				t.Errorf("body %q, want %q", body, tt.want)
			}
		})
	}
}

func TestKubeletHealthz(t *testing.T) {
	k := startTestKubelet(t)
	if code, body := k.get(t, "/healthz"); code != 200 || body != "ok" {
		t.Errorf("/healthz = %d %q", code, body)
	}
}

// TestKubeletRefusesClients: no client certificate, or one from another CA,
// or a server certificate used as a client's, gets no answer.
func TestKubeletRefusesClients(t *testing.T) {
	k := startTestKubelet(t)
	roots := x509.NewCertPool()
	roots.AddCert(k.ca.cert)
	other := newTestCA(t, "other-ca")
	otherCert, otherKey := other.issue(t, "intruder", x509.ExtKeyUsageClientAuth)
	serverCert, serverKey := k.ca.issue(t, "some-server", x509.ExtKeyUsageServerAuth)
	pair := func(c, k []byte) []tls.Certificate {
		kp, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{kp}
	}
	tests := []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no certificate", nil},
		{"certificate of another CA", pair(otherCert, otherKey)},
		{"server certificate", pair(serverCert, serverKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: tt.certs}}}
			resp, err := c.Get(k.url + "/containerLogs/shop/web/web")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("answered %s: %s", resp.Status, b)
			}
		})
	}
	// The lab CA's client certificate is accepted (the control).
	if code, _ := k.get(t, "/healthz"); code != 200 {
		t.Errorf("accepted client got %d", code)
	}
}

func TestServerTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	c, k := ca.issue(t, "n", x509.ExtKeyUsageServerAuth)
	os.WriteFile(filepath.Join(dir, "c"), c, 0o600)
	os.WriteFile(filepath.Join(dir, "k"), k, 0o600)
	os.WriteFile(filepath.Join(dir, "ca"), ca.pem, 0o600)
	os.WriteFile(filepath.Join(dir, "junk"), []byte("not pem"), 0o600)
	p := func(n string) string { return filepath.Join(dir, n) }
	tests := []struct {
		name, cert, key, ca, want string
	}{
		{"missing cert", p("none"), p("k"), p("ca"), "--tls-cert-file"},
		{"key mismatch", p("c"), p("ca"), p("ca"), "--tls-private-key-file"},
		{"missing CA", p("c"), p("k"), p("none"), "--client-ca-file"},
		{"CA not PEM", p("c"), p("k"), p("junk"), "holds no PEM certificate"},
	}
	for _, tt := range tests {
		if _, err := serverTLS(tt.cert, tt.key, tt.ca); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one naming %q", tt.name, err, tt.want)
		}
	}
	if _, err := serverTLS(p("c"), p("k"), p("ca")); err != nil {
		t.Errorf("valid files: %v", err)
	}
}

func TestValidateLogOptions(t *testing.T) {
	all, out := corev1.LogStreamAll, corev1.LogStreamStdout
	now := metav1.Now()
	tests := []struct {
		name string
		o    corev1.PodLogOptions
		ok   bool
	}{
		{"empty", corev1.PodLogOptions{}, true},
		{"everything valid", corev1.PodLogOptions{Follow: true, Previous: true, SinceSeconds: ptr.To[int64](10), Timestamps: true, TailLines: ptr.To[int64](0), LimitBytes: ptr.To[int64](1), Stream: &all}, true},
		{"stream without tail", corev1.PodLogOptions{Stream: &out}, true},
		{"since twice", corev1.PodLogOptions{SinceSeconds: ptr.To[int64](10), SinceTime: &now}, false},
		{"since zero", corev1.PodLogOptions{SinceSeconds: ptr.To[int64](0)}, false},
		{"tail negative", corev1.PodLogOptions{TailLines: ptr.To[int64](-1)}, false},
		{"limit zero", corev1.PodLogOptions{LimitBytes: ptr.To[int64](0)}, false},
		{"stream and tail", corev1.PodLogOptions{Stream: &out, TailLines: ptr.To[int64](1)}, false},
	}
	for _, tt := range tests {
		if err := validateLogOptions(&tt.o); (err == nil) != tt.ok {
			t.Errorf("%s: validateLogOptions = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestConfigKubeletAPI(t *testing.T) {
	base := DefaultConfig()
	base.Node, base.NodeIP, base.StateDir, base.CNIConfDir, base.CNIBinDir = "n1", "198.18.0.2", "/s", "/c", "/b"
	tests := []struct {
		name     string
		mod      func(*Config)
		wantErr  string
		wantPort int32
	}{
		{"off", func(*Config) {}, "", 0},
		{"on", func(c *Config) { c.TLSCertFile, c.TLSPrivateKeyFile, c.ClientCAFile = "a", "b", "c" }, "", DefaultKubeletPort},
		{"on, other port", func(c *Config) { c.TLSCertFile, c.TLSPrivateKeyFile, c.ClientCAFile, c.Port = "a", "b", "c", 11250 }, "", 11250},
		{"partial", func(c *Config) { c.TLSCertFile = "a" }, "needs all of --tls-cert-file", 0},
		{"bad port", func(c *Config) { c.Port = 70000 }, "--port", 0},
	}
	for _, tt := range tests {
		c := base
		tt.mod(&c)
		err := c.Validate()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: Validate = %v, want %q", tt.name, err, tt.wantErr)
		}
		if err == nil && c.kubeletPort() != tt.wantPort {
			t.Errorf("%s: reported port %d, want %d", tt.name, c.kubeletPort(), tt.wantPort)
		}
	}
	// The port reaches the Node's status.
	id := &nodeIdentity{name: "n1", ip: "198.18.0.2", kubeletPort: 10250, now: time.Now}
	if got := id.status(corev1.NodeStatus{}).DaemonEndpoints.KubeletEndpoint.Port; got != 10250 {
		t.Errorf("node status kubelet port %d", got)
	}
}
