package maps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// RawEntry is one entry of a map as bytes, whatever its layout. The value
// of a per-CPU map holds every possible CPU's value, one after the other.
type RawEntry struct {
	Key, Value []byte
}

// perCPU says whether m's values are per CPU.
func perCPU(t ebpf.MapType) bool {
	switch t {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		return true
	}
	return false
}

// ReadRaw returns every entry of m.
func ReadRaw(m *ebpf.Map) ([]RawEntry, error) {
	var out []RawEntry
	it := m.Iterate()
	if perCPU(m.Type()) {
		var (
			k    []byte
			vals [][]byte
		)
		for it.Next(&k, &vals) {
			out = append(out, RawEntry{Key: bytes.Clone(k), Value: bytes.Join(vals, nil)})
		}
	} else {
		var k, v []byte
		for it.Next(&k, &v) {
			out = append(out, RawEntry{Key: bytes.Clone(k), Value: bytes.Clone(v)})
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", mapName(m), err)
	}
	return out, nil
}

// splitPerCPU cuts a per-CPU value of ReadRaw into its CPUs' values.
func splitPerCPU(v []byte, size uint32) ([][]byte, error) {
	if size == 0 || len(v)%int(size) != 0 {
		return nil, fmt.Errorf("per-CPU value of %d bytes is not a multiple of %d", len(v), size)
	}
	var out [][]byte
	for len(v) > 0 {
		out = append(out, v[:size])
		v = v[size:]
	}
	return out, nil
}

// LookupRaw returns the value of key in m.
func LookupRaw(m *ebpf.Map, key []byte) ([]byte, bool, error) {
	var err error
	var v []byte
	if perCPU(m.Type()) {
		var vals [][]byte
		err = m.Lookup(key, &vals)
		v = bytes.Join(vals, nil)
	} else {
		err = m.Lookup(key, &v)
	}
	switch {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("lookup in %s: %w", mapName(m), err)
	}
	return v, true, nil
}

// ErrMapFull reports an entry that did not fit.
var ErrMapFull = errors.New("map full")

// WriteRaw puts one entry into m.
func WriteRaw(m *ebpf.Map, e RawEntry, flags ebpf.MapUpdateFlags) error {
	if uint32(len(e.Key)) != m.KeySize() {
		return fmt.Errorf("write %s: key of %d bytes, the map's are %d", mapName(m), len(e.Key), m.KeySize())
	}
	var err error
	if perCPU(m.Type()) {
		vals, serr := splitPerCPU(e.Value, m.ValueSize())
		if serr != nil {
			return fmt.Errorf("write %s: %w", mapName(m), serr)
		}
		n, cerr := ebpf.PossibleCPU()
		if cerr != nil {
			return cerr
		}
		if len(vals) != n {
			return fmt.Errorf("write %s: per-CPU value for %d CPUs, this machine has %d", mapName(m), len(vals), n)
		}
		err = m.Update(e.Key, vals, flags)
	} else {
		if uint32(len(e.Value)) != m.ValueSize() {
			return fmt.Errorf("write %s: value of %d bytes, the map's are %d", mapName(m), len(e.Value), m.ValueSize())
		}
		err = m.Update(e.Key, e.Value, flags)
	}
	if err != nil {
		if errors.Is(err, ebpf.ErrKeyExist) {
			return err
		}
		if isFull(err) {
			return fmt.Errorf("write %s: %w: %w", mapName(m), ErrMapFull, err)
		}
		return fmt.Errorf("write %s: %w", mapName(m), err)
	}
	return nil
}

// Count returns the number of entries in m (for arrays: max_entries).
func Count(m *ebpf.Map) (int, error) {
	n := 0
	var cur any // nil: the first key
	for {
		k, err := m.NextKeyBytes(cur)
		if err != nil {
			return n, fmt.Errorf("count %s: %w", mapName(m), err)
		}
		if k == nil {
			return n, nil
		}
		n++
		cur = k
	}
}

func isFull(err error) bool { return errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) }

// LastSeen reads the u64 last-seen time at off of a value (native byte
// order, as the programs write it); 0 when off is negative.
func LastSeen(v []byte, off int) uint64 {
	if off < 0 || off+8 > len(v) {
		return 0
	}
	return binary.NativeEndian.Uint64(v[off:])
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil && info.Name != "" {
		return info.Name
	}
	return "map"
}
