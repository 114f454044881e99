package bpf

import (
	"hash/fnv"
	"sort"
)

// maglevTable fills a lookup table of m slots (m prime) with indexes into
// backends, following Maglev (Eisenbud et al., NSDI 2016): each backend
// walks its own permutation of the slots, taking turns, so every backend
// gets m/len(backends) slots give or take one, and removing a backend moves
// few slots of the others. names identify backends (their address), so the
// table depends on the set, not on the order of the input.
func maglevTable(names []string, m int) []int {
	n := len(names)
	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	if n == 0 {
		return table
	}
	offset := make([]int, n)
	skip := make([]int, n)
	for i, name := range names {
		offset[i] = int(hash64(name, 0xa5) % uint64(m))
		skip[i] = int(hash64(name, 0x5a)%uint64(m-1)) + 1
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return names[order[a]] < names[order[b]] })
	next := make([]int, n)
	filled := 0
	for {
		for _, i := range order {
			c := (offset[i] + next[i]*skip[i]) % m
			for table[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			table[c] = i
			next[i]++
			filled++
			if filled == m {
				return table
			}
		}
	}
}

func hash64(s string, seed byte) uint64 {
	h := fnv.New64a()
	h.Write([]byte{seed})
	h.Write([]byte(s))
	return h.Sum64()
}
