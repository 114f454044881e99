package noderunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/atomicfile"
)

// KubeProxyModeLabel on a node picks kube-proxy's mode there ("nftables";
// anything else: iptables).
const KubeProxyModeLabel = "lab.glia.dev/kube-proxy-mode"

// kubeProxyCheckInterval is how often the runner asks the node's glia agent
// whether it replaces kube-proxy.
const kubeProxyCheckInterval = 2 * time.Second

// KubeProxyState is what the runner records about the node's kube-proxy,
// in kube-proxy.json under its state dir.
type KubeProxyState struct {
	// Replaced: the node's agent replaces kube-proxy, so none runs and
	// kube-proxy's rules were removed. Nil until the agent answered.
	Replaced  *bool  `json:"replaced,omitempty"`
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"startTime,omitempty"`
	Mode      string `json:"mode,omitempty"`
	Log       string `json:"log,omitempty"`
	Cgroup    string `json:"cgroup,omitempty"`
}

// Running reports whether the recorded kube-proxy process still runs.
func (s KubeProxyState) Running() bool {
	return s.PID > 0 && processAlive(s.PID, s.StartTime)
}

func kubeProxyStatePath(stateDir string) string { return filepath.Join(stateDir, "kube-proxy.json") }

// ReadKubeProxyState reads the runner's kube-proxy record under stateDir.
func ReadKubeProxyState(stateDir string) (KubeProxyState, error) {
	var s KubeProxyState
	b, err := os.ReadFile(kubeProxyStatePath(stateDir))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// kubeProxy runs the real kube-proxy (`glia-k8s proxy`) on the node while
// the node's glia agent does not replace it, and stops it (removing its
// rules) while the agent does — what an operator does by hand on a real
// node, done here by the runner like a static pod, so that a node whose
// agent restarts with another config (kubectl delete pod) gets the right
// Service datapath without the lab's help.
type kubeProxy struct {
	log         *slog.Logger
	client      kubernetes.Interface
	node        string
	binary      string // glia-k8s
	kubeconfig  string
	clusterCIDR string
	agentSocket string
	cgroup      string // "" = the runner's
	logPath     string
	stateDir    string
	st          KubeProxyState
}

func (r *runner) newKubeProxy() *kubeProxy {
	kc := r.cfg.Kubeconfig
	if abs, err := filepath.Abs(kc); err == nil {
		kc = abs
	}
	k := &kubeProxy{
		log:         r.log.With("component", "kube-proxy"),
		client:      r.client,
		node:        r.cfg.Node,
		binary:      filepath.Join(filepath.Dir(r.selfExe), "glia-k8s"),
		kubeconfig:  kc,
		clusterCIDR: r.cfg.KubeProxyClusterCIDR,
		agentSocket: r.cfg.AgentSocket,
		logPath:     filepath.Join(logsDir(r.cfg.StateDir), "kube-proxy.log"),
		stateDir:    r.cfg.StateDir,
	}
	if r.cfg.Cgroup != "" {
		k.cgroup = filepath.Join(r.cfg.Cgroup, "_kube-proxy")
	}
	if st, err := ReadKubeProxyState(r.cfg.StateDir); err == nil {
		k.st = st // a kube-proxy an earlier runner started is adopted
	}
	return k
}

// run reconciles kube-proxy with the agent's answer until ctx ends.
// kube-proxy keeps running when the runner stops, as pods do.
func (k *kubeProxy) run(ctx context.Context) {
	t := time.NewTicker(kubeProxyCheckInterval)
	defer t.Stop()
	for {
		k.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *kubeProxy) reconcile(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	var s api.Status
	err := api.NewClient(k.agentSocket).Status(qctx, &s)
	cancel()
	if err != nil {
		return // no answer (agent restarting): leave things as they are
	}
	replaced := s.KubeProxyReplacement.Enabled
	running := k.st.Running()
	if replaced && running && !s.Ready {
		// kube-proxy goes only once the agent replacing it programmed
		// the Services: until then new connections need its rules.
		return
	}
	switch {
	case !replaced && !running:
		if err := k.start(ctx); err != nil {
			k.log.Warn("start kube-proxy", "err", err)
			return
		}
	case replaced && running:
		k.log.Info("stopping kube-proxy: the glia agent replaces it on this node")
		k.stop()
		fallthrough
	case replaced && (k.st.Replaced == nil || !*k.st.Replaced):
		if err := k.cleanup(ctx); err != nil {
			k.log.Warn("remove kube-proxy's rules", "err", err)
			return
		}
	}
	k.st.Replaced = &replaced
	k.save()
}

func (k *kubeProxy) mode(ctx context.Context) string {
	n, err := k.client.CoreV1().Nodes().Get(ctx, k.node, metav1.GetOptions{})
	if err == nil && n.Labels[KubeProxyModeLabel] == "nftables" {
		return "nftables"
	}
	return "iptables"
}

func (k *kubeProxy) start(ctx context.Context) error {
	mode := k.mode(ctx)
	k.log.Info("starting kube-proxy: the glia agent does not replace it on this node", "mode", mode)
	if err := os.MkdirAll(filepath.Dir(k.logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(k.binary, "proxy",
		"--kubeconfig="+k.kubeconfig, "--hostname-override="+k.node,
		"--proxy-mode="+mode, "--cluster-cidr="+k.clusterCIDR,
		"--healthz-bind-address=0.0.0.0:10256", "--metrics-bind-address=127.0.0.1:10249",
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
		"--v=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if k.cgroup != "" {
		if err := os.MkdirAll(k.cgroup, 0o755); err != nil {
			return err
		}
		cg, err := os.Open(k.cgroup)
		if err != nil {
			return err
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cg.Fd())
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s proxy: %w", k.binary, err)
	}
	go cmd.Wait()
	st, err := procStartTime(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("kube-proxy exited at once: see %s", k.logPath)
	}
	k.st.PID, k.st.StartTime, k.st.Mode, k.st.Log, k.st.Cgroup = cmd.Process.Pid, st, mode, k.logPath, k.cgroup
	return nil
}

func (k *kubeProxy) stop() {
	pid := k.st.PID
	if k.st.Running() {
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50 && k.st.Running(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if k.st.Running() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	k.st.PID, k.st.StartTime = 0, 0
}

// cleanup removes the rules a kube-proxy left in the node, in either mode.
func (k *kubeProxy) cleanup(ctx context.Context) error {
	var errs []error
	for _, m := range []string{"iptables", "nftables"} {
		out, err := exec.CommandContext(ctx, k.binary, "proxy", "--cleanup", "--proxy-mode="+m).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s proxy --cleanup --proxy-mode=%s: %w: %s", k.binary, m, err, out))
		}
	}
	return errors.Join(errs...)
}

func (k *kubeProxy) save() {
	b, _ := json.Marshal(k.st)
	if err := atomicfile.WriteFile(kubeProxyStatePath(k.stateDir), b, 0o644); err != nil {
		k.log.Warn("record kube-proxy state", "err", err)
	}
}
