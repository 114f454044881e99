package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/atomicfile"
)

// State is what `lab up` made, written atomically to lab.json so that
// later commands (and `lab down` after a crash) know what to act on.
type State struct {
	Nodes        int               `json:"nodes"`
	Set          map[string]string `json:"set,omitempty"`
	Token        string            `json:"token"`
	Procs        map[string]Proc   `json:"procs"`
	MountedBPFFS bool              `json:"mountedBPFFS,omitempty"`
	// NetnsDirWasMount records whether /var/run/netns was a mount point
	// before the lab (iproute2 and the lab make it one).
	NetnsDirWasMount bool `json:"netnsDirWasMount,omitempty"`
	// NetnsDirMade records that the lab created /var/run/netns itself, so
	// that lab down removes it again (if empty).
	NetnsDirMade bool `json:"netnsDirMade,omitempty"`
	// HostDirsMade are the empty mount points the lab created on the host
	// for its nodes' binds (/opt/cni/bin, /etc/cni/net.d, … when the host
	// had none); lab down removes them again when they are still empty.
	HostDirsMade []string `json:"hostDirsMade,omitempty"`
}

func (s *State) add(p Proc) {
	if s.Procs == nil {
		s.Procs = map[string]Proc{}
	}
	s.Procs[p.Name] = p
}

// procNames returns the recorded process names, sorted.
func (s *State) procNames() []string {
	var names []string
	for n := range s.Procs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (l *Lab) saveState(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(l.layout.StateFile(), b, 0o600)
}

// ErrNoLab is returned when no lab is up.
var ErrNoLab = errors.New("no lab is up: run `glia lab up` (or `make lab`)")

func (l *Lab) loadState() (*State, error) {
	b, err := os.ReadFile(l.layout.StateFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoLab
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("lab state %s is unreadable (%v): run `glia lab down` to clean up", l.layout.StateFile(), err)
	}
	return &s, nil
}

// lock takes an exclusive lock on the lab for commands that change it.
func (l *Lab) lock() (func(), error) {
	if err := os.MkdirAll(filepath.Dir(l.layout.Base), 0o755); err != nil {
		return nil, err
	}
	p := l.layout.Base + ".lock"
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another glia lab command holds %s: wait for it to finish", p)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}
