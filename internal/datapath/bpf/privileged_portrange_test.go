package bpf

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"glia.dev/glia/internal/datapath/linux"
)

// The node's ephemeral port range ends where the operator left it: BPF
// masquerade lowers its top below the NAT ports and records, before it
// changes anything, the range it found; leaving the node (Cleanup) gives
// that range back — not the kernel's default — unless someone changed
// the range since glia did.
func TestPrivilegedPortRangeRestored(t *testing.T) {
	requirePrivileged(t)
	// Everything below runs in a namespace's thread: errors, not t.Fatal.
	set := func(v string) error { return os.WriteFile(portRangeSysctl, []byte(v), 0o644) }
	get := func() (string, error) {
		low, high, err := PortRange()
		return fmt.Sprintf("%d %d", low, high), err
	}
	recorded := func(dir string) map[string]map[string]string {
		b, err := os.ReadFile(filepath.Join(dir, linux.SysctlRecordFile))
		if err != nil {
			return nil
		}
		var m map[string]map[string]string
		if json.Unmarshal(b, &m) != nil {
			return map[string]map[string]string{"unreadable": {}}
		}
		return m
	}
	expect := func(what, want string) error {
		got, err := get()
		if err == nil && got != want {
			err = fmt.Errorf("%s: ip_local_port_range %s, want %s", what, got, want)
		}
		return err
	}
	for _, tc := range []struct {
		name string
		// steps run in a fresh network namespace with a fresh state dir;
		// want is the range at the end.
		steps func(dir string) error
		want  string
	}{
		{"the operator's range comes back", func(dir string) error {
			return errors.Join(set("32768 55000"), reservePortRange(testLogger(), dir),
				expect("while glia masquerades", "32768 48999"),
				func() error {
					if r := recorded(dir)[portRangeName]; r["original"] != "32768 55000" || r["set"] != "32768 48999" {
						return fmt.Errorf("record %v, want the operator's 32768 55000 and glia's 32768 48999", r)
					}
					return nil
				}(),
				// a restart reserves again: the record keeps the operator's range
				reservePortRange(testLogger(), dir),
				func() error {
					if r := recorded(dir)[portRangeName]; r["original"] != "32768 55000" {
						return fmt.Errorf("record after a second reserve %v, want the operator's range kept", r)
					}
					return nil
				}(),
				Cleanup(testLogger(), "", dir, ""))
		}, "32768 55000"},
		{"a range changed since glia set it stays", func(dir string) error {
			return errors.Join(set("32768 55000"), reservePortRange(testLogger(), dir), set("20000 40000"),
				Cleanup(testLogger(), "", dir, ""))
		}, "20000 40000"},
		{"a change while glia holds it is the new original", func(dir string) error {
			return errors.Join(set("32768 55000"), reservePortRange(testLogger(), dir),
				set("30000 59000"), // the operator, while glia runs
				reservePortRange(testLogger(), dir), expect("after the restart", "30000 48999"),
				Cleanup(testLogger(), "", dir, ""))
		}, "30000 59000"},
		{"without a record, the kernel's default top", func(dir string) error {
			// as glia up to 61f425b left it
			return errors.Join(set("32768 48999"), Cleanup(testLogger(), "", dir, ""))
		}, "32768 60999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			must(t, newNS(t).Do(func(ns.NetNS) error {
				return errors.Join(tc.steps(dir), expect("at the end", tc.want))
			}))
			if r := recorded(dir); r != nil {
				t.Errorf("record left after cleanup: %v", r)
			}
		})
	}
}
