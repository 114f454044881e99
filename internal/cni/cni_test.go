package cni

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"golang.org/x/sys/unix"
)

func code(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestLoadConf(t *testing.T) {
	tests := []struct {
		name     string
		conf     string
		wantCode uint
	}{
		{"ok", `{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":"/run/glia/glia.sock"}`, 0},
		{"mtu", `{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":"/run/glia/glia.sock","mtu":1400}`, 0},
		{"no socket", `{"cniVersion":"1.1.0","name":"glia","type":"glia-cni"}`, types.ErrInvalidNetworkConfig},
		{"relative socket", `{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":"glia.sock"}`, types.ErrInvalidNetworkConfig},
		{"bad mtu", `{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":"/s","mtu":10}`, types.ErrInvalidNetworkConfig},
		{"not json", `{"cniVersion":`, types.ErrDecodingFailure},
		{"too big", `{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":"/s","x":"` + strings.Repeat("a", MaxConfigBytes) + `"}`, types.ErrInvalidNetworkConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConf([]byte(tc.conf))
			if code(err) != tc.wantCode {
				t.Fatalf("loadConf = %v, want code %d", err, tc.wantCode)
			}
		})
	}
}

func TestValidateNetns(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Opening a FIFO for reading blocks until a writer comes: the check
	// must not.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
	}{
		{"empty", ""},
		{"relative", "proc/self/ns/net"},
		{"dotdot", "/proc/self/../self/ns/net"},
		{"missing", "/run/netns/does-not-exist-glia"},
		{"regular file", file},
		{"mount namespace", "/proc/self/ns/mnt"},
		{"own netns", "/proc/self/ns/net"},
		{"own netns by thread", "/proc/thread-self/ns/net"},
		{"fifo", fifo},
		{"device", "/dev/null"},
		{"directory", "/"},
		{"proc file", "/proc/self/status"},
		{"trailing dotdot", "/run/netns/.."},
		{"too long", "/" + strings.Repeat("a", 5000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := validateNetns(tc.path, HostNetnsPath); code(err) != types.ErrInvalidNetNS {
				t.Fatalf("validateNetns(%q) = %v, want code %d", tc.path, err, types.ErrInvalidNetNS)
			}
		})
	}
}

func TestK8sArgs(t *testing.T) {
	ns, name := k8sArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=x;junk")
	if ns != "default" || name != "web-0" {
		t.Fatalf("k8sArgs = %q %q", ns, name)
	}
}

// TestPrivilegedValidateNetns runs the check from inside a node namespace, as
// the plugin runs there: the host's namespace (/proc/1/ns/net) and the
// node's own are refused, a pod's namespace is accepted.
func TestPrivilegedValidateNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	node, pod := testNS(t), testNS(t)
	var initErr, hostErr, selfErr, podErr error
	if err := node.Do(func(ns.NetNS) error {
		// Init's namespace is refused, as the host's or, where the
		// plugin may not read it (as in some sandboxes), as unreadable.
		initErr = validateNetns(HostNetnsPath, HostNetnsPath)
		// On this locked thread, /proc/self/ns/net is the namespace of
		// the test's main thread: the host's, from the plugin's view.
		hostErr = validateNetns("/proc/self/ns/net", "/proc/self/ns/net")
		selfErr = validateNetns(node.Path(), HostNetnsPath)
		podErr = validateNetns(pod.Path(), HostNetnsPath)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code(initErr) != types.ErrInvalidNetNS {
		t.Errorf("validateNetns(%s) = %v, want code %d", HostNetnsPath, initErr, types.ErrInvalidNetNS)
	}
	if code(hostErr) != types.ErrInvalidNetNS || !strings.Contains(hostErr.Error(), "host") {
		t.Errorf("validateNetns(host) = %v, want a refusal naming the host", hostErr)
	}
	if code(selfErr) != types.ErrInvalidNetNS || !strings.Contains(selfErr.Error(), "own") {
		t.Errorf("validateNetns(node) = %v, want a refusal naming the plugin's own namespace", selfErr)
	}
	if podErr != nil {
		t.Errorf("validateNetns(pod) = %v, want nil", podErr)
	}
}

func testNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

// endless yields 'a' forever and counts what was read.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += int64(len(p))
	return len(p), nil
}

func TestReadBounded(t *testing.T) {
	src := &endless{}
	_, err := readBounded(src, MaxConfigBytes)
	if code(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("readBounded(endless) = %v, want code %d naming the limit", err, types.ErrInvalidNetworkConfig)
	}
	// io.ReadAll reads in growing chunks; LimitReader stops it at max+1.
	if src.n > MaxConfigBytes+1+512 {
		t.Fatalf("read %d bytes of an endless stdin, want at most about %d", src.n, MaxConfigBytes+1)
	}
	for _, n := range []int{0, 10, MaxConfigBytes} {
		data, err := readBounded(io.LimitReader(&endless{}, int64(n)), MaxConfigBytes)
		if err != nil || len(data) != n {
			t.Fatalf("readBounded(%d bytes) = %d bytes, %v", n, len(data), err)
		}
	}
	if _, err := readBounded(iotestErr{}, MaxConfigBytes); code(err) != types.ErrIOFailure {
		t.Fatalf("readBounded(failing reader) = %v, want code %d", err, types.ErrIOFailure)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("stdin broke") }
