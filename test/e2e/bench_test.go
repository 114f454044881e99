package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"glia.dev/glia/internal/bench"
)

// TestBench runs `glia bench` end to end, small: a scenario brings up its
// lab, measures both modes, prints the table with ratios and targets,
// writes JSON and PNGs, and takes the lab down; Ctrl-C in the middle of a
// run takes the lab down too.
func TestBench(t *testing.T) {
	glia := filepath.Join(binDir(t), "glia")
	if left := labLeftovers(); len(left) > 0 {
		t.Fatalf("a lab is up before the test: %s", strings.Join(left, "\n"))
	}

	t.Run("Masquerade", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := run(ctx, glia, "bench", "masquerade", "--repeats", "2", "--conns", "50", "--out", dir)
		if err != nil {
			t.Fatalf("glia bench masquerade: %v\n%s", err, out)
		}
		for _, want := range []string{"connection rate (conn/s)", "ebpf vs legacy", "BPF vs iptables masquerade, new connections per second"} {
			if !strings.Contains(out, want) {
				t.Errorf("the table lacks %q:\n%s", want, out)
			}
		}
		rep, err := bench.ReadReport(filepath.Join(dir, "masquerade.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{bench.ModeEBPF, bench.ModeLegacy} {
			var samples int
			for _, m := range rep.Measurements {
				if m.Mode == mode && m.Metric == "connection rate" {
					samples = len(m.Samples)
					for _, v := range m.Samples {
						if v <= 0 {
							t.Errorf("%s: a connection rate of %v", mode, v)
						}
					}
				}
			}
			if samples != 2 {
				t.Errorf("%s: %d connection-rate samples, want 2 (one per repetition)", mode, samples)
			}
		}
		if len(rep.Targets) != 1 || rep.Targets[0].Status == bench.StatusNotMeasured {
			t.Errorf("targets %+v: want the masquerade target evaluated", rep.Targets)
		}
		pngs, _ := filepath.Glob(filepath.Join(dir, "masquerade_*.png"))
		if len(pngs) == 0 {
			t.Error("no PNG plot written")
		}
		if left := labLeftovers(); len(left) > 0 {
			t.Errorf("glia bench left its lab behind:\n%s", strings.Join(left, "\n"))
		}
	})

	t.Run("InterruptTearsDown", func(t *testing.T) {
		// Its report goes to a temporary directory, never into the source tree.
		cmd := exec.Command(glia, "bench", "request-response", "--repeats", "5", "--duration", "3s", "--out", t.TempDir())
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		measuring := make(chan struct{})
		var log strings.Builder
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			seen := false
			for sc.Scan() {
				fmt.Fprintln(&log, sc.Text())
				if !seen && strings.Contains(sc.Text(), "request-response rep 1/5") {
					seen = true
					close(measuring)
				}
			}
		}()
		select {
		case <-measuring:
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			<-done
			cmd.Wait()
			t.Fatalf("glia bench did not start measuring in 3 minutes:\n%s", log.String())
		}
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() { <-done; waited <- cmd.Wait() }()
		select {
		case err := <-waited:
			if err == nil {
				t.Errorf("glia bench interrupted exited 0; want the interruption reported:\n%s", log.String())
			}
		case <-time.After(3 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("glia bench did not stop within 3 minutes of SIGINT:\n%s", log.String())
		}
		if !strings.Contains(log.String(), "taking the lab down") {
			t.Errorf("glia bench did not say it takes the lab down:\n%s", log.String())
		}
		if left := labLeftovers(); len(left) > 0 {
			t.Errorf("interrupted glia bench left its lab behind:\n%s\nglia bench said:\n%s", strings.Join(left, "\n"), log.String())
		}
	})
	if t.Failed() {
		exec.Command(glia, "lab", "down").Run()
		os.Stderr.WriteString("TestBench: lab taken down after a failure\n")
	}
}
