package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"

	"glia.dev/glia/internal/config"
)

// Config is how the agent is started: where it runs and where it keeps
// state. Datapath settings are config keys (package config), resolved from
// flags, ConfigMap glia-config and GliaNodeConfigs.
type Config struct {
	NodeName   string
	Kubeconfig string // "" = in-cluster
	Namespace  string // where glia-config and GliaNodeConfigs live
	StateDir   string
	Socket     string
	BPFFSDir   string
	Device     string // the node's uplink
	// SocketLBCgroup is the cgroup v2 directory whose processes get
	// socket-level load balancing of ClusterIPs (kube-proxy replacement
	// only); "" leaves node processes' Service traffic to the host stack.
	SocketLBCgroup string
	// HealthProbeBindAddress is where /healthz (liveness) and /readyz
	// (readiness) are served for the DaemonSet's probes; "" = off.
	HealthProbeBindAddress string
	// CNIConfDir and CNIBinDir are where the CNI config and the glia-cni
	// binary were installed (by the DaemonSet's init container).
	CNIConfDir string
	CNIBinDir  string
	// DaemonSet is the agent's DaemonSet (in Namespace): when the agent is
	// stopped and it is gone (helm uninstall), the agent removes the CNI
	// config and plugin from the node. "" = never.
	DaemonSet string
	// LogLevel, when set, is the level of the agent's logger: the agent
	// sets it from the config key debug once the config is resolved.
	LogLevel *slog.LevelVar

	// keyFlags returns the config-key flags set explicitly.
	keyFlags func() map[string]string
}

// Flags registers the agent's flags, including one per config key.
func (c *Config) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.NodeName, "node-name", "", "name of the Node this agent runs on (required)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	fs.StringVar(&c.Namespace, "namespace", "glia-system", "namespace of ConfigMap glia-config and GliaNodeConfigs")
	fs.StringVar(&c.StateDir, "state-dir", "/var/lib/glia", "directory for endpoint and IPAM state")
	fs.StringVar(&c.Socket, "socket", "/var/run/glia/glia.sock", "unix socket of the local API (mode 0600)")
	fs.StringVar(&c.BPFFSDir, "bpffs-dir", "/sys/fs/bpf/glia", "directory under bpffs for this node's pinned maps and links")
	fs.StringVar(&c.Device, "device", "eth0", "the node's network device")
	fs.StringVar(&c.HealthProbeBindAddress, "health-probe-bind-address", "127.0.0.1:9879", "address serving GET /healthz (liveness) and GET /readyz (readiness) for the kubelet's probes; empty: off")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "directory the CNI network config (05-glia.conflist) was installed in")
	fs.StringVar(&c.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "directory the glia-cni plugin binary was installed in")
	fs.StringVar(&c.DaemonSet, "daemonset-name", "", "the agent's DaemonSet in --namespace: when the agent stops and it is gone (uninstalled), the agent removes the CNI config and plugin from the node; empty: never")
	fs.StringVar(&c.SocketLBCgroup, "socket-lb-cgroup", "", "cgroup v2 directory (e.g. /sys/fs/cgroup) whose processes in the node's network namespace reach ClusterIPs through socket load balancing, with kube-proxy replacement; empty: off")
	c.keyFlags = config.AddFlags(fs)
}

// KeyFlags returns the config keys set on the command line.
func (c *Config) KeyFlags() map[string]string {
	if c.keyFlags == nil {
		return nil
	}
	return c.keyFlags()
}

// Validate checks the settings and says what to change.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required: the name of this node's Node object"))
	}
	// A slice, not a map: the errors come in flag order, the same every run.
	for _, f := range []struct{ flag, path string }{
		{"--state-dir", c.StateDir}, {"--socket", c.Socket}, {"--bpffs-dir", c.BPFFSDir},
	} {
		if !filepath.IsAbs(f.path) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", f.flag, f.path))
		}
	}
	if c.Device == "" {
		errs = append(errs, errors.New("--device is required: the node's network device, e.g. eth0"))
	}
	if c.HealthProbeBindAddress != "" {
		if _, port, err := net.SplitHostPort(c.HealthProbeBindAddress); err != nil {
			errs = append(errs, fmt.Errorf("--health-probe-bind-address %q is not host:port (e.g. 127.0.0.1:9879; empty: off)", c.HealthProbeBindAddress))
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("--health-probe-bind-address %q has no port in 1..65535 (e.g. 127.0.0.1:9879)", c.HealthProbeBindAddress))
		}
	}
	for _, f := range []struct{ flag, path string }{{"--cni-conf-dir", c.CNIConfDir}, {"--cni-bin-dir", c.CNIBinDir}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", f.flag, f.path))
		}
	}
	return errors.Join(errs...)
}
