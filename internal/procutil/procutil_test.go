package procutil

import (
	"os"
	"testing"
)

func TestStartTimeAndAlive(t *testing.T) {
	self, err := StartTime(os.Getpid())
	if err != nil || self == 0 {
		t.Fatalf("StartTime(self) = %d, %v", self, err)
	}
	if !Alive(os.Getpid(), self) || !Alive(os.Getpid(), 0) {
		t.Error("this process is not alive with its own start time")
	}
	if Alive(os.Getpid(), self+1) {
		t.Error("a different start time still counts as the same process")
	}
	for _, pid := range []int{0, -1} {
		if Alive(pid, 0) {
			t.Errorf("Alive(%d) = true", pid)
		}
	}
}
