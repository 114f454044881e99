package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/maps"
)

// Pinned maps across versions and sizes (see internal/maps/layout.go for
// the layout versions).
//
// At start the loader looks at every pinned map before it changes
// anything: a map of the current layout and size is used as it is; one of
// an older layout, or of another size than the config asks for, is
// migrated — a new map is made and every entry is converted into it; one
// whose layout cannot be migrated is replaced by an empty map and the
// entries lost are reported (log, metric, `glia status`), never silently;
// one of a newer layout that this glia may not use stops the agent with
// the reason (a downgrade it cannot follow), before anything changed.
//
// A new map waits under <name>_swap until the new programs have loaded,
// then takes the name in one rename(2) exchange: the old map is now
// pinned under <name>_swap, where it stays until the new programs are
// attached. Entries the old programs wrote after the copy (new flows,
// refreshed ones) are then merged in, the newer entry winning, and the
// old map goes. An agent killed at any point leaves a state the next
// start completes: a <name>_swap next to a map that still needs migrating
// is an unfinished copy, dropped and made again; next to a map that does
// not, it is the previous map, merged after the attach.

// swapSuffix names the second pin of a map being migrated.
const swapSuffix = "_swap"

// mapStep is the work on one pinned map that outlives the load.
type mapStep struct {
	name   string
	layout maps.Layout // current
	// fresh is the new map, pinned under <name>_swap until exchange.
	fresh *ebpf.Map
	// old is the map fresh replaces (or, with merge only, the previous map
	// an interrupted start left under <name>_swap).
	old       *ebpf.Map
	oldLayout maps.Layout
	chain     []maps.Converter // old layout → current; nil when it has none
	// copied is when the first copy began (CLOCK_MONOTONIC ns, the
	// programs' clock): an entry the new map lacks is merged only when
	// the old programs saw it since (older ones did not fit).
	copied    uint64
	exchanged bool
	report    maps.Migration
}

// pinnedMaps are glia's maps opened (and migrated) for one load.
type pinnedMaps struct {
	log     *slog.Logger
	pinDir  string
	reg     maps.Registry
	records *maps.LayoutRecords
	recMap  *ebpf.Map
	maps    map[string]*ebpf.Map
	steps   []*mapStep
	reports []maps.Migration
}

// planned is what the loader found for one map, before it changes anything.
type planned struct {
	name      string
	spec      *ebpf.MapSpec
	want      maps.Layout
	cur, prev *ebpf.Map
	curLayout maps.Layout
	newer     bool // cur has a newer layout this glia may use as it is
	action    string
	reason    string
	chain     []maps.Converter
}

const (
	actKeep    = "kept"
	actCreate  = "created"
	actMigrate = "migrated"
	actReset   = "reset"
)

func pinPath(dir, name string) string { return filepath.Join(dir, name) }

func loadPin(path string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w", path, err)
	}
	return m, nil
}

func mapID(m *ebpf.Map) (ebpf.MapID, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("the kernel does not report map ids")
	}
	return id, nil
}

// openLayoutRecords opens (or makes) the pinned layout records.
func openLayoutRecords(log *slog.Logger, pinDir string) (*ebpf.Map, error) {
	spec := maps.LayoutRecordsSpec()
	path := pinPath(pinDir, maps.NameLayout)
	m, err := loadPin(path)
	if err != nil {
		return nil, err
	}
	if m != nil {
		if spec.Compatible(m) == nil {
			return m, nil
		}
		log.Warn("The pinned layout records have another definition: replacing them; the layout of every pinned map is inferred from its definition",
			"map", maps.NameLayout)
		m.Close()
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("replace %s: %w", path, err)
		}
	}
	if m, err = ebpf.NewMap(spec); err != nil {
		return nil, fmt.Errorf("create map %s: %w", maps.NameLayout, err)
	}
	if err := m.Pin(path); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin map %s: %w", maps.NameLayout, err)
	}
	return m, nil
}

// layoutOf says which layout m has: its record's, or for a map pinned
// without one, the newest whose definition it matches. newer: a layout
// above the current one that this glia may use as it is. An error
// explains a layout that cannot be used (refusal) or migrated (reset).
func (p *pinnedMaps) layoutOf(name string, m *ebpf.Map, want maps.Layout) (l maps.Layout, newer bool, refuse, reset error) {
	def := fmt.Sprintf("%s key %d B value %d B flags %#x", m.Type(), m.KeySize(), m.ValueSize(), m.Flags())
	id, err := mapID(m)
	if err != nil {
		return l, false, nil, fmt.Errorf("its id cannot be read (%v)", err)
	}
	rec, found, err := p.records.Get(id)
	if err != nil {
		return l, false, nil, fmt.Errorf("its layout record cannot be read (%v)", err)
	}
	if !found {
		if l, ok := p.reg.Infer(name, m.Type(), m.KeySize(), m.ValueSize(), m.Flags()); ok {
			return l, false, nil, nil
		}
		return l, false, nil, fmt.Errorf("it has no layout record and its definition (%s) matches no layout of %s this glia knows", def, name)
	}
	if rec.Version > want.Version {
		if rec.Compat <= want.Version && want.Matches(m.Type(), m.KeySize(), m.ValueSize(), m.Flags()) {
			return want, true, nil, nil
		}
		return l, false, fmt.Errorf("pinned map %s has layout version %d, newer than this glia's %d, which cannot use it "+
			"(the oldest version that can is %d): a newer glia made it. Refusing to start so that its entries are kept: the programs and "+
			"maps in place keep carrying traffic. Run a glia whose %s layout is %d or newer, or remove %s to start over with empty maps "+
			"(established connections through Services and masquerade then break)",
			name, rec.Version, want.Version, rec.Compat, name, rec.Compat, p.pinDir), nil
	}
	l, ok := p.reg.Find(name, rec.Version)
	if !ok {
		return l, false, nil, fmt.Errorf("its layout version %d is unknown to this glia", rec.Version)
	}
	if !l.Matches(m.Type(), m.KeySize(), m.ValueSize(), m.Flags()) {
		return l, false, nil, fmt.Errorf("its record says layout version %d (%s) but it is %s", rec.Version, l.Definition(), def)
	}
	return l, false, nil, nil
}

// plan looks at the pinned map name (and a <name>_swap beside it) and
// decides, changing nothing. A refusal is returned as an error.
func (p *pinnedMaps) plan(name string, ms *ebpf.MapSpec) (*planned, error) {
	want, ok := p.reg.Current(name)
	if !ok {
		return nil, fmt.Errorf("map %s has no layout in internal/maps (add it to maps.Layouts)", name)
	}
	if !want.Matches(ms.Type, ms.KeySize, ms.ValueSize, ms.Flags) {
		return nil, fmt.Errorf("map %s is compiled as %s key %d B value %d B flags %#x, but its current layout %d is %s: add a layout version in internal/maps",
			name, ms.Type, ms.KeySize, ms.ValueSize, ms.Flags, want.Version, want.Definition())
	}
	pl := &planned{name: name, spec: ms, want: want}
	var err error
	if pl.cur, err = loadPin(pinPath(p.pinDir, name)); err != nil {
		return pl, err
	}
	if pl.prev, err = loadPin(pinPath(p.pinDir, name+swapSuffix)); err != nil {
		return pl, err
	}
	if pl.cur == nil {
		pl.action = actCreate
		return pl, nil
	}
	l, newer, refuse, reset := p.layoutOf(name, pl.cur, want)
	switch {
	case refuse != nil:
		return pl, refuse
	case reset != nil:
		pl.action, pl.reason = actReset, reset.Error()
		return pl, nil
	}
	pl.curLayout, pl.newer = l, newer
	if l.Version == want.Version || newer {
		if pl.cur.MaxEntries() == ms.MaxEntries {
			pl.action = actKeep
			return pl, nil
		}
		pl.action, pl.chain = actMigrate, nil
		pl.reason = fmt.Sprintf("it has %d entries and the config asks for %d", pl.cur.MaxEntries(), ms.MaxEntries)
		return pl, nil
	}
	chain, err := p.reg.Chain(name, l.Version)
	if err != nil {
		pl.action, pl.reason = actReset, err.Error()
		return pl, nil
	}
	pl.action, pl.chain = actMigrate, chain
	pl.reason = fmt.Sprintf("layout version %d → %d", l.Version, want.Version)
	if pl.cur.MaxEntries() != ms.MaxEntries {
		pl.reason += fmt.Sprintf(", %d → %d entries", pl.cur.MaxEntries(), ms.MaxEntries)
	}
	return pl, nil
}

func (pl *planned) close() {
	for _, m := range []*ebpf.Map{pl.cur, pl.prev} {
		if m != nil {
			m.Close()
		}
	}
}

// openPinned creates glia's maps, or re-uses and migrates those pinned in
// pinDir by an earlier run, as described above. Nothing is changed when
// one of them refuses. A map's size is the one compiled in unless
// maxEntries overrides it.
func openPinned(log *slog.Logger, spec *ebpf.CollectionSpec, pinDir string, maxEntries map[string]uint32, reg maps.Registry) (_ *pinnedMaps, err error) {
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	p := &pinnedMaps{log: log, pinDir: pinDir, reg: reg, maps: map[string]*ebpf.Map{}}
	if p.recMap, err = openLayoutRecords(log, pinDir); err != nil {
		return nil, err
	}
	p.records = maps.NewLayoutRecords(p.recMap)
	defer func() {
		if err != nil {
			p.abort()
		}
	}()

	names := make([]string, 0, len(spec.Maps))
	for name := range spec.Maps {
		if strings.HasPrefix(name, "glia_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var plans []*planned
	defer func() {
		for _, pl := range plans {
			pl.close() // what execute did not take over
		}
	}()
	var refusals []error
	for _, name := range names {
		ms := spec.Maps[name].Copy()
		ms.Pinning = ebpf.PinNone
		if n, ok := maxEntries[name]; ok {
			ms.MaxEntries = n
		}
		pl, err := p.plan(name, ms)
		if pl != nil {
			plans = append(plans, pl)
		}
		if err != nil {
			refusals = append(refusals, err)
		}
	}
	if len(refusals) > 0 {
		return nil, errors.Join(refusals...)
	}

	for _, pl := range plans {
		if err := p.execute(pl); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// execute carries out one plan.
func (p *pinnedMaps) execute(pl *planned) error {
	name := pl.name
	swap := pinPath(p.pinDir, name+swapSuffix)
	switch pl.action {
	case actKeep:
		p.maps[name] = pl.cur
		pl.cur = nil // now p's
		if err := p.record(name, p.maps[name], pl.curLayout, pl.newer); err != nil {
			return err
		}
		if pl.prev != nil {
			// An interrupted start's previous map: merged after the attach.
			st := &mapStep{name: name, layout: pl.want, old: pl.prev}
			pl.prev = nil
			st.report = maps.Migration{Map: name, Action: "merged", ToVersion: pl.want.Version, ToMax: pl.spec.MaxEntries,
				FromMax: st.old.MaxEntries(), Reason: "a previous map an interrupted start left"}
			if l, _, refuse, reset := p.layoutOf(name, st.old, pl.want); refuse == nil && reset == nil {
				st.oldLayout, st.report.FromVersion = l, l.Version
				if l.Version >= pl.want.Version {
					st.chain = []maps.Converter{}
				} else if c, err := p.reg.Chain(name, l.Version); err == nil {
					st.chain = c
				}
			}
			st.exchanged = true // it is the one under <name>_swap
			p.steps = append(p.steps, st)
		}
		return nil
	case actCreate:
		if pl.prev != nil {
			// No map under the name: a <name>_swap is an unfinished copy.
			if err := os.Remove(swap); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", swap, err)
			}
		}
		m, err := ebpf.NewMap(pl.spec)
		if err != nil {
			return fmt.Errorf("create map %s: %w", name, err)
		}
		if err := m.Pin(pinPath(p.pinDir, name)); err != nil {
			m.Close()
			return fmt.Errorf("pin map %s: %w", name, err)
		}
		p.maps[name] = m
		return p.record(name, m, pl.want, false)
	}

	// migrate or reset: a new map under <name>_swap, the old one stays.
	if pl.prev != nil {
		p.log.Info("Dropping the unfinished copy of an interrupted migration", "map", name, "pin", swap)
		if err := os.Remove(swap); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", swap, err)
		}
	}
	fresh, err := ebpf.NewMap(pl.spec)
	if err != nil {
		return fmt.Errorf("create map %s: %w", name, err)
	}
	st := &mapStep{name: name, layout: pl.want, fresh: fresh, old: pl.cur, oldLayout: pl.curLayout, chain: pl.chain}
	pl.cur = nil // now st's
	st.report = maps.Migration{Map: name, Action: pl.action, FromVersion: pl.curLayout.Version, ToVersion: pl.want.Version,
		FromMax: st.old.MaxEntries(), ToMax: pl.spec.MaxEntries, Reason: pl.reason}
	p.steps = append(p.steps, st)
	if pl.action == actMigrate {
		if st.chain == nil {
			st.chain = []maps.Converter{}
		}
		st.copied = maps.Monotonic()
		n, lost, err := copyEntries(st.old, fresh, st.chain, pl.want, st.old.ValueSize())
		if err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
		st.report.Carried, st.report.Lost = n, lost
	} else {
		n, err := maps.Count(st.old)
		if err != nil {
			return fmt.Errorf("count the entries of %s: %w", name, err)
		}
		st.report.Lost = n
	}
	st.report.FlowsLost = pl.want.Flows(st.report.Lost)
	if err := fresh.Pin(swap); err != nil {
		return fmt.Errorf("pin map %s: %w", name+swapSuffix, err)
	}
	p.maps[name] = fresh
	return p.record(name, fresh, pl.want, false)
}

// record writes m's layout record (a map of a newer layout keeps its own).
func (p *pinnedMaps) record(name string, m *ebpf.Map, l maps.Layout, newer bool) error {
	if newer {
		return nil
	}
	id, err := mapID(m)
	if err != nil {
		return fmt.Errorf("map %s: %w", name, err)
	}
	if rec, ok, err := p.records.Get(id); err == nil && ok && rec.Version == l.Version && rec.Compat == l.Compat {
		return nil
	}
	if err := p.records.Set(id, maps.LayoutRecord{Version: l.Version, Compat: l.Compat}); err != nil {
		return fmt.Errorf("record the layout of %s: %w", name, err)
	}
	return nil
}

// exchange gives every new map its name, in one rename each: the old map
// moves to <name>_swap, where it stays until finish. Call it once the
// programs using the new maps have loaded.
func (p *pinnedMaps) exchange() error {
	for _, st := range p.steps {
		if st.exchanged {
			continue
		}
		name := pinPath(p.pinDir, st.name)
		if err := unix.Renameat2(unix.AT_FDCWD, name+swapSuffix, unix.AT_FDCWD, name, unix.RENAME_EXCHANGE); err != nil {
			return fmt.Errorf("swap the migrated %s into place: %w", st.name, err)
		}
		st.exchanged = true
	}
	return nil
}

// finish runs once the new programs are attached: it merges what the old
// programs wrote into the old maps since the copy, removes the old maps
// and the records of maps that are gone, and returns what was done.
func (p *pinnedMaps) finish() ([]maps.Migration, error) {
	var errs []error
	for _, st := range p.steps {
		if !st.exchanged {
			continue
		}
		if st.old != nil && st.layout.ProgramWritten && st.chain != nil && st.report.Action != actReset {
			n, err := mergeEntries(st.old, p.maps[st.name], st.chain, st.layout, st.old.ValueSize(), st.copied)
			if err != nil {
				// It stays under <name>_swap: the next start merges it.
				errs = append(errs, fmt.Errorf("merge the old %s: %w", st.name, err))
				continue
			}
			if st.report.Action == "merged" {
				st.report.Carried = n
			}
		} else if st.report.Action == "merged" && st.chain == nil {
			n, _ := maps.Count(st.old)
			st.report.Lost, st.report.FlowsLost = n, st.layout.Flows(n)
			st.report.Reason += fmt.Sprintf(" (layout version %d cannot be merged)", st.report.FromVersion)
		}
		path := pinPath(p.pinDir, st.name+swapSuffix)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove the old %s: %w", st.name, err))
		}
		if st.old != nil {
			st.old.Close()
			st.old = nil
		}
		if st.report.Action == "merged" && st.report.Carried == 0 && st.report.Lost == 0 {
			continue // an empty previous map: nothing to say
		}
		p.reports = append(p.reports, st.report)
	}
	p.steps = nil
	errs = append(errs, p.gcRecords())
	for _, r := range p.reports {
		p.logReport(r)
	}
	if p.recMap != nil {
		p.recMap.Close()
		p.recMap = nil
	}
	return p.reports, errors.Join(errs...)
}

// gcRecords deletes the records of maps no longer pinned.
func (p *pinnedMaps) gcRecords() error {
	live := map[ebpf.MapID]bool{}
	for _, m := range p.maps {
		if id, err := mapID(m); err == nil {
			live[id] = true
		}
	}
	recs, err := p.records.List()
	if err != nil {
		return err
	}
	var errs []error
	for id := range recs {
		if !live[id] {
			errs = append(errs, p.records.Delete(id))
		}
	}
	return errors.Join(errs...)
}

func (p *pinnedMaps) logReport(r maps.Migration) {
	args := []any{"map", r.Map, "action", r.Action, "from-version", r.FromVersion, "to-version", r.ToVersion,
		"from-max-entries", r.FromMax, "to-max-entries", r.ToMax, "entries-carried", r.Carried, "entries-lost", r.Lost,
		"flows-lost", r.FlowsLost, "reason", r.Reason}
	switch {
	case r.Action == actReset:
		p.log.Error("A pinned map's layout cannot be migrated: it was replaced by an empty map and its entries are lost "+
			"(connections tracked or translated in it lose that state; service maps are rewritten from the cluster)", args...)
	case r.Lost > 0:
		p.log.Warn("Migrated a pinned map; some entries could not be carried over", args...)
	default:
		p.log.Info("Migrated a pinned map: every entry carried over", args...)
	}
}

// abort undoes what openPinned did when the load fails before the
// exchange: the new maps and their pins go, the old maps stay as they are.
func (p *pinnedMaps) abort() {
	for _, st := range p.steps {
		if st.fresh != nil && !st.exchanged {
			os.Remove(pinPath(p.pinDir, st.name+swapSuffix))
		}
		if st.old != nil {
			st.old.Close()
		}
	}
	p.steps = nil
	for _, m := range p.maps {
		m.Close()
	}
	p.maps = map[string]*ebpf.Map{}
	if p.recMap != nil {
		p.recMap.Close()
		p.recMap = nil
	}
}

// convert carries one raw entry of from (value size oldSize) through
// chain; per-CPU values are converted CPU by CPU.
func convert(e maps.RawEntry, chain []maps.Converter, perCPU bool, oldSize uint32) (maps.RawEntry, bool) {
	apply := func(k, v []byte) ([]byte, []byte, bool) {
		for _, c := range chain {
			var ok bool
			if k, v, ok = c(k, v); !ok {
				return nil, nil, false
			}
		}
		return k, v, true
	}
	if !perCPU || len(chain) == 0 {
		k, v, ok := apply(e.Key, e.Value)
		return maps.RawEntry{Key: k, Value: v}, ok
	}
	var key, out []byte
	for off := 0; off+int(oldSize) <= len(e.Value); off += int(oldSize) {
		k, v, ok := apply(append([]byte(nil), e.Key...), append([]byte(nil), e.Value[off:off+int(oldSize)]...))
		if !ok {
			return maps.RawEntry{}, false
		}
		key, out = k, append(out, v...)
	}
	return maps.RawEntry{Key: key, Value: out}, true
}

func isPerCPU(m *ebpf.Map) bool {
	switch m.Type() {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash:
		return true
	}
	return false
}

// copyEntries converts every entry of from into to (the first pass of a
// migration). With a last-seen time the oldest go first, so that a
// smaller map keeps the newest. It returns the entries to holds and how
// many were lost: dropped by a converter, or did not fit.
func copyEntries(from, to *ebpf.Map, chain []maps.Converter, l maps.Layout, oldSize uint32) (carried, lost int, err error) {
	entries, err := maps.ReadRaw(from)
	if err != nil {
		return 0, 0, err
	}
	pc := isPerCPU(from)
	conv := make([]maps.RawEntry, 0, len(entries))
	for _, e := range entries {
		c, ok := convert(e, chain, pc, oldSize)
		if !ok {
			lost++
			continue
		}
		conv = append(conv, c)
	}
	if l.LastSeen >= 0 {
		sort.SliceStable(conv, func(i, j int) bool {
			return maps.LastSeen(conv[i].Value, l.LastSeen) < maps.LastSeen(conv[j].Value, l.LastSeen)
		})
	}
	for _, e := range conv {
		if err := maps.WriteRaw(to, e, ebpf.UpdateAny); err != nil && !errors.Is(err, maps.ErrMapFull) {
			return 0, 0, err
		}
	}
	if to.Type() == ebpf.Array || to.Type() == ebpf.PerCPUArray {
		return len(conv), lost, nil
	}
	n, err := maps.Count(to)
	if err != nil {
		return 0, 0, err
	}
	// What is not there did not fit (an LRU map evicts, a hash map refuses).
	return n, lost + max(0, len(conv)-n), nil
}

// mergeEntries merges what the old programs wrote into from since the
// copy began (at since): an entry to lacks is added (with a last-seen
// time, only one seen since: an older one did not fit), and an entry from
// saw later than to's replaces it. Arrays (counters) are left as they
// are. It returns how many entries it wrote.
func mergeEntries(from, to *ebpf.Map, chain []maps.Converter, l maps.Layout, oldSize uint32, since uint64) (int, error) {
	if to.Type() == ebpf.Array || to.Type() == ebpf.PerCPUArray {
		return 0, nil
	}
	entries, err := maps.ReadRaw(from)
	if err != nil {
		return 0, err
	}
	pc := isPerCPU(from)
	n := 0
	for _, e := range entries {
		c, ok := convert(e, chain, pc, oldSize)
		if !ok {
			continue
		}
		have, found, err := maps.LookupRaw(to, c.Key)
		if err != nil {
			return n, err
		}
		seen := maps.LastSeen(c.Value, l.LastSeen)
		switch {
		case found && (l.LastSeen < 0 || maps.LastSeen(have, l.LastSeen) >= seen):
			continue
		case !found && l.LastSeen >= 0 && seen < since:
			continue
		}
		if err := maps.WriteRaw(to, c, ebpf.UpdateAny); err != nil {
			if errors.Is(err, maps.ErrMapFull) {
				continue
			}
			return n, err
		}
		n++
	}
	return n, nil
}
