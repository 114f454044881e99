package noderunner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"glia.dev/glia/internal/lab/podinit"
	"glia.dev/glia/internal/netnsfile"
)

// Sandbox is the kernel side of running pods, behind a narrow interface so
// the pod lifecycle is testable without root.
type Sandbox interface {
	// Prepare gives a new pod its cgroup and, unless st.HostNetwork, a
	// network namespace wired by CNI ADD. It fills st.NetNSPath,
	// st.CgroupDir, st.CNIResult and st.PodIPs.
	Prepare(ctx context.Context, st *PodState) error
	// Check verifies an adopted pod's network (CNI CHECK).
	Check(ctx context.Context, st *PodState) error
	// Start starts one container process of the pod.
	Start(ctx context.Context, st *PodState, init podinit.Options, env []string, cio ContainerIO) (Process, error)
	// Adopt re-attaches a container process started by an earlier runner.
	Adopt(st *PodState, c ContainerState) (Process, error)
	// Signal sends sig to every process of the pod.
	Signal(st *PodState, sig syscall.Signal) error
	// Teardown runs CNI DEL, removes the namespace and the cgroup. It is
	// idempotent.
	Teardown(ctx context.Context, st *PodState) error
	// Exec runs argv in the namespaces of process pid and returns its
	// combined output; a non-zero exit is an error.
	Exec(ctx context.Context, pid int, argv []string) ([]byte, error)
}

// HostSandbox runs pods as processes on this machine.
type HostSandbox struct {
	log        *slog.Logger
	node       string
	selfExe    string
	cgroupRoot string // empty: no cgroups
	netnsDir   string
	cni        *libcni.CNIConfig
	cniConfDir string
	cniNetwork string
}

// NewHostSandbox builds the real sandbox from cfg. A cgroup root that cannot
// be created disables per-pod cgroups with a warning.
func NewHostSandbox(log *slog.Logger, cfg Config) (*HostSandbox, error) {
	self, err := cfg.selfExe()
	if err != nil {
		return nil, err
	}
	cacheDir := filepath.Join(cfg.StateDir, "cni-cache")
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("create CNI cache dir: %w", err)
	}
	s := &HostSandbox{
		log:        log,
		node:       cfg.Node,
		selfExe:    self,
		netnsDir:   NetNSDir,
		cni:        libcni.NewCNIConfigWithCacheDir([]string{cfg.CNIBinDir}, cacheDir, nil),
		cniConfDir: cfg.CNIConfDir,
		cniNetwork: cfg.CNINetwork,
	}
	if cfg.Cgroup != "" {
		if err := checkCgroup2(cfg.Cgroup); err != nil {
			log.Warn("pods run without a cgroup of their own", "cgroup", cfg.Cgroup, "err", err,
				"fix", "pass --cgroup a directory on a cgroup v2 mount (e.g. under /sys/fs/cgroup/unified)")
		} else {
			s.cgroupRoot = cfg.Cgroup
		}
	}
	return s, nil
}

func checkCgroup2(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs cgroup: %w", err)
	}
	const cgroup2Magic = 0x63677270
	if st.Type != cgroup2Magic {
		return fmt.Errorf("%s is not on a cgroup v2 file system", dir)
	}
	return nil
}

// NetworkReady reports whether the CNI network configuration is installed.
func (s *HostSandbox) NetworkReady() error {
	_, err := s.netConf()
	return err
}

func (s *HostSandbox) netConf() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(s.cniConfDir, []string{".conflist"})
	if err != nil {
		return nil, fmt.Errorf("read CNI conf dir: %w", err)
	}
	for _, f := range files {
		list, err := libcni.NetworkConfFromFile(f)
		if err != nil {
			return nil, fmt.Errorf("load CNI config %s: %w", f, err)
		}
		if list.Name == s.cniNetwork {
			return list, nil
		}
	}
	return nil, fmt.Errorf("cni config uninitialized: no %q network list in %s", s.cniNetwork, s.cniConfDir)
}

func runtimeConf(st *PodState) *libcni.RuntimeConf {
	netns := st.NetNSPath
	if !netnsfile.IsNamespace(netns) {
		netns = "" // DEL must still run when the namespace is gone
	}
	return &libcni.RuntimeConf{
		ContainerID: st.SandboxID,
		NetNS:       netns,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", st.Namespace},
			{"K8S_POD_NAME", st.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", st.SandboxID},
			{"K8S_POD_UID", st.UID},
		},
	}
}

func (s *HostSandbox) Prepare(ctx context.Context, st *PodState) error {
	if s.cgroupRoot != "" {
		dir := filepath.Join(s.cgroupRoot, st.UID)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create pod cgroup: %w", err)
		}
		st.CgroupDir = dir
	}
	if st.HostNetwork {
		return nil
	}
	list, err := s.netConf()
	if err != nil {
		return err
	}
	path, err := createNetNS(s.netnsDir, PodNetNSName(s.node, st.UID))
	if err != nil {
		return err
	}
	st.NetNSPath = path
	res, err := s.cni.AddNetworkList(ctx, list, runtimeConf(st))
	if err != nil {
		return fmt.Errorf("CNI ADD: %w", err)
	}
	r, err := types100.GetResult(res)
	if err != nil {
		return fmt.Errorf("convert CNI result: %w", err)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode CNI result: %w", err)
	}
	st.CNIResult = raw
	st.PodIPs = nil
	for _, ip := range r.IPs {
		st.PodIPs = append(st.PodIPs, ip.Address.IP.String())
	}
	if len(st.PodIPs) == 0 {
		return errors.New("CNI ADD returned no IP address")
	}
	return nil
}

func (s *HostSandbox) Check(ctx context.Context, st *PodState) error {
	if st.HostNetwork {
		return nil
	}
	if !netnsfile.IsNamespace(st.NetNSPath) {
		return fmt.Errorf("network namespace %s is gone", st.NetNSPath)
	}
	list, err := s.netConf()
	if err != nil {
		return err
	}
	if err := s.cni.CheckNetworkList(ctx, list, runtimeConf(st)); err != nil {
		return fmt.Errorf("CNI CHECK: %w", err)
	}
	return nil
}

func (s *HostSandbox) Start(ctx context.Context, st *PodState, init podinit.Options, env []string, cio ContainerIO) (Process, error) {
	cmd, err := Spawn(SpawnSpec{
		SelfExe:   s.selfExe,
		NetNSPath: st.NetNSPath,
		CgroupDir: st.CgroupDir,
		Init:      init,
		Env:       env,
		IO:        cio,
	})
	if err != nil {
		return nil, err
	}
	return newChildProcess(cmd), nil
}

func (s *HostSandbox) Adopt(st *PodState, c ContainerState) (Process, error) {
	if st.CgroupDir != "" {
		pids, err := cgroupPIDs(st.CgroupDir)
		if err != nil {
			return nil, err
		}
		found := false
		for _, p := range pids {
			found = found || p == c.PID
		}
		if !found {
			return nil, fmt.Errorf("process %d is not in the pod cgroup %s", c.PID, st.CgroupDir)
		}
	}
	return adoptProcess(c.PID, c.StartTime)
}

func cgroupPIDs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("read pod cgroup: %w", err)
	}
	var pids []int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Signal sends sig to every process in the pod's cgroup, or, without a
// cgroup, to each container's session (process group).
func (s *HostSandbox) Signal(st *PodState, sig syscall.Signal) error {
	var errs []error
	if st.CgroupDir != "" {
		pids, err := cgroupPIDs(st.CgroupDir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("signal %d: %w", pid, err))
			}
		}
		return errors.Join(errs...)
	}
	for _, c := range st.Containers {
		if c.PID > 0 && processAlive(c.PID, c.StartTime) {
			// The container is a session leader: -PID is its group.
			if err := syscall.Kill(-c.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("signal group %d: %w", c.PID, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (s *HostSandbox) Teardown(ctx context.Context, st *PodState) error {
	var errs []error
	if !st.HostNetwork && st.NetNSPath != "" {
		list, err := s.netConf()
		if err != nil {
			errs = append(errs, fmt.Errorf("CNI DEL: %w", err))
		} else if err := s.cni.DelNetworkList(ctx, list, runtimeConf(st)); err != nil {
			errs = append(errs, fmt.Errorf("CNI DEL: %w", err))
		}
		if err := removeNetNS(st.NetNSPath); err != nil {
			errs = append(errs, err)
		}
	}
	if st.CgroupDir != "" {
		if err := removeCgroup(ctx, st.CgroupDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroup kills whatever is left in dir and removes it.
func removeCgroup(ctx context.Context, dir string) error {
	for i := 0; ; i++ {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || i >= 50 {
			return fmt.Errorf("remove pod cgroup: %w", err)
		}
		// Still populated: kill everything in it (cgroup.kill, Linux 5.14+).
		if kerr := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); kerr != nil {
			return fmt.Errorf("remove pod cgroup: %w (kill: %w)", err, kerr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove pod cgroup: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *HostSandbox) Exec(ctx context.Context, pid int, argv []string) ([]byte, error) {
	args := nsenterArgs(pid, argv)
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("exec %q in pid %d: %w", strings.Join(argv, " "), pid, err)
	}
	return out, nil
}
