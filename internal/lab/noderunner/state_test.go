package noderunner

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/ptr"
)

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	states := []*PodState{
		{
			UID: "uid-b", Namespace: "default", Name: "web-b", SandboxID: "sb1",
			NetNSPath: "/var/run/netns/glia-pod-n1-uidb", CNIResult: json.RawMessage(`{"cniVersion":"1.1.0","ips":[{"address":"198.19.1.5/24"}]}`),
			PodIPs: []string{"198.19.1.5"}, CgroupDir: "/sys/fs/cgroup/unified/glia-lab/n1/uid-b", Dir: "/state/pod-data/uid-b",
			Containers: []ContainerState{
				{Name: "init", Init: true, ID: "c0", Done: true, LastExitCode: ptr.To[int32](0), LastStartedAt: now, LastFinishedAt: now.Add(time.Second)},
				{Name: "web", ID: "c1", Image: "zwindler/vhelloworld", PID: 4242, StartTime: 99, StartedAt: now, RestartCount: 2, LogPath: "/state/logs/x.log"},
			},
			CreatedAt: now,
		},
		{UID: "uid-a", Namespace: "default", Name: "web-a", HostNetwork: true, Terminal: true, TornDown: true, CreatedAt: now},
	}
	for _, st := range states {
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	// Leftover temp files of an interrupted write are ignored.
	if err := os.WriteFile(filepath.Join(dir, ".tmp-uid-c-123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := []*PodState{states[1], states[0]} // sorted by namespace/name
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load mismatch (-want +got):\n%s", diff)
	}
	if err := s.Delete("uid-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("uid-a"); err != nil {
		t.Errorf("deleting a missing state: %v", err)
	}
	got, err = s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].UID != "uid-b" {
		t.Errorf("after delete: %+v", got)
	}
	if err := s.Save(&PodState{UID: "../x"}); err == nil {
		t.Error("saved a state with a path in its uid")
	}
}

func TestFindPodPID(t *testing.T) {
	stateDir := t.TempDir()
	s, err := NewStore(podsDir(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	start, err := procStartTime(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&PodState{UID: "u1", Namespace: "default", Name: "live", Containers: []ContainerState{{Name: "c", PID: self, StartTime: start}}}); err != nil {
		t.Fatal(err)
	}
	// Same PID, other start time: the PID was reused, the process is gone.
	if err := s.Save(&PodState{UID: "u2", Namespace: "default", Name: "reused", Containers: []ContainerState{{Name: "c", PID: self, StartTime: start + 1}}}); err != nil {
		t.Fatal(err)
	}
	pid, err := FindPodPID(stateDir, "default", "live")
	if err != nil || pid != self {
		t.Errorf("FindPodPID(live) = %d, %v; want %d", pid, err, self)
	}
	if _, err := FindPodPID(stateDir, "default", "reused"); err == nil {
		t.Error("FindPodPID found a process whose PID was reused")
	}
	if _, err := FindPodPID(stateDir, "other", "live"); !errors.Is(err, ErrPodNotFound) {
		t.Errorf("FindPodPID(other/live) error = %v, want ErrPodNotFound", err)
	}
	args, err := ExecArgs(stateDir, "default", "live", []string{"ip", "addr"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"nsenter", "-t", strconv.Itoa(self), "-n", "-m", "-u", "--", "ip", "addr"}, args); diff != "" {
		t.Errorf("ExecArgs mismatch (-want +got):\n%s", diff)
	}
}
