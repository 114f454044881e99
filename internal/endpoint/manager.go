package endpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/state"
)

// Datapath is where the manager puts the endpoints it keeps: the desired
// state, which the endpoint reconciler programs into the kernel.
type Datapath interface {
	// Program makes ep desired and waits until the datapath programmed it
	// (nil) or failed to (the error).
	Program(ctx context.Context, ep *state.Endpoint) error
	// Remove takes the endpoint out of the desired state and waits until
	// the datapath removed it.
	Remove(ctx context.Context, a state.Attachment) error
	// Restored hands over the live endpoints found at start, without
	// waiting; from then on the datapath removes every other endpoint.
	Restored(eps []*state.Endpoint)
}

// Defaults of Config.
const (
	DefaultMTU        = 1500
	DefaultStaleGrace = 2 * time.Minute
)

// Config configures the Manager.
type Config struct {
	// StateDir is the node's state directory; endpoint files live in
	// StateDir/endpoints.
	StateDir string
	// PodCIDR is the node's pod CIDR; it must be the allocator's.
	PodCIDR netip.Prefix
	// Gateway is the link-local next hop pods route through (default
	// linux.PodGateway, 169.254.1.1).
	Gateway netip.Addr
	// MTU of pod interfaces (default 1500).
	MTU int
	// StaleGrace is how old an allocation without an endpoint must be before
	// CollectStale releases it (default 2 minutes).
	StaleGrace time.Duration
}

// WithDefaults returns c with unset fields defaulted.
func (c Config) WithDefaults() Config {
	if !c.Gateway.IsValid() {
		c.Gateway = linux.PodGateway
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.StaleGrace == 0 {
		c.StaleGrace = DefaultStaleGrace
	}
	return c
}

// Validate checks c.
func (c Config) Validate() error {
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("endpoint state directory is empty"))
	}
	if !c.PodCIDR.IsValid() {
		errs = append(errs, errors.New("pod CIDR is not set"))
	}
	if !c.Gateway.IsValid() || !c.Gateway.Is4() {
		errs = append(errs, fmt.Errorf("gateway %q is not an IPv4 address", c.Gateway))
	}
	if c.MTU < 576 || c.MTU > 65535 {
		errs = append(errs, fmt.Errorf("mtu %d is outside 576..65535", c.MTU))
	}
	if c.StaleGrace < 0 {
		errs = append(errs, fmt.Errorf("stale grace %v is negative", c.StaleGrace))
	}
	return errors.Join(errs...)
}

// Manager owns the node's endpoints and their addresses. It implements
// api.Backend: the attachments it is given were checked by the socket
// API's handler, the one place they enter the agent. Every method but Restore answers "not-ready" until Restore
// has run.
type Manager struct {
	log   *slog.Logger
	cfg   Config
	alloc *ipam.Allocator
	dp    Datapath
	store *Store

	// linkExists reports whether a link exists in the agent's netns.
	linkExists func(name string) (bool, error)
	now        func() time.Time

	mu       sync.Mutex
	restored bool
	eps      map[state.Attachment]*state.Endpoint
}

var _ api.Backend = (*Manager)(nil)

// NewManager returns a manager storing endpoints under cfg.StateDir. Call
// Restore before serving anything.
func NewManager(log *slog.Logger, cfg Config, alloc *ipam.Allocator, dp Datapath) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("endpoint manager config: %w", err)
	}
	if alloc == nil || dp == nil {
		return nil, errors.New("endpoint manager needs an allocator and a datapath")
	}
	if alloc.PodCIDR() != cfg.PodCIDR.Masked() {
		return nil, fmt.Errorf("endpoint manager pod CIDR %s differs from the allocator's %s", cfg.PodCIDR, alloc.PodCIDR())
	}
	store, err := NewStore(log, filepath.Join(cfg.StateDir, "endpoints"))
	if err != nil {
		return nil, err
	}
	return &Manager{
		log:        log,
		cfg:        cfg,
		alloc:      alloc,
		dp:         dp,
		store:      store,
		linkExists: linux.LinkExists,
		now:        time.Now,
		eps:        map[state.Attachment]*state.Endpoint{},
	}, nil
}

func attachment(a api.Attachment) state.Attachment {
	return state.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}
}

// Restore loads the endpoint files, drops those that cannot be parsed,
// removes orphans (endpoints whose host veth is gone: their address is
// released; the datapath prunes their state), re-reserves the address of
// every live endpoint and hands the live ones to the datapath. It must
// run once, before any address is allocated.
func (m *Manager) Restore(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.restored {
		return errors.New("endpoints already restored")
	}
	loaded, err := m.store.Load()
	if err != nil {
		return fmt.Errorf("restore endpoints: %w", err)
	}
	var live []*state.Endpoint
	orphans := 0
	for _, ep := range loaded {
		exists, err := m.linkExists(ep.HostIfName)
		if err != nil {
			return fmt.Errorf("restore endpoint %s: %w", ep.Attachment, err)
		}
		if !exists {
			orphans++
			m.removeOrphan(ep)
			continue
		}
		if err := m.reserve(ep); err != nil {
			// The pod keeps running with its address: keep it in the
			// datapath and say why its address is not reserved.
			m.log.Error("live endpoint's address cannot be reserved", "endpoint", ep.Key(), "ip", ep.IP, "error", err)
		}
		m.eps[ep.Attachment] = ep
		live = append(live, ep)
	}
	m.dp.Restored(live)
	m.restored = true
	m.log.Info("endpoints restored", "live", len(live), "orphans", orphans,
		"allocated", m.alloc.Size()-m.alloc.Free(), "free", m.alloc.Free())
	return nil
}

// removeOrphan forgets an endpoint whose veth is gone; its datapath state
// goes when the datapath prunes what Restored did not hand over.
func (m *Manager) removeOrphan(ep *state.Endpoint) {
	if err := m.store.Delete(ep.Attachment); err != nil {
		m.log.Warn("cannot delete orphan endpoint file", "endpoint", ep.Key(), "error", err)
	}
	if err := m.alloc.Release(ep.Key()); err != nil {
		m.log.Warn("cannot release orphan endpoint's address", "endpoint", ep.Key(), "ip", ep.IP, "error", err)
	}
	m.log.Info("removed orphan endpoint: its host veth is gone", "endpoint", ep.Key(), "hostIfName", ep.HostIfName, "ip", ep.IP,
		"pod", ep.Pod())
}

// reserve makes the allocator agree with a live endpoint about its address.
// The endpoint wins: its pod is running with that address.
func (m *Manager) reserve(ep *state.Endpoint) error {
	addr := ep.IP
	owner := ep.Key()
	if held, ok := m.alloc.Lookup(owner); ok && held != addr {
		m.log.Warn("ipam held another address for a live endpoint; releasing it", "endpoint", owner, "held", held, "ip", addr)
		if err := m.alloc.Release(owner); err != nil {
			return err
		}
	}
	if other, ok := m.alloc.Owner(addr); ok && other != owner {
		if a, isAtt := api.ParseAttachmentKey(other); isAtt {
			if _, live := m.eps[attachment(a)]; live {
				return fmt.Errorf("address also used by live endpoint %s", other)
			}
		}
		m.log.Warn("ipam gave a live endpoint's address to another owner; taking it back", "endpoint", owner, "ip", addr, "owner", other)
		if err := m.alloc.Release(other); err != nil {
			return err
		}
	}
	return m.alloc.AllocateSpecific(owner, addr)
}

// CollectStale releases every allocation that has no endpoint, is older
// than the grace period and whose host veth does not exist: what an ADD
// interrupted by an agent crash leaves behind. Owners that are not
// attachments are left alone. It returns the released owners.
func (m *Manager) CollectStale(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.restored {
		return nil, api.Errorf(api.CodeNotReady, "endpoints are not restored yet")
	}
	var released []string
	var errs []error
	now := m.now()
	for _, al := range m.alloc.Allocations() {
		a, ok := api.ParseAttachmentKey(al.Owner)
		if !ok {
			continue
		}
		if _, hasEP := m.eps[attachment(a)]; hasEP || now.Sub(al.Since) < m.cfg.StaleGrace {
			continue
		}
		exists, err := m.linkExists(api.HostIfName(a))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if exists {
			m.log.Warn("not releasing an address without endpoint: the attachment's host veth exists", "owner", al.Owner, "ip", al.Addr,
				"hostIfName", api.HostIfName(a))
			continue
		}
		if err := m.alloc.Release(al.Owner); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Info("released stale allocation without endpoint", "owner", al.Owner, "ip", al.Addr, "age", now.Sub(al.Since).Round(time.Second))
		released = append(released, al.Owner)
	}
	return released, errors.Join(errs...)
}

// SweepGone deletes every endpoint whose host veth no longer exists — its
// datapath state, its file and its address — as a CNI DEL would have: the
// DEL that reached the node while the agent was starting or unreachable
// (the plugin removed the veth and could not tell the agent). The agent
// runs it every endpoint-gc period, which bounds how long such an address
// stays allocated. It returns the endpoints it deleted.
func (m *Manager) SweepGone(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.restored {
		return nil, api.Errorf(api.CodeNotReady, "endpoints are not restored yet")
	}
	var swept []string
	var errs []error
	for _, ep := range m.listLocked() {
		exists, err := m.linkExists(ep.HostIfName)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if exists {
			continue
		}
		if err := m.deleteLocked(ctx, ep.Attachment); err != nil {
			errs = append(errs, fmt.Errorf("sweep endpoint %s: %w", ep.Key(), err))
			continue
		}
		m.log.Info("deleted an endpoint whose host veth is gone: its CNI DEL did not reach the agent", "endpoint", ep.Key(),
			"hostIfName", ep.HostIfName, "ip", ep.IP, "pod", ep.Pod())
		swept = append(swept, ep.Key())
	}
	return swept, errors.Join(errs...)
}

func (m *Manager) ready() error {
	if !m.restored {
		return api.Errorf(api.CodeNotReady, "the agent is restoring endpoints; retry shortly")
	}
	return nil
}

// Allocate implements api.Backend.
func (m *Manager) Allocate(_ context.Context, req api.AllocateRequest) (api.Allocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return api.Allocation{}, err
	}
	if ep, ok := m.eps[attachment(req.Attachment)]; ok {
		return api.Allocation{}, api.Errorf(api.CodeConflict,
			"attachment %s already has an endpoint (pod %s, ip %s): a second ADD is refused; DEL it first",
			req.Attachment, ep.Pod(), ep.IP)
	}
	addr, err := m.alloc.Allocate(req.Key())
	if errors.Is(err, ipam.ErrExhausted) {
		return api.Allocation{}, api.Errorf(api.CodeExhausted, "%v", err)
	}
	if err != nil {
		return api.Allocation{}, fmt.Errorf("allocate: %w", err)
	}
	m.log.Debug("allocated address", "owner", req.Key(), "ip", addr, "pod", req.PodNamespace+"/"+req.PodName)
	return m.allocation(req.Attachment, addr), nil
}

func (m *Manager) allocation(a api.Attachment, addr netip.Addr) api.Allocation {
	return api.Allocation{
		Attachment: a,
		IP:         addr.String(),
		PodCIDR:    m.cfg.PodCIDR.Masked().String(),
		Gateway:    m.cfg.Gateway.String(),
		MTU:        m.cfg.MTU,
	}
}

// Release implements api.Backend. It refuses to release the address of an
// existing endpoint (delete the endpoint instead).
func (m *Manager) Release(_ context.Context, a api.Attachment) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	if _, ok := m.eps[attachment(a)]; ok {
		return api.Errorf(api.CodeConflict, "attachment %s has an endpoint: delete the endpoint instead of releasing its address", a)
	}
	return m.alloc.Release(a.Key())
}

// UpsertEndpoint implements api.Backend: it checks every field of ep once,
// checks that its address is the one allocated to the attachment,
// persists the endpoint, then has the datapath program it. When
// programming fails, the previous state is put back.
func (m *Manager) UpsertEndpoint(ctx context.Context, w api.Endpoint) error {
	ep, err := FromWire(w)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	held, ok := m.alloc.Lookup(ep.Key())
	if !ok {
		return api.Errorf(api.CodeConflict, "no address is allocated to attachment %s: allocate one first", ep.Attachment)
	}
	if held != ep.IP {
		return api.Errorf(api.CodeConflict, "attachment %s was allocated %s, not %s", ep.Attachment, held, ep.IP)
	}
	prev, had := m.eps[ep.Attachment]
	if ep.Created.IsZero() {
		ep.Created = m.now().UTC()
		if had {
			ep.Created = prev.Created
		}
	}
	if err := m.store.Put(ep); err != nil {
		return err
	}
	if err := m.dp.Program(ctx, ep); err != nil {
		m.rollbackUpsert(ctx, ep, prev, had)
		return fmt.Errorf("program datapath for endpoint %s: %w", ep.Attachment, err)
	}
	m.eps[ep.Attachment] = ep
	m.log.Info("endpoint upserted", "endpoint", ep.Key(), "ip", ep.IP, "hostIfName", ep.HostIfName, "pod", ep.Pod())
	return nil
}

func (m *Manager) rollbackUpsert(ctx context.Context, ep, prev *state.Endpoint, had bool) {
	if had {
		if err := m.store.Put(prev); err != nil {
			m.log.Error("cannot restore previous endpoint file after a datapath failure", "endpoint", ep.Key(), "error", err)
		}
		if err := m.dp.Program(ctx, prev); err != nil {
			m.log.Error("cannot restore previous endpoint datapath state", "endpoint", ep.Key(), "error", err)
		}
		return
	}
	if err := m.dp.Remove(ctx, ep.Attachment); err != nil {
		m.log.Warn("cannot remove partial datapath state after a failed upsert", "endpoint", ep.Key(), "error", err)
	}
	if err := m.store.Delete(ep.Attachment); err != nil {
		m.log.Error("cannot remove endpoint file after a datapath failure", "endpoint", ep.Key(), "error", err)
	}
}

// DeleteEndpoint implements api.Backend: it removes the endpoint's datapath
// state, its file and its address. Unknown attachments succeed (their
// address, if any, is released).
func (m *Manager) DeleteEndpoint(ctx context.Context, a api.Attachment) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	return m.deleteLocked(ctx, attachment(a))
}

func (m *Manager) deleteLocked(ctx context.Context, a state.Attachment) error {
	if ep, ok := m.eps[a]; ok {
		if err := m.dp.Remove(ctx, a); err != nil {
			return fmt.Errorf("delete datapath state of endpoint %s: %w", a, err)
		}
		if err := m.store.Delete(a); err != nil {
			return err
		}
		delete(m.eps, a)
		m.log.Info("endpoint deleted", "endpoint", a.Key(), "ip", ep.IP, "pod", ep.Pod())
	}
	return m.alloc.Release(a.Key())
}

// GetEndpoint implements api.Backend.
func (m *Manager) GetEndpoint(_ context.Context, a api.Attachment) (api.Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return api.Endpoint{}, err
	}
	ep, ok := m.eps[attachment(a)]
	if !ok {
		return api.Endpoint{}, api.Errorf(api.CodeNotFound, "no endpoint for attachment %s", a)
	}
	return ToWire(ep), nil
}

// ListEndpoints implements api.Backend; endpoints are sorted by attachment.
func (m *Manager) ListEndpoints(context.Context) ([]api.Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return nil, err
	}
	eps := m.listLocked()
	out := make([]api.Endpoint, len(eps))
	for i, ep := range eps {
		out[i] = ToWire(ep)
	}
	return out, nil
}

func (m *Manager) listLocked() []*state.Endpoint {
	out := make([]*state.Endpoint, 0, len(m.eps))
	for _, ep := range m.eps {
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Count is the number of endpoints.
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.eps)
}

// GC implements api.Backend: every endpoint and every attachment's
// allocation not listed in req.Valid is released.
func (m *Manager) GC(ctx context.Context, req api.GCRequest) (api.GCResult, error) {
	valid := make(map[state.Attachment]bool, len(req.Valid))
	for _, a := range req.Valid {
		valid[attachment(a)] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return api.GCResult{}, err
	}
	res := api.GCResult{Released: []api.Attachment{}}
	var errs []error
	for _, ep := range m.listLocked() {
		if valid[ep.Attachment] {
			continue
		}
		if err := m.deleteLocked(ctx, ep.Attachment); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Released = append(res.Released, api.Attachment{ContainerID: ep.ContainerID, IfName: ep.IfName})
	}
	for _, al := range m.alloc.Allocations() {
		a, ok := api.ParseAttachmentKey(al.Owner)
		if !ok || valid[attachment(a)] {
			continue
		}
		if _, hasEP := m.eps[attachment(a)]; hasEP {
			continue // its deletion failed above
		}
		if err := m.alloc.Release(al.Owner); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Released = append(res.Released, a)
	}
	if len(res.Released) > 0 {
		m.log.Info("gc released attachments the runtime no longer lists", "released", len(res.Released), "valid", len(valid))
	}
	sort.Slice(res.Released, func(i, j int) bool { return res.Released[i].Key() < res.Released[j].Key() })
	return res, errors.Join(errs...)
}

// CNIStatus implements api.Backend: "not-ready" before Restore, "exhausted"
// when no address is left.
func (m *Manager) CNIStatus(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	if m.alloc.Free() == 0 {
		return api.Errorf(api.CodeExhausted, "pod CIDR %s has no free address (%d in use): no new pod can start on this node",
			m.cfg.PodCIDR.Masked(), m.alloc.Size())
	}
	return nil
}

// Restored says whether Restore has completed.
func (m *Manager) Restored() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.restored
}

// Config returns the manager's effective config.
func (m *Manager) Config() Config { return m.cfg }
