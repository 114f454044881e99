// Package noderunner is the lab's stand-in for kubelet plus a container
// runtime. It runs inside a lab node's network namespace and in a mount
// namespace of its own (it refuses to run otherwise): the node's view of
// the file system, where each --bind SRC:DST shows a node-local directory
// at its real path (/opt/cni/bin, /etc/cni/net.d, /var/lib/glia…). It
// registers the Node (with --register-with-taints) and renews its Lease,
// and runs the Pods bound to the node as processes: each pod gets a network
// namespace (glia-pod-…) wired by the CNI plugin through libcni exactly as a
// kubelet/CRI would, and each container is a process in its own mount and
// UTS namespaces (started through `glia lab _pod-init`, which builds its
// root file system as a runtime does) in a per-pod cgroup.
//
// What kubelet does for a pod's containers, the runner does too: volumes
// (hostPath with its type checks, emptyDir, configMap, secret, downwardAPI
// and projected, with the ServiceAccount token from the TokenRequest API
// bound to the pod and rotated), their readOnly, subPath and
// mountPropagation; the environment (valueFrom, envFrom, $(VAR) expansion,
// service links); startup, liveness and readiness probes with restarts and
// back-off; pod status. Images are mapped to programs and files by the
// catalog in internal/lab/images. Deleted pods are torn down (processes,
// CNI DEL, namespace, cgroup, volumes) before the Pod object is removed.
//
// Each container's stdout and stderr go through a log shim (`glia lab
// _log-shim`, one per container run, in its own session) that writes the
// CRI log format and keeps the previous run's log, and holds the
// container's stdin and terminal for attach. The runner serves the kubelet
// API the API server proxies to (exec, attach, containerLogs, over TLS on
// the node's IP, port 10250), so kubectl exec, attach, logs and run -it work
// against lab pods.
//
// The runner persists its pods under the state dir and re-adopts running
// processes after a restart, so restarting it does not disturb pods.
package noderunner

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
)

// Config is the node runner's configuration.
type Config struct {
	Node          string
	NodeIP        string
	Kubeconfig    string
	CNIConfDir    string
	CNIBinDir     string
	CNINetwork    string
	StateDir      string
	Cgroup        string
	ClusterDNS    string
	ClusterDomain string
	// SelfExe is the glia binary run as `SelfExe lab _pod-init` and
	// `SelfExe lab _image`; empty means os.Executable().
	SelfExe string
	// CoreDNSBinary is the coredns program; empty means "coredns" in
	// SelfExe's directory.
	CoreDNSBinary string
	// StatusInterval is how often the node heartbeat and lease are renewed.
	StatusInterval time.Duration
	// The kubelet API (exec, attach, logs) on NodeIP:Port; served when the
	// three TLS files are given.
	TLSCertFile       string
	TLSPrivateKeyFile string
	ClientCAFile      string
	Port              int
	// KubeProxyClusterCIDR, when set, makes the runner run kube-proxy on
	// the node whenever the node's glia agent does not replace it (the
	// cluster's pod CIDR is kube-proxy's --cluster-cidr).
	KubeProxyClusterCIDR string
	// AgentSocket is the node's glia agent socket, asked whether it
	// replaces kube-proxy.
	AgentSocket string
	// Binds (--bind SRC:DST) make the runner's mount namespace the node's
	// view: each node-local SRC is bind-mounted over DST.
	Binds []string
	// RegisterWithTaints are the taints the Node is created with
	// (key=value:Effect), as kubelet's --register-with-taints.
	RegisterWithTaints []string
	// ImageBinDir holds the binaries the image catalog maps into
	// containers (glia, glia-agent, agnhost…); empty means SelfExe's
	// directory.
	ImageBinDir string
	// VolumeResync is how often configMap, secret, downwardAPI and
	// projected volumes are refreshed (tokens are rotated when due).
	VolumeResync time.Duration
}

// DefaultConfig returns a Config with defaults filled in.
func DefaultConfig() Config {
	return Config{
		CNINetwork:     "glia",
		ClusterDomain:  "cluster.local",
		StatusInterval: 10 * time.Second,
		Port:           DefaultKubeletPort,
		AgentSocket:    "/var/run/glia/glia.sock",
		VolumeResync:   10 * time.Second,
	}
}

// Flags registers the config's flags on fs.
func (c *Config) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Node, "node", c.Node, "name of the node to register")
	fs.StringVar(&c.NodeIP, "node-ip", c.NodeIP, "the node's InternalIP")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig for the API server")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", c.CNIConfDir, "directory holding the CNI network configuration list")
	fs.StringVar(&c.CNIBinDir, "cni-bin-dir", c.CNIBinDir, "directory holding CNI plugin binaries")
	fs.StringVar(&c.CNINetwork, "cni-network", c.CNINetwork, "name of the CNI network to attach pods to")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory for the runner's pod state, logs and CNI cache")
	fs.StringVar(&c.Cgroup, "cgroup", c.Cgroup, "cgroup v2 directory under which each pod gets a cgroup (empty: no cgroups)")
	fs.StringVar(&c.ClusterDNS, "cluster-dns", c.ClusterDNS, "cluster DNS server address written to pods' resolv.conf")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "cluster DNS domain")
	fs.StringVar(&c.SelfExe, "self-exe", c.SelfExe, "glia binary used to start containers (default: this executable)")
	fs.StringVar(&c.CoreDNSBinary, "coredns-binary", c.CoreDNSBinary, "coredns binary (default: coredns beside the glia binary)")
	fs.DurationVar(&c.StatusInterval, "status-interval", c.StatusInterval, "node heartbeat and lease renewal interval")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", c.TLSCertFile, "kubelet API serving certificate (PEM), valid for --node-ip")
	fs.StringVar(&c.TLSPrivateKeyFile, "tls-private-key-file", c.TLSPrivateKeyFile, "key of --tls-cert-file (PEM)")
	fs.StringVar(&c.ClientCAFile, "client-ca-file", c.ClientCAFile, "CA that signs the certificates kubelet API clients must present (PEM)")
	fs.IntVar(&c.Port, "port", c.Port, "kubelet API port on --node-ip")
	fs.StringVar(&c.KubeProxyClusterCIDR, "kube-proxy-cluster-cidr", c.KubeProxyClusterCIDR, "run kube-proxy (with this --cluster-cidr) while the node's glia agent does not replace it; empty: never")
	fs.StringVar(&c.AgentSocket, "agent-socket", c.AgentSocket, "the node's glia agent socket, asked whether it replaces kube-proxy")
	fs.StringArrayVar(&c.Binds, "bind", c.Binds, "SRC:DST: bind-mount the node-local SRC over DST in the runner's mount namespace (repeatable; DST must exist)")
	fs.StringSliceVar(&c.RegisterWithTaints, "register-with-taints", c.RegisterWithTaints, "taints the Node is registered with, as kubelet's: key=value:Effect,...")
	fs.StringVar(&c.ImageBinDir, "image-bin-dir", c.ImageBinDir, "directory of the binaries the image catalog maps into containers (default: the glia binary's directory)")
	fs.DurationVar(&c.VolumeResync, "volume-resync", c.VolumeResync, "how often configMap, secret, downwardAPI and projected volumes are refreshed")
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("node name is required (--node)"))
	}
	if _, err := netip.ParseAddr(c.NodeIP); err != nil {
		errs = append(errs, fmt.Errorf("invalid node IP %q (--node-ip): %w", c.NodeIP, err))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state dir is required (--state-dir)"))
	}
	if c.CNIConfDir == "" || c.CNIBinDir == "" {
		errs = append(errs, errors.New("CNI conf and bin dirs are required (--cni-conf-dir, --cni-bin-dir)"))
	}
	if c.ClusterDNS != "" {
		if _, err := netip.ParseAddr(c.ClusterDNS); err != nil {
			errs = append(errs, fmt.Errorf("invalid cluster DNS %q (--cluster-dns): %w", c.ClusterDNS, err))
		}
	}
	if c.ClusterDomain == "" {
		errs = append(errs, errors.New("cluster domain is required (--cluster-domain)"))
	}
	if c.StatusInterval <= 0 {
		errs = append(errs, errors.New("status interval must be positive (--status-interval)"))
	}
	if set := btoi(c.TLSCertFile != "") + btoi(c.TLSPrivateKeyFile != "") + btoi(c.ClientCAFile != ""); set != 0 && set != 3 {
		errs = append(errs, errors.New("the kubelet API needs all of --tls-cert-file, --tls-private-key-file and --client-ca-file (or none, to not serve it)"))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("invalid kubelet API port %d (--port): want 1-65535", c.Port))
	}
	if c.VolumeResync <= 0 {
		errs = append(errs, errors.New("volume resync interval must be positive (--volume-resync)"))
	}
	for _, b := range c.Binds {
		if _, err := ParseBind(b); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := ParseTaints(c.RegisterWithTaints); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) selfExe() (string, error) {
	if c.SelfExe != "" {
		return c.SelfExe, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return exe, nil
}

func (c *Config) binds() []Bind {
	var out []Bind
	for _, s := range c.Binds {
		if b, err := ParseBind(s); err == nil {
			out = append(out, b)
		}
	}
	return out
}

func (c *Config) imageBinDir(self string) string {
	if c.ImageBinDir != "" {
		return c.ImageBinDir
	}
	return filepath.Dir(self)
}

func (c *Config) coreDNSBinary(self string) string {
	if c.CoreDNSBinary != "" {
		return c.CoreDNSBinary
	}
	return filepath.Join(filepath.Dir(self), "coredns")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *Config) kubeletAPIEnabled() bool {
	return c.TLSCertFile != "" && c.TLSPrivateKeyFile != "" && c.ClientCAFile != ""
}

// kubeletPort is the port reported in the Node's status: 0 when the
// kubelet API is not served.
func (c *Config) kubeletPort() int32 {
	if !c.kubeletAPIEnabled() {
		return 0
	}
	return int32(c.Port)
}
