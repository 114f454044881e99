package bpf

import (
	"fmt"
	"sort"
	"testing"

	"glia.dev/glia/internal/maps"
)

func backendNames(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("198.19.%d.%d:8080", i/200, i%200+10))
	}
	return out
}

func TestMaglevSpread(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 10, 50} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			table := maglevTable(backendNames(n), maps.MaglevM)
			counts := make([]int, n)
			for _, b := range table {
				if b < 0 || b >= n {
					t.Fatalf("slot holds %d, want a backend index below %d", b, n)
				}
				counts[b]++
			}
			ideal := float64(maps.MaglevM) / float64(n)
			for i, c := range counts {
				// Maglev guarantees each backend within one slot of
				// the others' share when every backend fills in turn.
				if dev := (float64(c) - ideal) / ideal; dev > 0.03 || dev < -0.03 {
					if c < int(ideal)-1 || c > int(ideal)+1 {
						t.Errorf("backend %d has %d slots, ideal %.1f (%.1f%% off)", i, c, ideal, dev*100)
					}
				}
			}
		})
	}
}

func TestMaglevMinimalDisruption(t *testing.T) {
	names := backendNames(10)
	before := maglevTable(names, maps.MaglevM)
	removed := names[3]
	after := maglevTable(append(append([]string{}, names[:3]...), names[4:]...), maps.MaglevM)
	moved := 0
	for i := range before {
		was := names[before[i]]
		rest := append(append([]string{}, names[:3]...), names[4:]...)
		now := rest[after[i]]
		if was != removed && was != now {
			moved++
		}
	}
	// Slots of the remaining backends that changed owner: the paper
	// reports a few percent; demand under 10% of all slots.
	if frac := float64(moved) / float64(maps.MaglevM); frac > 0.10 {
		t.Errorf("%d of %d slots of remaining backends moved (%.1f%%)", moved, maps.MaglevM, frac*100)
	}
	t.Logf("removing 1 of 10 backends moved %d of the others' slots", moved)

	// Order of input does not matter.
	shuffled := append([]string{}, names...)
	sort.Sort(sort.Reverse(sort.StringSlice(shuffled)))
	a, b := maglevTable(names, maps.MaglevM), maglevTable(shuffled, maps.MaglevM)
	for i := range a {
		if names[a[i]] != shuffled[b[i]] {
			t.Fatalf("slot %d: %s with one input order, %s with another", i, names[a[i]], shuffled[b[i]])
		}
	}
}
