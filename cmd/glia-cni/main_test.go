package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestByHand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "glia-cni")
	build := exec.Command("go", "build", "-ldflags", "-X glia.dev/glia/internal/version.version=9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"--help"}, 0, "CNI_COMMAND", ""},
		{[]string{"-h"}, 0, "glia-cni: the glia CNI plugin", ""},
		{[]string{"--version"}, 0, "glia-cni 9.9.9-test (commit unknown", ""},
		{[]string{"--bogus"}, 2, "", `unknown argument "--bogus"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no CNI_COMMAND: a person runs it
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(o.String(), tt.stdout) || !strings.Contains(e.String(), tt.stderr) {
				t.Errorf("exit %d (want %d), stdout %q (want %q), stderr %q (want %q)", code, tt.code, o.String(), tt.stdout, e.String(), tt.stderr)
			}
		})
	}
}
