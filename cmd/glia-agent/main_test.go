package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var bin string // the glia-agent binary built for these tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "glia-agent-bin-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "glia-agent")
	build := exec.Command("go", "build", "-ldflags", "-X glia.dev/glia/internal/version.version=9.9.9-test", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("build glia-agent: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// unreachable writes a kubeconfig whose API server refuses connections
// (port 1 on loopback) and returns the flags that keep the agent's files
// in dir.
func unreachable(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
users:
- name: u
  user: {token: not-a-token}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--node-name", "test-node", "--kubeconfig", kc,
		"--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "glia.sock"),
		"--bpffs-dir", filepath.Join(dir, "bpf"), "--health-probe-bind-address", "",
		"--cni-conf-dir", filepath.Join(dir, "net.d"), "--cni-bin-dir", filepath.Join(dir, "cni-bin")}
}

func runAgent(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"--help"}, 0, "", "--log-format"},
		{"version", []string{"--version"}, 0, "glia-agent 9.9.9-test", ""},
		{"unknown flag", []string{"--bogus"}, 2, "", "unknown flag: --bogus"},
		{"bad log format", []string{"--log-format", "xml", "--node-name", "n"}, 2, "", `--log-format "xml": use text or json`},
		{"no node name", []string{"--log-format", "json"}, 2, "", "--node-name is required"},
		{"init help", []string{"init", "--help"}, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runAgent(t, tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d (want %d)\nstdout (want %q):\n%s\nstderr (want %q):\n%s", code, tt.code, tt.stdout, stdout, tt.stderr, stderr)
			}
		})
	}
}

// logUntilStopped starts the agent with --log-format format against an API
// server that is not there, lets it log while it waits for its Node, stops
// it, and returns every line it wrote on stderr.
func logUntilStopped(t *testing.T, format string) []string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--log-format", format}, unreachable(t)...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var got []string
	deadline := time.After(15 * time.Second)
	// The agent says it started, then that it waits for its Node.
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("agent stopped early; it wrote:\n%s", strings.Join(got, "\n"))
			}
			got = append(got, l)
			if strings.Contains(l, "Waiting for Node") {
				break wait
			}
		case <-deadline:
			t.Fatalf("no 'Waiting for Node' line in 15s; the agent wrote:\n%s", strings.Join(got, "\n"))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		got = append(got, l)
	}
	_ = cmd.Wait()
	if out.Len() != 0 {
		t.Errorf("the agent wrote to stdout: %q", out.String())
	}
	if len(got) < 3 {
		t.Errorf("%d lines, want at least start, waiting and stop:\n%s", len(got), strings.Join(got, "\n"))
	}
	return got
}

// TestLogFormatJSON: every line is a JSON object with the stable keys.
func TestLogFormatJSON(t *testing.T) {
	got := logUntilStopped(t, "json")
	for _, l := range got {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("not a JSON object: %q: %v", l, err)
			continue
		}
		for _, k := range []string{"time", "level", "msg", "subsys"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %q has no key %q", l, k)
			}
		}
		if m["node"] != "test-node" {
			t.Errorf("line %q: node %v, want test-node", l, m["node"])
		}
	}
	var start map[string]any
	_ = json.Unmarshal([]byte(got[0]), &start)
	if start["msg"] != "Starting glia-agent" || start["version"] != "9.9.9-test" || start["subsys"] != "daemon" {
		t.Errorf("first line %q, want msg Starting glia-agent, version 9.9.9-test, subsys daemon", got[0])
	}
}

// TestLogFormatText: logfmt lines, and the error that stopped the agent
// once more as written, for a person reading kubectl logs.
func TestLogFormatText(t *testing.T) {
	got := logUntilStopped(t, "text")
	if !strings.HasPrefix(got[0], "time=") || !strings.Contains(got[0], `msg="Starting glia-agent" subsys=daemon node=test-node version=9.9.9-test`) {
		t.Errorf("first line %q", got[0])
	}
	if last := got[len(got)-1]; !strings.HasPrefix(last, "glia-agent: node test-node: context canceled") {
		t.Errorf("last line %q, want the error as written", last)
	}
}
