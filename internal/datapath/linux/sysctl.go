package linux

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SysctlPath is the file of a dotted sysctl name under /proc/sys.
func SysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// EnsureSysctl sets a sysctl of the calling thread's network namespace to
// value unless it already has it, and says whether it had to.
func EnsureSysctl(name, value string) (bool, error) {
	path := SysctlPath(name)
	have, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("sysctl %s: %w", name, err)
	}
	if string(bytes.Join(bytes.Fields(have), []byte(" "))) == strings.Join(strings.Fields(value), " ") {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return true, fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return true, nil
}
