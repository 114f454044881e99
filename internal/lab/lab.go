package lab

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"glia.dev/glia/internal/atomicfile"
	"glia.dev/glia/internal/lab/noderunner"
	"glia.dev/glia/internal/netnsfile"
)

//go:embed manifests/*.yaml
var manifests embed.FS

// Lab drives the lab on this machine.
type Lab struct {
	log    *slog.Logger
	layout Layout
	out    io.Writer // progress lines for a person
}

// New returns a Lab that uses layout and prints progress to out.
func New(log *slog.Logger, layout Layout, out io.Writer) *Lab {
	return &Lab{log: log, layout: layout, out: out}
}

// Layout returns the lab's paths.
func (l *Lab) Layout() Layout { return l.layout }

func (l *Lab) progress(format string, args ...any) {
	fmt.Fprintf(l.out, "[lab %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// KubeProxyModeLabel on a node picks the mode of the kube-proxy its runner
// runs there ("nftables"; anything else: iptables).
const KubeProxyModeLabel = noderunner.KubeProxyModeLabel

// UpOptions configure `lab up`.
type UpOptions struct {
	Nodes int
	// Set are Helm values of the glia chart (kubeProxyReplacement=true,
	// bpf.masquerade=true) or glia config keys (kube-proxy-replacement=true),
	// which become the chart values that render them.
	Set map[string]string
	// NodeLabels are extra labels per node name, set when the node registers.
	NodeLabels map[string]map[string]string
	// Apply are manifests (e.g. GliaNodeConfigs) applied before any node starts.
	Apply [][]byte
	// Chart is a chart directory to install instead of this glia's own
	// chart (an earlier release's, to test upgrades); empty: glia's own.
	Chart string
}

// Up builds the lab. Leftovers of an earlier lab (a crash, a killed
// command) are removed first.
func (l *Lab) Up(ctx context.Context, o UpOptions) (err error) {
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("--nodes %d: a lab has 1 to %d nodes", o.Nodes, MaxNodes)
	}
	for _, b := range RequiredBinaries {
		if _, err := os.Stat(l.layout.Bin(b)); err != nil {
			return fmt.Errorf("%s is missing: run `make build` first", l.layout.Bin(b))
		}
	}
	if o.Chart != "" {
		if _, err := os.Stat(filepath.Join(o.Chart, "Chart.yaml")); err != nil {
			return fmt.Errorf("--chart %s: not a Helm chart directory (no Chart.yaml): give one such as deploy/chart/glia", o.Chart)
		}
	}
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := l.down(ctx, true); err != nil {
		return fmt.Errorf("clean up an earlier lab: %w", err)
	}
	defer func() {
		if err != nil {
			l.progress("lab up failed; logs are in %s (run `glia lab down` to remove what was made)", l.layout.LogDir())
		}
	}()
	for _, d := range []string{l.layout.Base, l.layout.LogDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	_, statErr := os.Stat(netnsRunDir)
	st := &State{Nodes: o.Nodes, Set: o.Set, NetnsDirWasMount: netnsfile.IsMountPoint(netnsRunDir),
		NetnsDirMade: errors.Is(statErr, os.ErrNotExist)}
	// Namespaces bound in /var/run/netns must show in every mount
	// namespace; prepare it before any is bound there.
	if err := netnsfile.ShareDir(netnsRunDir); err != nil {
		return err
	}
	st.MountedBPFFS, err = ensureBPFFS()
	if err != nil {
		return err
	}
	if err := l.saveState(st); err != nil {
		return err
	}
	l.progress("creating PKI and kubeconfig")
	p := pki{dir: l.layout.PKIDir()}
	if st.Token, err = p.generate(); err != nil {
		return err
	}
	kc, err := p.kubeconfig(st.Token)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(l.layout.Kubeconfig(), []byte(kc), 0o600); err != nil {
		return err
	}
	l.progress("creating bridge %s (%s), blackhole routes and the outside namespace", BridgeName, BridgeAddr)
	if err := setupRootNetwork(); err != nil {
		return err
	}
	if err := setupOutside(); err != nil {
		return err
	}
	outside, err := spawn("outside-server", OutsideNetns, filepath.Join(l.layout.CgroupRoot, "outside"),
		filepath.Join(l.layout.LogDir(), "outside-server.log"),
		[]string{l.layout.Bin("glia"), "lab", "_outside-server", "--listen", OutsideAddr.String() + ":80",
			"--conn-disrupt-listen", OutsideConnDisrupt.String()}, nil)
	if err != nil {
		return err
	}
	st.add(outside)
	if err := l.saveState(st); err != nil {
		return err
	}
	if err := l.startControlPlane(ctx, st); err != nil {
		l.saveState(st)
		return err
	}
	if err := l.saveState(st); err != nil {
		return err
	}
	cs, cfg, err := l.clients()
	if err != nil {
		return err
	}
	l.progress("applying CoreDNS")
	if err := l.bootstrap(ctx, cfg); err != nil {
		return err
	}
	l.progress("installing glia: helm install glia %s -n %s", l.layout.ChartDir(), AgentNamespace)
	if err := l.helmInstall(ctx, o.Set, o.Chart); err != nil {
		return err
	}
	if err := l.applyRetry(ctx, cfg, o.Apply); err != nil {
		return err
	}
	for i := 1; i <= o.Nodes; i++ {
		name := NodeName(i)
		l.progress("creating node %s (%s)", name, NodeIP(i))
		if err := setupNode(i); err != nil {
			return err
		}
		made, err := l.prepareNodeFS(name)
		st.HostDirsMade = appendNew(st.HostDirsMade, made...)
		if serr := l.saveState(st); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		if o.NodeLabels[name] != nil {
			if err := l.preLabelNode(ctx, cs, name, o.NodeLabels[name]); err != nil {
				return err
			}
		}
		runner, err := l.spawnRunner(name, i)
		if err != nil {
			return err
		}
		st.add(runner)
		if err := l.saveState(st); err != nil {
			return err
		}
	}
	for i := 1; i <= o.Nodes; i++ {
		name := NodeName(i)
		l.progress("waiting for the glia agent pod on %s", name)
		if err := l.waitAgent(ctx, cs, name, "", 3*time.Minute); err != nil {
			return err
		}
	}
	l.progress("waiting for %d nodes to be Ready and CoreDNS to serve", o.Nodes)
	if err := l.waitReady(ctx, cs, o.Nodes, 120*time.Second); err != nil {
		return err
	}
	l.progress("lab is up: export KUBECONFIG=%s", l.layout.Kubeconfig())
	return nil
}

// RequiredBinaries are the programs `make build` puts in the bin dir that
// the lab runs.
var RequiredBinaries = []string{"glia", "glia-agent", "glia-cni", "glia-k8s", "coredns", "helm"}

// appendNew appends the elements of add that list does not hold yet.
func appendNew(list []string, add ...string) []string {
	for _, a := range add {
		if !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf unless one is there; it reports
// whether it mounted it, so `lab down` can unmount it again.
func ensureBPFFS() (bool, error) {
	mounted, err := isBPFFS("/sys/fs/bpf")
	if err != nil || mounted {
		return false, err
	}
	if out, err := exec.Command("mount", "-t", "bpf", "bpffs", "/sys/fs/bpf").CombinedOutput(); err != nil {
		return false, fmt.Errorf("mount bpffs at /sys/fs/bpf: %v: %s", err, out)
	}
	return true, nil
}

func (l *Lab) clients() (*kubernetes.Clientset, *rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.layout.Kubeconfig())
	if err != nil {
		return nil, nil, fmt.Errorf("lab kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	return cs, cfg, err
}

// Clients returns a clientset for the lab's API server.
func (l *Lab) Clients() (*kubernetes.Clientset, *rest.Config, error) { return l.clients() }

// bootstrap applies the lab's own manifests (CoreDNS). glia itself, its
// CRDs and its ConfigMap come from the chart.
func (l *Lab) bootstrap(ctx context.Context, cfg *rest.Config) error {
	a, err := newApplier(cfg)
	if err != nil {
		return err
	}
	ents, _ := manifests.ReadDir("manifests")
	for _, e := range ents {
		b, err := manifests.ReadFile("manifests/" + e.Name())
		if err != nil {
			return err
		}
		if err := a.apply(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// applyRetry applies manifests, retrying while a CRD they use is not yet
// served (a CRD is established a moment after it is created).
func (l *Lab) applyRetry(ctx context.Context, cfg *rest.Config, docs [][]byte) error {
	for _, d := range docs {
		deadline := time.Now().Add(30 * time.Second)
		for {
			a, err := newApplier(cfg)
			if err == nil {
				err = a.apply(ctx, d)
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	return nil
}

// preLabelNode creates the Node object with labels before the runner
// registers it (the runner keeps existing labels).
func (l *Lab) preLabelNode(ctx context.Context, cs *kubernetes.Clientset, name string, labels map[string]string) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	_, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	return nil
}

func (l *Lab) waitReady(ctx context.Context, cs *kubernetes.Clientset, nodes int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		last = ""
		nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			ready := 0
			for _, n := range nl.Items {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && n.Spec.PodCIDR != "" {
						ready++
					}
				}
			}
			if ready < nodes {
				last = fmt.Sprintf("%d/%d nodes Ready with a pod CIDR", ready, nodes)
			}
		} else {
			last = err.Error()
		}
		if last == "" {
			dep, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil {
				last = err.Error()
			} else if dep.Status.ReadyReplicas < 1 {
				last = "CoreDNS has no ready replica"
			} else {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab not ready after %s: %s (logs: %s)", timeout, last, l.layout.LogDir())
		case <-time.After(time.Second):
		}
	}
}

// Down removes everything the lab made. It is safe to run at any time.
func (l *Lab) Down(ctx context.Context) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return l.down(ctx, false)
}

func (l *Lab) down(ctx context.Context, quiet bool) error {
	var errs []error
	st, err := l.loadState()
	if err != nil && !errors.Is(err, ErrNoLab) {
		l.log.Warn("lab state unreadable; cleaning up by name", "error", err)
	}
	if st != nil {
		if !quiet {
			l.progress("stopping lab processes")
		}
		// Agents and runners first (they may call CNI), then the control plane.
		names := st.procNames()
		sort.SliceStable(names, func(i, j int) bool { return strings.Contains(names[i], "/") && !strings.Contains(names[j], "/") })
		for _, n := range names {
			if err := st.Procs[n].Stop(3 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", n, err))
			}
		}
	}
	// Everything the lab started — pods included — lives under its cgroup.
	if err := killCgroupTree(l.layout.CgroupRoot); err != nil {
		errs = append(errs, err)
	}
	for _, pfx := range []string{PodNetnsPfx, NodeNetnsPfx} {
		names, err := listNamedNetns(pfx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, n := range names {
			if err := deleteNamedNetns(n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// The lab made /var/run/netns a mount point (as `ip netns add` does):
	// undo that when it was not one before and nothing else lives there.
	if st != nil && !st.NetnsDirWasMount && netnsfile.IsMountPoint(netnsRunDir) {
		if rest, _ := os.ReadDir(netnsRunDir); len(rest) == 0 {
			unmountUnder(netnsRunDir)
		}
	}
	if st != nil && st.NetnsDirMade && !netnsfile.IsMountPoint(netnsRunDir) {
		os.Remove(netnsRunDir) // only if empty: what else lives there stays
	}
	if st != nil {
		removeHostDirs(st.HostDirsMade)
	}
	if err := teardownRootNetwork(); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(l.layout.BPFRoot); err != nil {
		errs = append(errs, err)
	}
	if st != nil && st.MountedBPFFS {
		if out, err := exec.Command("umount", "/sys/fs/bpf").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("unmount /sys/fs/bpf: %v: %s", err, out))
		}
	}
	// Unmount anything left under the lab's directory before removing it.
	if err := unmountUnder(l.layout.Base); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(l.layout.Base); err != nil {
		errs = append(errs, err)
	}
	if !quiet && len(errs) == 0 {
		l.progress("lab removed")
	}
	return errors.Join(errs...)
}

// Status describes the lab for `glia lab status`.
func (l *Lab) Status(ctx context.Context, w io.Writer) error {
	st, err := l.loadState()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Lab:          %d nodes, kubeconfig %s\n", st.Nodes, l.layout.Kubeconfig())
	fmt.Fprintf(w, "Bridge:       %s %s/%d\n", BridgeName, BridgeAddr, UnderlayCIDR.Bits())
	fmt.Fprintf(w, "Processes:\n")
	for _, n := range st.procNames() {
		p := st.Procs[n]
		state := "running"
		if !p.Alive() {
			state = "NOT RUNNING"
		}
		fmt.Fprintf(w, "  %-28s pid %-8d %s\n", n, p.PID, state)
	}
	cs, _, err := l.clients()
	if err != nil {
		return err
	}
	nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	fmt.Fprintf(w, "Nodes:\n")
	for _, n := range nl.Items {
		ready := "NotReady"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = "Ready"
			}
		}
		fmt.Fprintf(w, "  %-12s %-9s podCIDR %s\n", n.Name, ready, n.Spec.PodCIDR)
	}
	return nil
}

func (l *Lab) hasNode(st *State, node string) bool {
	for i := 1; i <= st.Nodes; i++ {
		if NodeName(i) == node {
			return true
		}
	}
	return false
}

// NodeIndex returns i for lab-node-i. Only the names NodeName gives are
// accepted (1 to MaxNodes, no sign, no leading zero), so a name always maps
// back to the same node's paths.
func NodeIndex(node string) (int, error) {
	s, ok := strings.CutPrefix(node, "lab-node-")
	i, err := strconv.Atoi(s)
	if !ok || err != nil || i < 1 || i > MaxNodes || NodeName(i) != node {
		return 0, fmt.Errorf("%q is not a lab node name (lab-node-N, N from 1 to %d)", node, MaxNodes)
	}
	return i, nil
}
