package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Stamps the test build carries, as the Makefile's -ldflags set them.
const (
	testVersion = "9.9.9-test"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
)

var bin string // the glia binary built for these tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "glia-bin-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "glia")
	build := exec.Command("go", "build", "-ldflags",
		"-X glia.dev/glia/internal/version.version="+testVersion+" -X glia.dev/glia/internal/version.commit="+testCommit,
		"-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("build glia: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// glia runs the built binary with no lab, no cluster and no agent around.
func glia(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "absent"), "HOME="+t.TempDir())
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
		args   []string
		code   int
		stdout string // a substring
		stderr string // a substring
	}{
		{args: []string{"--help"}, code: 0, stdout: "Usage:"},
		{args: []string{"status", "--help"}, code: 0, stdout: "--all-nodes"},
		{args: []string{"bpf", "--help"}, code: 0, stdout: "Available Commands:"},
		{args: []string{}, code: 0, stdout: "Available Commands:"},
		{args: []string{"bogus"}, code: 2, stderr: "Error: unknown command \"bogus\" for \"glia\"\nRun 'glia --help' for usage."},
		{args: []string{"bpf", "bogus"}, code: 2, stderr: "Run 'glia bpf --help' for usage."},
		{args: []string{"status", "--bogus"}, code: 2, stderr: "unknown flag: --bogus"},
		{args: []string{"status", "-o", "xml"}, code: 2, stderr: "unknown output format \"xml\": use one of text, json, yaml, jsonpath=TEMPLATE"},
		{args: []string{"connectivity", "_ping"}, code: 2, stderr: "accepts 1 arg(s), received 0"},
		{args: []string{"status", "--socket", "/nonexistent/glia.sock"}, code: 1, stderr: "glia agent is unreachable"},
		// No agent socket here and no kubeconfig: nothing to ask.
		{args: []string{"status"}, code: 1, stderr: "no glia-agent socket at /var/run/glia/glia.sock and no cluster to ask"},
		{args: []string{"version", "--cluster"}, code: 1, stderr: "no kubeconfig"},
		{args: []string{"version"}, code: 0, stdout: "glia (client): " + testVersion + " commit 0123456789ab "},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			stdout, stderr, code := glia(t, tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d, want %d; stdout want %q:\n%s\nstderr want %q:\n%s", code, tt.code, tt.stdout, stdout, tt.stderr, stderr)
			}
		})
	}
}

func TestVersionStamped(t *testing.T) {
	stdout, stderr, code := glia(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var v struct {
		Kind   string `json:"kind"`
		Client struct {
			Version, Commit string
		} `json:"client"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("%v:\n%s", err, stdout)
	}
	if v.Kind != "Version" || v.Client.Version != testVersion || v.Client.Commit != testCommit {
		t.Errorf("got %+v, want kind Version, version %s, commit %s", v, testVersion, testCommit)
	}
}
