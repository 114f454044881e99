package linux

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"glia.dev/glia/internal/atomicfile"
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

// SysctlRecordFile is the file, in a datapath state directory, keeping
// the value each sysctl had before glia changed it, so that glia can give
// the operator's value back (not the kernel's default).
const SysctlRecordFile = "sysctl-original.json"

// sysctlRecord is one sysctl's entry of SysctlRecordFile.
type sysctlRecord struct {
	// Original is the value found before glia's change.
	Original string `json:"original"`
	// Set is the value glia set.
	Set string `json:"set"`
}

var sysctlRecordMu sync.Mutex

func normalize(v string) string { return strings.Join(strings.Fields(v), " ") }

func readSysctlRecords(dir string) (map[string]sysctlRecord, error) {
	recs := map[string]sysctlRecord{}
	b, err := os.ReadFile(filepath.Join(dir, SysctlRecordFile))
	if errors.Is(err, os.ErrNotExist) {
		return recs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the sysctl record: %w", err)
	}
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("sysctl record %s: %w (remove it to let glia record the current values anew)",
			filepath.Join(dir, SysctlRecordFile), err)
	}
	return recs, nil
}

func writeSysctlRecords(dir string, recs map[string]sysctlRecord) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sysctl record: %w", err)
	}
	path := filepath.Join(dir, SysctlRecordFile)
	if len(recs) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the sysctl record: %w", err)
		}
		return nil
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write the sysctl record: %w", err)
	}
	return nil
}

// SetSysctlRecorded sets a sysctl of the calling thread's network
// namespace to value, as EnsureSysctl does, and says whether it had to.
// Before it changes the value it records, atomically in dir, the value it
// found: the first time glia changes the sysctl, and again whenever
// someone else changed it since glia last set it (that value is then the
// operator's). dir "" records nothing (tests without a state directory).
func SetSysctlRecorded(dir, name, value string) (bool, error) {
	if dir == "" {
		return EnsureSysctl(name, value)
	}
	path := SysctlPath(name)
	have, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("sysctl %s: %w", name, err)
	}
	cur, want := normalize(string(have)), normalize(value)
	if cur == want {
		return false, nil
	}
	sysctlRecordMu.Lock()
	defer sysctlRecordMu.Unlock()
	recs, err := readSysctlRecords(dir)
	if err != nil {
		return false, err
	}
	rec, ok := recs[name]
	if !ok || rec.Set != cur {
		rec.Original = cur
	}
	rec.Set = want
	recs[name] = rec
	if err := writeSysctlRecords(dir, recs); err != nil {
		return false, err
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return true, fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return true, nil
}

// RestoreSysctl gives a sysctl of the calling thread's network namespace
// back the value recorded before glia changed it, when it still has the
// value glia set (a change someone made since stays), and forgets the
// record. It returns the value written ("" when it wrote none) and
// whether there was a record (never with dir "").
func RestoreSysctl(dir, name string) (restored string, recorded bool, err error) {
	if dir == "" {
		return "", false, nil
	}
	sysctlRecordMu.Lock()
	defer sysctlRecordMu.Unlock()
	recs, err := readSysctlRecords(dir)
	if err != nil {
		return "", false, err
	}
	rec, ok := recs[name]
	if !ok {
		return "", false, nil
	}
	path := SysctlPath(name)
	have, err := os.ReadFile(path)
	if err != nil {
		return "", true, fmt.Errorf("sysctl %s: %w", name, err)
	}
	if normalize(string(have)) == rec.Set && rec.Original != rec.Set {
		if err := os.WriteFile(path, []byte(rec.Original), 0o644); err != nil {
			return "", true, fmt.Errorf("sysctl %s=%s: %w", name, rec.Original, err)
		}
		restored = rec.Original
	}
	delete(recs, name)
	return restored, true, writeSysctlRecords(dir, recs)
}
