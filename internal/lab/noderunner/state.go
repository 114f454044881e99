package noderunner

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"glia.dev/glia/internal/atomicfile"
)

// PodState is what the runner persists about one pod, so that a restarted
// runner re-adopts its processes instead of recreating them.
type PodState struct {
	UID         string `json:"uid"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	HostNetwork bool   `json:"hostNetwork,omitempty"`
	// SandboxID is the CNI container ID (the "infra container").
	SandboxID string `json:"sandboxID"`
	NetNSPath string `json:"netnsPath,omitempty"`
	// CNIResult is the CNI ADD result as the plugin returned it.
	CNIResult json.RawMessage `json:"cniResult,omitempty"`
	PodIPs    []string        `json:"podIPs,omitempty"`
	CgroupDir string          `json:"cgroupDir,omitempty"`
	// Dir holds the pod's resolv.conf, hosts, hostname and Corefile.
	Dir        string           `json:"dir"`
	Containers []ContainerState `json:"containers"`
	CreatedAt  time.Time        `json:"createdAt"`
	// Terminal is set once every container ended for good
	// (Succeeded/Failed); TornDown once its sandbox was released.
	Terminal bool `json:"terminal,omitempty"`
	TornDown bool `json:"tornDown,omitempty"`
}

// ContainerState is one container's process.
type ContainerState struct {
	Name string `json:"name"`
	Init bool   `json:"init,omitempty"`
	// ID is the container ID, reported as glia-lab://ID.
	ID    string `json:"id"`
	Image string `json:"image"`
	PID   int    `json:"pid,omitempty"`
	// StartTime is the process's start time in clock ticks since boot
	// (/proc/PID/stat field 22), which tells a re-used PID apart.
	StartTime    uint64    `json:"startTime,omitempty"`
	StartedAt    time.Time `json:"startedAt,omitzero"`
	RestartCount int32     `json:"restartCount"`
	LogPath      string    `json:"logPath"`
	// Last termination, reported as lastState.terminated.
	LastExitCode   *int32    `json:"lastExitCode,omitempty"`
	LastFinishedAt time.Time `json:"lastFinishedAt,omitzero"`
	LastStartedAt  time.Time `json:"lastStartedAt,omitzero"`
	// Done is set when the container exited and will not be restarted.
	Done bool `json:"done,omitempty"`
}

// Store keeps PodStates as one JSON file per pod under a directory; writes
// are atomic (temp file + rename).
type Store struct {
	dir string
}

// NewStore returns a store under dir (created if needed).
func NewStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(uid string) string {
	return filepath.Join(s.dir, uid+".json")
}

// Save writes st atomically.
func (s *Store) Save(st *PodState) error {
	if st.UID == "" || strings.ContainsAny(st.UID, "/\\") {
		return fmt.Errorf("invalid pod uid %q", st.UID)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode pod state: %w", err)
	}
	if err := atomicfile.WriteFile(s.path(st.UID), b, 0o600); err != nil {
		return fmt.Errorf("write pod state: %w", err)
	}
	return nil
}

// Delete removes a pod's state; a missing state is not an error.
func (s *Store) Delete(uid string) error {
	if err := os.Remove(s.path(uid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete pod state: %w", err)
	}
	return nil
}

// Load returns every stored pod, sorted by namespace/name.
func (s *Store) Load() ([]*PodState, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read state dir: %w", err)
	}
	var out []*PodState
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var st PodState
		if err := json.Unmarshal(b, &st); err != nil {
			errs = append(errs, fmt.Errorf("decode %s: %w", name, err))
			continue
		}
		out = append(out, &st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, errors.Join(errs...)
}

// podsDir is where the runner keeps pod states under its state dir.
func podsDir(stateDir string) string { return filepath.Join(stateDir, "pods") }

// ErrPodNotFound is returned by FindPodPID for a pod the runner does not run.
var ErrPodNotFound = errors.New("pod not found in node runner state")

// FindPodPID returns the PID of the main (first) container process of pod
// namespace/name from the runner's state under stateDir, for
// `nsenter -t PID -n -m -u -- CMD`. It checks the process still runs.
func FindPodPID(stateDir, namespace, name string) (int, error) {
	s, err := NewStore(podsDir(stateDir))
	if err != nil {
		return 0, err
	}
	states, err := s.Load()
	if err != nil && len(states) == 0 {
		return 0, err
	}
	for _, st := range states {
		if st.Namespace != namespace || st.Name != name {
			continue
		}
		for _, c := range st.Containers {
			if c.PID > 0 && processAlive(c.PID, c.StartTime) {
				return c.PID, nil
			}
		}
		return 0, fmt.Errorf("pod %s/%s has no running container process", namespace, name)
	}
	return 0, fmt.Errorf("%w: %s/%s under %s", ErrPodNotFound, namespace, name, stateDir)
}

// ExecArgs returns the command line that runs argv inside pod
// namespace/name's network, mount and UTS namespaces.
func ExecArgs(stateDir, namespace, name string, argv []string) ([]string, error) {
	pid, err := FindPodPID(stateDir, namespace, name)
	if err != nil {
		return nil, err
	}
	return nsenterArgs(pid, argv), nil
}

func nsenterArgs(pid int, argv []string) []string {
	return append([]string{"nsenter", "-t", fmt.Sprint(pid), "-n", "-m", "-u", "--"}, argv...)
}
