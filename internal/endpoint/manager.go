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

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/ipam"
)

// Datapath is the part of datapath.Datapath the manager drives.
type Datapath interface {
	UpsertEndpoint(ctx context.Context, ep api.Endpoint) error
	DeleteEndpoint(ctx context.Context, ep api.Endpoint) error
	SyncEndpoints(ctx context.Context, eps []api.Endpoint) error
}

// Defaults of Config.
const (
	DefaultGateway    = "169.254.1.1"
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
	// 169.254.1.1).
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
		c.Gateway = netip.MustParseAddr(DefaultGateway)
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
// api.Backend. Every method but Restore answers "not-ready" until Restore
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
	eps      map[api.Attachment]api.Endpoint
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
		linkExists: netlinkLinkExists,
		now:        time.Now,
		eps:        map[api.Attachment]api.Endpoint{},
	}, nil
}

func netlinkLinkExists(name string) (bool, error) {
	_, err := netlinksafe.LinkByName(name)
	if err == nil {
		return true, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return false, nil
	}
	return false, fmt.Errorf("look up link %s: %w", name, err)
}

// Restore loads the endpoint files, drops those that cannot be parsed,
// removes orphans (endpoints whose host veth is gone: their address is
// released and their datapath state deleted), re-reserves the address of
// every live endpoint and hands the live ones to the datapath's
// SyncEndpoints. It must run once, before any address is allocated.
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
	var live []api.Endpoint
	orphans := 0
	for _, ep := range loaded {
		exists, err := m.linkExists(ep.HostIfName)
		if err != nil {
			return fmt.Errorf("restore endpoint %s: %w", ep.Attachment, err)
		}
		if !exists {
			orphans++
			m.removeOrphan(ctx, ep)
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
	if err := m.dp.SyncEndpoints(ctx, live); err != nil {
		return fmt.Errorf("restore endpoints: sync datapath: %w", err)
	}
	m.restored = true
	m.log.Info("endpoints restored", "live", len(live), "orphans", orphans,
		"allocated", m.alloc.Size()-m.alloc.Free(), "free", m.alloc.Free())
	return nil
}

func (m *Manager) removeOrphan(ctx context.Context, ep api.Endpoint) {
	if err := m.dp.DeleteEndpoint(ctx, ep); err != nil {
		// SyncEndpoints, called with the live endpoints only, removes it too.
		m.log.Warn("cannot delete datapath state of orphan endpoint", "endpoint", ep.Key(), "error", err)
	}
	if err := m.store.Delete(ep.Attachment); err != nil {
		m.log.Warn("cannot delete orphan endpoint file", "endpoint", ep.Key(), "error", err)
	}
	if err := m.alloc.Release(ep.Key()); err != nil {
		m.log.Warn("cannot release orphan endpoint's address", "endpoint", ep.Key(), "ip", ep.IP, "error", err)
	}
	m.log.Info("removed orphan endpoint: its host veth is gone", "endpoint", ep.Key(), "hostIfName", ep.HostIfName, "ip", ep.IP,
		"pod", ep.PodNamespace+"/"+ep.PodName)
}

// reserve makes the allocator agree with a live endpoint about its address.
// The endpoint wins: its pod is running with that address.
func (m *Manager) reserve(ep api.Endpoint) error {
	addr, err := netip.ParseAddr(ep.IP)
	if err != nil {
		return err
	}
	owner := ep.Key()
	if held, ok := m.alloc.Lookup(owner); ok && held != addr {
		m.log.Warn("ipam held another address for a live endpoint; releasing it", "endpoint", owner, "held", held, "ip", addr)
		if err := m.alloc.Release(owner); err != nil {
			return err
		}
	}
	if other, ok := m.alloc.Owner(addr); ok && other != owner {
		if a, isAtt := api.ParseAttachmentKey(other); isAtt {
			if _, live := m.eps[a]; live {
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
		if _, hasEP := m.eps[a]; hasEP || now.Sub(al.Since) < m.cfg.StaleGrace {
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

func (m *Manager) ready() error {
	if !m.restored {
		return api.Errorf(api.CodeNotReady, "the agent is restoring endpoints; retry shortly")
	}
	return nil
}

// Allocate implements api.Backend.
func (m *Manager) Allocate(_ context.Context, req api.AllocateRequest) (api.Allocation, error) {
	if err := api.ValidateAttachment(req.Attachment); err != nil {
		return api.Allocation{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return api.Allocation{}, err
	}
	if ep, ok := m.eps[req.Attachment]; ok {
		return api.Allocation{}, api.Errorf(api.CodeConflict,
			"attachment %s already has an endpoint (pod %s/%s, ip %s): a second ADD is refused; DEL it first",
			req.Attachment, ep.PodNamespace, ep.PodName, ep.IP)
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
	if err := api.ValidateAttachment(a); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	if _, ok := m.eps[a]; ok {
		return api.Errorf(api.CodeConflict, "attachment %s has an endpoint: delete the endpoint instead of releasing its address", a)
	}
	return m.alloc.Release(a.Key())
}

// UpsertEndpoint implements api.Backend: it checks that ep.IP is the address
// allocated to the attachment, persists the endpoint, then programs the
// datapath. When programming fails, the previous state is put back.
func (m *Manager) UpsertEndpoint(ctx context.Context, ep api.Endpoint) error {
	if err := validateStored(ep); err != nil {
		return err
	}
	addr, _ := netip.ParseAddr(ep.IP)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	held, ok := m.alloc.Lookup(ep.Key())
	if !ok {
		return api.Errorf(api.CodeConflict, "no address is allocated to attachment %s: allocate one first", ep.Attachment)
	}
	if held != addr {
		return api.Errorf(api.CodeConflict, "attachment %s was allocated %s, not %s", ep.Attachment, held, addr)
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
	if err := m.dp.UpsertEndpoint(ctx, ep); err != nil {
		m.rollbackUpsert(ctx, ep, prev, had)
		return fmt.Errorf("program datapath for endpoint %s: %w", ep.Attachment, err)
	}
	m.eps[ep.Attachment] = ep
	m.log.Info("endpoint upserted", "endpoint", ep.Key(), "ip", ep.IP, "hostIfName", ep.HostIfName, "pod", ep.PodNamespace+"/"+ep.PodName)
	return nil
}

func (m *Manager) rollbackUpsert(ctx context.Context, ep, prev api.Endpoint, had bool) {
	if had {
		if err := m.store.Put(prev); err != nil {
			m.log.Error("cannot restore previous endpoint file after a datapath failure", "endpoint", ep.Key(), "error", err)
		}
		if err := m.dp.UpsertEndpoint(ctx, prev); err != nil {
			m.log.Error("cannot restore previous endpoint datapath state", "endpoint", ep.Key(), "error", err)
		}
		return
	}
	if err := m.dp.DeleteEndpoint(ctx, ep); err != nil {
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
	if err := api.ValidateAttachment(a); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	return m.deleteLocked(ctx, a)
}

func (m *Manager) deleteLocked(ctx context.Context, a api.Attachment) error {
	if ep, ok := m.eps[a]; ok {
		if err := m.dp.DeleteEndpoint(ctx, ep); err != nil {
			return fmt.Errorf("delete datapath state of endpoint %s: %w", a, err)
		}
		if err := m.store.Delete(a); err != nil {
			return err
		}
		delete(m.eps, a)
		m.log.Info("endpoint deleted", "endpoint", a.Key(), "ip", ep.IP, "pod", ep.PodNamespace+"/"+ep.PodName)
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
	ep, ok := m.eps[a]
	if !ok {
		return api.Endpoint{}, api.Errorf(api.CodeNotFound, "no endpoint for attachment %s", a)
	}
	return ep, nil
}

// ListEndpoints implements api.Backend; endpoints are sorted by attachment.
func (m *Manager) ListEndpoints(context.Context) ([]api.Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return nil, err
	}
	return m.listLocked(), nil
}

func (m *Manager) listLocked() []api.Endpoint {
	out := make([]api.Endpoint, 0, len(m.eps))
	for _, ep := range m.eps {
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// GC implements api.Backend: every endpoint and every attachment's
// allocation not listed in req.Valid is released.
func (m *Manager) GC(ctx context.Context, req api.GCRequest) (api.GCResult, error) {
	valid := make(map[api.Attachment]bool, len(req.Valid))
	for _, a := range req.Valid {
		valid[a] = true
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
		res.Released = append(res.Released, ep.Attachment)
	}
	for _, al := range m.alloc.Allocations() {
		a, ok := api.ParseAttachmentKey(al.Owner)
		if !ok || valid[a] {
			continue
		}
		if _, hasEP := m.eps[a]; hasEP {
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
