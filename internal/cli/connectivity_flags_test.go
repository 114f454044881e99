package cli

import (
	"strings"
	"testing"
)

// Bad conn-disrupt flag combinations fail before anything reaches a
// cluster, naming the flag and the fix.
func TestConnectivityConnDisruptFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"external target without the conn-disrupt test", []string{"--conn-disrupt-external-target", "world=198.18.64.10:8000"},
			"--conn-disrupt-external-target goes with --include-conn-disrupt-test"},
		{"external target with the check", []string{"--include-conn-disrupt-test", "--conn-disrupt-check", "--conn-disrupt-external-target", "world=198.18.64.10:8000"},
			"the setup records the targets"},
		{"external target without a name", []string{"--include-conn-disrupt-test", "--conn-disrupt-setup", "--conn-disrupt-external-target", "198.18.64.10:8000"},
			"use NAME=IP:PORT"},
		{"external target without a port", []string{"--include-conn-disrupt-test", "--conn-disrupt-setup", "--conn-disrupt-external-target", "world=198.18.64.10"},
			"--conn-disrupt-external-target"},
		{"setup without the test", []string{"--conn-disrupt-setup"}, "go with --include-conn-disrupt-test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newConnectivityTestCmd()
			cmd.SetArgs(tc.args)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if code := ExitCode(err); code != 2 {
				t.Errorf("exit code %d, want 2 (a usage error)", code)
			}
		})
	}
}
