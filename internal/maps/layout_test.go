package maps

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

func TestLayoutsValid(t *testing.T) {
	if err := Layouts().Validate(); err != nil {
		t.Fatal(err)
	}
}

// history is a three-version map: 1 → 2 converts, 2 → 3 cannot.
func history() Registry {
	up := func(k, v []byte) ([]byte, []byte, bool) { return k, append(v, 0, 0, 0, 0), true }
	return Registry{"m": {
		{Version: 1, Type: ebpf.Hash, KeySize: 4, ValueSize: 4, Compat: 1, LastSeen: -1},
		{Version: 2, Type: ebpf.Hash, KeySize: 4, ValueSize: 8, Compat: 2, LastSeen: -1, Up: up},
		{Version: 3, Type: ebpf.Hash, KeySize: 4, ValueSize: 8, Compat: 3, LastSeen: -1},
	}}
}

func TestRegistryChain(t *testing.T) {
	reg := history()
	reg["m"][2].Up = Identity
	for _, tc := range []struct {
		from    uint32
		steps   int
		wantErr string
	}{
		{from: 3, steps: 0},
		{from: 2, steps: 1},
		{from: 1, steps: 2},
		{from: 4, wantErr: "layout version 4 of m is unknown"},
	} {
		got, err := reg.Chain("m", tc.from)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Chain(m, %d) = %v, want error %q", tc.from, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("Chain(m, %d): %v", tc.from, err)
		case len(got) != tc.steps:
			t.Errorf("Chain(m, %d) has %d steps, want %d", tc.from, len(got), tc.steps)
		}
	}
	// A step without a converter breaks every chain through it.
	if _, err := history().Chain("m", 1); err == nil || !strings.Contains(err.Error(), "version 3 of m cannot be converted from version 2") {
		t.Errorf("Chain through a step without a converter: %v", err)
	}
}

func TestRegistryInfer(t *testing.T) {
	reg := history()
	for _, tc := range []struct {
		value   uint32
		want    uint32
		matched bool
	}{
		{value: 4, want: 1, matched: true},
		{value: 8, want: 3, matched: true}, // the newest of two with the same definition
		{value: 12},
	} {
		l, ok := reg.Infer("m", ebpf.Hash, 4, tc.value, 0)
		if ok != tc.matched || l.Version != tc.want {
			t.Errorf("Infer value %d B = version %d (%t), want %d (%t)", tc.value, l.Version, ok, tc.want, tc.matched)
		}
	}
}

func TestRegistryValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(Registry)
		want string
	}{
		{"gap", func(r Registry) { r["m"][1].Version = 5 }, "layout 1 has version 5, want 2"},
		{"compat above version", func(r Registry) { r["m"][0].Compat = 2 }, "compat 2 outside 1..1"},
		{"last seen outside", func(r Registry) { r["m"][0].LastSeen = 0 }, "last-seen offset 0 outside its 4-byte value"},
		{"compatible without converter", func(r Registry) { r["m"][2].Compat = 2 }, "layout 3 is compatible with 2 but has no converter"},
	} {
		r := history()
		tc.edit(r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := history().Validate(); err != nil {
		t.Errorf("a valid history: %v", err)
	}
}

func TestLayoutFlows(t *testing.T) {
	ct, _ := Layouts().Current(NameCT)
	svc, _ := Layouts().Current(NameServices)
	for _, tc := range []struct {
		l       Layout
		entries int
		want    int
	}{{ct, 5, 3}, {ct, 4, 2}, {ct, 0, 0}, {svc, 5, 5}} {
		if got := tc.l.Flows(tc.entries); got != tc.want {
			t.Errorf("%d entries of a map with %d entries a flow: %d flows, want %d", tc.entries, tc.l.EntriesPerFlow, got, tc.want)
		}
	}
}
