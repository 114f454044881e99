// Package ipam hands out pod addresses from the node's pod CIDR.
//
// The Allocator keeps owner→address pairs in memory and persists them
// atomically to a JSON state file on every change, so that an agent restart
// never hands out an address that a running pod still uses. Addresses are
// handed out cycling forward from the last one allocated: an address that was
// just released is the last to be reused, which keeps stale neighbour and
// conntrack entries of a deleted pod from hitting a new one.
package ipam

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"glia.dev/glia/internal/atomicfile"
)

// Errors returned by the Allocator; test with errors.Is.
var (
	// ErrExhausted means the pod CIDR has no free address left.
	ErrExhausted = errors.New("no free address left in the pod CIDR")
	// ErrInUse means AllocateSpecific asked for an address another owner holds.
	ErrInUse = errors.New("address is allocated to another owner")
	// ErrNotAllocatable means an address is outside the pod CIDR or reserved.
	ErrNotAllocatable = errors.New("address is not allocatable")
)

const stateVersion = 1

// RouterIP returns the first usable address of prefix, which the allocator
// never hands out: the node keeps it for its health endpoint and router use.
func RouterIP(prefix netip.Prefix) netip.Addr {
	return prefix.Masked().Addr().Next()
}

// Allocation is one address held by an owner.
type Allocation struct {
	Owner string
	Addr  netip.Addr
	Since time.Time // when the address was allocated
}

type entry struct {
	addr  netip.Addr
	since time.Time
}

// Allocator hands out addresses of one IPv4 pod CIDR. It is safe for
// concurrent use.
type Allocator struct {
	log       *slog.Logger
	stateFile string
	prefix    netip.Prefix
	base      uint32 // network address
	n         uint32 // addresses in the prefix, network and broadcast included
	reserved  map[netip.Addr]bool
	size      int

	mu      sync.Mutex
	byOwner map[string]entry
	byAddr  map[netip.Addr]string
	last    netip.Addr // last address handed out; the search resumes after it
	now     func() time.Time
}

type stateFileV1 struct {
	Version     int                   `json:"version"`
	PodCIDR     string                `json:"podCIDR"`
	Last        string                `json:"last,omitempty"`
	Allocations map[string]stateEntry `json:"allocations"`
}

type stateEntry struct {
	IP    netip.Addr `json:"ip"`
	Since time.Time  `json:"since"`
}

// New returns an allocator for podCIDR that persists to stateFile, restoring
// what the file holds. reserved addresses are never handed out (the network,
// broadcast and router addresses always are reserved).
//
// A state file that cannot be parsed is logged, moved aside as
// <stateFile>.corrupt-<timestamp>, and the allocator starts with the entries
// that could be read before the damage. A state file written for another pod
// CIDR is refused: the addresses of running pods would not belong to the new
// one.
func New(log *slog.Logger, stateFile string, podCIDR netip.Prefix, reserved ...netip.Addr) (*Allocator, error) {
	if !podCIDR.IsValid() || !podCIDR.Addr().Is4() {
		return nil, fmt.Errorf("pod CIDR %q: only IPv4 prefixes are supported", podCIDR)
	}
	if podCIDR.Bits() > 30 || podCIDR.Bits() < 8 {
		return nil, fmt.Errorf("pod CIDR %s: prefix length must be between /8 and /30", podCIDR)
	}
	if stateFile == "" {
		return nil, errors.New("ipam state file path is empty")
	}
	podCIDR = podCIDR.Masked()
	a := &Allocator{
		log:       log,
		stateFile: stateFile,
		prefix:    podCIDR,
		base:      addrToU32(podCIDR.Addr()),
		n:         uint32(1) << (32 - podCIDR.Bits()),
		reserved:  map[netip.Addr]bool{RouterIP(podCIDR): true},
		byOwner:   map[string]entry{},
		byAddr:    map[netip.Addr]string{},
		now:       time.Now,
	}
	for _, r := range reserved {
		if podCIDR.Contains(r) {
			a.reserved[r] = true
		}
	}
	a.size = int(a.n) - 2
	for r := range a.reserved {
		if a.usable(r) {
			a.size--
		}
	}
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o700); err != nil {
		return nil, fmt.Errorf("create ipam state directory: %w", err)
	}
	if err := a.restore(); err != nil {
		return nil, err
	}
	return a, nil
}

// usable says whether addr is in the prefix and neither its network nor its
// broadcast address.
func (a *Allocator) usable(addr netip.Addr) bool {
	if !addr.Is4() || !a.prefix.Contains(addr) {
		return false
	}
	off := addrToU32(addr) - a.base
	return off != 0 && off != a.n-1
}

func (a *Allocator) allocatable(addr netip.Addr) bool {
	return a.usable(addr) && !a.reserved[addr]
}

func (a *Allocator) restore() error {
	// Temporary files of a write interrupted by a crash hold nothing the
	// state file does not: the rename never happened.
	tmps, err := atomicfile.TempFilesOf(a.stateFile)
	if err != nil {
		return err
	}
	for _, tmp := range tmps {
		if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove leftover temporary ipam state %s: %w", tmp, err)
		}
		a.log.Warn("removed a temporary ipam state file left by an interrupted write", "file", tmp)
	}
	data, err := os.ReadFile(a.stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ipam state: %w", err)
	}
	var st stateFileV1
	perr := json.Unmarshal(data, &st)
	if perr == nil && st.Version != stateVersion {
		return fmt.Errorf("ipam state file %s has version %d, this agent understands %d: it was written by another agent version", a.stateFile, st.Version, stateVersion)
	}
	if perr != nil {
		st, _ = recoverState(data)
	}
	if st.PodCIDR != "" {
		saved, err := netip.ParsePrefix(st.PodCIDR)
		if err == nil && saved.Masked() != a.prefix {
			return fmt.Errorf("pod CIDR changed from %s (in %s) to %s: addresses of running pods would fall outside it; drain the node and remove %s to accept the new pod CIDR",
				saved, a.stateFile, a.prefix, a.stateFile)
		}
		if err != nil && perr == nil {
			perr = fmt.Errorf("bad podCIDR %q: %w", st.PodCIDR, err)
		}
	}
	dropped := 0
	owners := make([]string, 0, len(st.Allocations))
	for o := range st.Allocations {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	for _, owner := range owners {
		e := st.Allocations[owner]
		if owner == "" || !a.allocatable(e.IP) {
			dropped++
			a.log.Warn("dropping ipam entry with an address that is not allocatable", "owner", owner, "ip", e.IP, "podCIDR", a.prefix)
			continue
		}
		if other, ok := a.byAddr[e.IP]; ok {
			dropped++
			a.log.Warn("dropping ipam entry whose address is held by another owner", "owner", owner, "ip", e.IP, "holder", other)
			continue
		}
		a.byOwner[owner] = entry{addr: e.IP, since: e.Since}
		a.byAddr[e.IP] = owner
	}
	if last, err := netip.ParseAddr(st.Last); err == nil && a.prefix.Contains(last) {
		a.last = last
	}
	if perr != nil {
		aside := fmt.Sprintf("%s.corrupt-%s", a.stateFile, a.now().UTC().Format("20060102T150405.000000000Z"))
		if err := os.Rename(a.stateFile, aside); err != nil {
			return fmt.Errorf("move corrupt ipam state %s aside: %w", a.stateFile, err)
		}
		a.log.Error("ipam state file is corrupt; moved it aside and kept the entries that could be read",
			"file", a.stateFile, "movedTo", aside, "recovered", len(a.byOwner), "error", perr)
		if err := a.persistLocked(); err != nil {
			return err
		}
	} else if dropped > 0 {
		if err := a.persistLocked(); err != nil {
			return err
		}
	}
	a.log.Info("ipam restored", "podCIDR", a.prefix, "allocated", len(a.byOwner), "free", a.size-len(a.byOwner))
	return nil
}

// recoverState reads as much of a damaged state file as it can: the header
// fields and every allocation entry that precedes the damage.
func recoverState(data []byte) (stateFileV1, error) {
	st := stateFileV1{Allocations: map[string]stateEntry{}}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return st, fmt.Errorf("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return st, err
		}
		key, _ := tok.(string)
		switch key {
		case "version":
			err = dec.Decode(&st.Version)
		case "podCIDR":
			err = dec.Decode(&st.PodCIDR)
		case "last":
			err = dec.Decode(&st.Last)
		case "allocations":
			if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
				return st, fmt.Errorf("allocations is not an object")
			}
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return st, err
				}
				owner, _ := tok.(string)
				var e stateEntry
				if err := dec.Decode(&e); err != nil {
					return st, err
				}
				st.Allocations[owner] = e
			}
			_, err = dec.Token()
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

func (a *Allocator) persistLocked() error {
	st := stateFileV1{
		Version:     stateVersion,
		PodCIDR:     a.prefix.String(),
		Allocations: make(map[string]stateEntry, len(a.byOwner)),
	}
	if a.last.IsValid() {
		st.Last = a.last.String()
	}
	for o, e := range a.byOwner {
		st.Allocations[o] = stateEntry{IP: e.addr, Since: e.since}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode ipam state: %w", err)
	}
	if err := atomicfile.WriteFile(a.stateFile, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("persist ipam state: %w", err)
	}
	return nil
}

// Allocate returns the address held by owner, allocating the next free one
// after the last handed out when owner holds none. It returns an error
// wrapping ErrExhausted when the pod CIDR is full.
func (a *Allocator) Allocate(owner string) (netip.Addr, error) {
	if owner == "" {
		return netip.Addr{}, errors.New("allocate: empty owner")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.byOwner[owner]; ok {
		return e.addr, nil
	}
	start := uint32(1)
	if a.last.IsValid() {
		start = addrToU32(a.last) - a.base
	}
	for i := uint32(1); i <= a.n; i++ {
		off := (start + i) % a.n
		addr := u32ToAddr(a.base + off)
		if !a.allocatable(addr) {
			continue
		}
		if _, used := a.byAddr[addr]; used {
			continue
		}
		prevLast := a.last
		a.take(owner, addr)
		a.last = addr
		if err := a.persistLocked(); err != nil {
			a.drop(owner)
			a.last = prevLast
			return netip.Addr{}, err
		}
		return addr, nil
	}
	return netip.Addr{}, fmt.Errorf("pod CIDR %s (%d addresses): %w", a.prefix, a.size, ErrExhausted)
}

// AllocateSpecific records that owner holds addr, as when restoring a running
// pod. It is a no-op when owner already holds addr; it fails when owner
// holds another address, when another owner holds addr (ErrInUse) or when
// addr cannot be allocated (ErrNotAllocatable).
func (a *Allocator) AllocateSpecific(owner string, addr netip.Addr) error {
	if owner == "" {
		return errors.New("allocate: empty owner")
	}
	if !a.allocatable(addr) {
		return fmt.Errorf("%s in pod CIDR %s: %w", addr, a.prefix, ErrNotAllocatable)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.byOwner[owner]; ok {
		if e.addr == addr {
			return nil
		}
		return fmt.Errorf("owner %s already holds %s, not %s", owner, e.addr, addr)
	}
	if other, ok := a.byAddr[addr]; ok {
		return fmt.Errorf("%s is held by %s: %w", addr, other, ErrInUse)
	}
	a.take(owner, addr)
	if err := a.persistLocked(); err != nil {
		a.drop(owner)
		return err
	}
	return nil
}

// Release frees owner's address. Releasing an owner without an address is
// not an error.
func (a *Allocator) Release(owner string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.byOwner[owner]
	if !ok {
		return nil
	}
	a.drop(owner)
	if err := a.persistLocked(); err != nil {
		a.byOwner[owner] = e
		a.byAddr[e.addr] = owner
		return err
	}
	return nil
}

func (a *Allocator) take(owner string, addr netip.Addr) {
	a.byOwner[owner] = entry{addr: addr, since: a.now().UTC()}
	a.byAddr[addr] = owner
}

func (a *Allocator) drop(owner string) {
	e := a.byOwner[owner]
	delete(a.byOwner, owner)
	delete(a.byAddr, e.addr)
}

// Lookup returns owner's address.
func (a *Allocator) Lookup(owner string) (netip.Addr, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.byOwner[owner]
	return e.addr, ok
}

// Owner returns who holds addr.
func (a *Allocator) Owner(addr netip.Addr) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.byAddr[addr]
	return o, ok
}

// List returns every owner and its address.
func (a *Allocator) List() map[string]netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]netip.Addr, len(a.byOwner))
	for o, e := range a.byOwner {
		out[o] = e.addr
	}
	return out
}

// Allocations returns every allocation, sorted by owner.
func (a *Allocator) Allocations() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Allocation, 0, len(a.byOwner))
	for o, e := range a.byOwner {
		out = append(out, Allocation{Owner: o, Addr: e.addr, Since: e.since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Owner < out[j].Owner })
	return out
}

// Free returns how many addresses can still be allocated.
func (a *Allocator) Free() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.size - len(a.byOwner)
}

// Size returns how many addresses the pod CIDR offers in total, reserved
// ones excluded.
func (a *Allocator) Size() int { return a.size }

// PodCIDR returns the prefix addresses are allocated from.
func (a *Allocator) PodCIDR() netip.Prefix { return a.prefix }

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func u32ToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
