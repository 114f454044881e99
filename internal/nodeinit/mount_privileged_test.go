package nodeinit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The privileged tests mount only inside a child process of the test binary
// started in a private mount namespace (CLONE_NEWNS; Go's os/exec then marks
// "/" recursively private, as unshare(1) does), so no mount reaches the
// host's namespace. The child checks that "/" is not shared before it
// mounts anything, and the parent checks afterwards that the host saw none.

const childEnv = "GLIA_NODEINIT_MOUNT_CHILD"

// childStep is one mount call the child makes, and what it saw.
type childStep struct {
	Kind      string // bpffs or cgroup2
	Path      string
	PreTmpfs  bool // mount a tmpfs at Path first (a different file system)
	Mounted   bool
	Magic     int64
	Err       string
	ViaRunCLI bool
}

type childPlan struct {
	Steps  []childStep
	Result string // file the child writes the steps with their outcomes to
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts in a private mount namespace)")
	}
}

// runChild runs plan in a child process in a new mount namespace.
func runChild(t *testing.T, plan childPlan) []childStep {
	t.Helper()
	plan.Result = filepath.Join(t.TempDir(), "result.json")
	b, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMountChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	rb, err := os.ReadFile(plan.Result)
	if err != nil {
		t.Fatalf("child wrote no result: %v\n%s", err, out)
	}
	var steps []childStep
	if err := json.Unmarshal(rb, &steps); err != nil {
		t.Fatal(err)
	}
	if len(steps) != len(plan.Steps) {
		t.Fatalf("child ran %d steps, want %d\n%s", len(steps), len(plan.Steps), out)
	}
	return steps
}

// TestMountChild is the child's body; it does nothing unless started by runChild.
func TestMountChild(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("runs only as the child of the privileged mount tests")
	}
	var plan childPlan
	if err := json.Unmarshal([]byte(raw), &plan); err != nil {
		t.Fatal(err)
	}
	if shared, err := rootShared(); err != nil || shared {
		t.Fatalf("refusing to mount: / is shared with the host's mount namespace (err %v)", err)
	}
	for i := range plan.Steps {
		s := &plan.Steps[i]
		if s.PreTmpfs {
			if err := os.MkdirAll(s.Path, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", s.Path, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		switch {
		case s.ViaRunCLI:
			err = Run([]string{"mount-" + s.Kind, "--path", s.Path}, os.Stderr, discard())
			s.Mounted = err == nil // the CLI does not say; only used where a mount is expected
		case s.Kind == "bpffs":
			s.Mounted, err = MountBPFFS(s.Path)
		case s.Kind == "cgroup2":
			s.Mounted, err = MountCgroup2(s.Path)
		default:
			t.Fatalf("unknown kind %q", s.Kind)
		}
		if err != nil {
			s.Err = err.Error()
			continue
		}
		var st unix.Statfs_t
		if err := unix.Statfs(s.Path, &st); err != nil {
			t.Fatal(err)
		}
		s.Magic = int64(st.Type)
	}
	b, _ := json.Marshal(plan.Steps)
	if err := os.WriteFile(plan.Result, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rootShared reports whether "/" is a shared mount (propagates to a peer group).
func rootShared() (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 6 && fields[4] == "/" {
			for _, opt := range fields[6:] {
				if opt == "-" {
					break
				}
				if strings.HasPrefix(opt, "shared:") {
					return true, nil
				}
			}
			return false, nil
		}
	}
	return false, fmt.Errorf("no / in mountinfo")
}

// mountedHere lists mount points at or under dir in the test's (the host's)
// mount namespace.
func mountedHere(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

func TestPrivilegedMount(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	magic := map[string]int64{"bpffs": bpffsMagic, "cgroup2": cgroup2Magic}
	for _, tc := range []struct {
		name  string
		steps []childStep
		want  []bool // Mounted per step
	}{
		{"bpffs mounts once", []childStep{
			{Kind: "bpffs", Path: filepath.Join(dir, "a", "sys", "fs", "bpf")},
			{Kind: "bpffs", Path: filepath.Join(dir, "a", "sys", "fs", "bpf")},
		}, []bool{true, false}},
		{"cgroup2 mounts once", []childStep{
			{Kind: "cgroup2", Path: filepath.Join(dir, "b", "cgroupv2")},
			{Kind: "cgroup2", Path: filepath.Join(dir, "b", "cgroupv2")},
		}, []bool{true, false}},
		{"over another file system", []childStep{
			{Kind: "bpffs", Path: filepath.Join(dir, "c"), PreTmpfs: true},
			{Kind: "cgroup2", Path: filepath.Join(dir, "d"), PreTmpfs: true},
		}, []bool{true, true}},
		{"through the CLI", []childStep{
			{Kind: "bpffs", Path: filepath.Join(dir, "e"), ViaRunCLI: true},
			{Kind: "cgroup2", Path: filepath.Join(dir, "f"), ViaRunCLI: true},
		}, []bool{true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			steps := runChild(t, childPlan{Steps: tc.steps})
			for i, s := range steps {
				if s.Err != "" {
					t.Fatalf("step %d (%s at %s): %s", i, s.Kind, s.Path, s.Err)
				}
				if s.Mounted != tc.want[i] {
					t.Errorf("step %d (%s at %s): mounted=%v, want %v", i, s.Kind, s.Path, s.Mounted, tc.want[i])
				}
				if s.Magic != magic[s.Kind] {
					t.Errorf("step %d: %s is on magic %#x after the call, want %s (%#x)", i, s.Path, s.Magic, s.Kind, magic[s.Kind])
				}
			}
		})
	}
	// The host's namespace saw none of it.
	if m := mountedHere(t, dir); len(m) > 0 {
		t.Fatalf("mounts leaked into the test's mount namespace: %v", m)
	}
}

func TestPrivilegedMountErrors(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	steps := runChild(t, childPlan{Steps: []childStep{
		{Kind: "bpffs", Path: "relative/bpf"},
		{Kind: "cgroup2", Path: filepath.Join(file, "under-a-file")},
	}})
	for i, want := range []string{`path "relative/bpf" must be absolute`, "create mount point"} {
		if !strings.Contains(steps[i].Err, want) {
			t.Errorf("step %d: err %q, want it to contain %q", i, steps[i].Err, want)
		}
		if steps[i].Mounted {
			t.Errorf("step %d mounted despite the error", i)
		}
	}
	if m := mountedHere(t, dir); len(m) > 0 {
		t.Fatalf("mounts leaked into the test's mount namespace: %v", m)
	}
}
