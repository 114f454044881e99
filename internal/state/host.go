package state

import (
	"net/netip"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// Sysctl is a kernel setting of the node's network namespace glia needs,
// e.g. net.ipv4.ip_forward=1.
type Sysctl struct {
	Name  string // dotted, e.g. "net.ipv4.conf.all.rp_filter"
	Value string

	Status reconciler.Status
}

// Path is the file under /proc/sys.
func (s *Sysctl) Path() string { return "/proc/sys/" + strings.ReplaceAll(s.Name, ".", "/") }

// Clone returns a copy.
func (s *Sysctl) Clone() *Sysctl { c := *s; return &c }

// Same compares two settings, status aside.
func (s *Sysctl) Same(o *Sysctl) bool { return s.Name == o.Name && s.Value == o.Value }

// TableHeader implements statedb.TableWritable.
func (*Sysctl) TableHeader() []string { return []string{"Name", "Value", "Status"} }

// TableRow implements statedb.TableWritable.
func (s *Sysctl) TableRow() []string { return []string{s.Name, s.Value, s.Status.String()} }

// GetStatus gives the reconciler the setting's status.
func (s *Sysctl) GetStatus() reconciler.Status { return s.Status }

// SetStatus sets the status on s (a clone) and returns it.
func (s *Sysctl) SetStatus(st reconciler.Status) *Sysctl { s.Status = st; return s }

// SysctlByName is the primary index.
var SysctlByName = statedb.Index[*Sysctl, string]{
	Name:       "name",
	FromObject: func(s *Sysctl) index.KeySet { return index.NewKeySet(index.String(s.Name)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// MasqueradeRule is glia's iptables MASQUERADE rule: traffic from the
// node's pods to outside the cluster leaves with the node's address. The
// table holds one rule when iptables masquerades, none otherwise (BPF
// masquerade, or masquerading off).
type MasqueradeRule struct {
	PodCIDR     netip.Prefix
	ClusterCIDR netip.Prefix

	Status reconciler.Status
}

// Name is the rule's one key.
func (m *MasqueradeRule) Name() string { return "iptables" }

// Clone returns a copy.
func (m *MasqueradeRule) Clone() *MasqueradeRule { c := *m; return &c }

// Same compares two rules, status aside.
func (m *MasqueradeRule) Same(o *MasqueradeRule) bool {
	return m.PodCIDR == o.PodCIDR && m.ClusterCIDR == o.ClusterCIDR
}

// TableHeader implements statedb.TableWritable.
func (*MasqueradeRule) TableHeader() []string { return []string{"Source", "Not to", "Status"} }

// TableRow implements statedb.TableWritable.
func (m *MasqueradeRule) TableRow() []string {
	return []string{m.PodCIDR.String(), m.ClusterCIDR.String(), m.Status.String()}
}

// GetStatus gives the reconciler the rule's status.
func (m *MasqueradeRule) GetStatus() reconciler.Status { return m.Status }

// SetStatus sets the status on m (a clone) and returns it.
func (m *MasqueradeRule) SetStatus(s reconciler.Status) *MasqueradeRule { m.Status = s; return m }

// MasqueradeByName is the primary index.
var MasqueradeByName = statedb.Index[*MasqueradeRule, string]{
	Name:       "name",
	FromObject: func(m *MasqueradeRule) index.KeySet { return index.NewKeySet(index.String(m.Name())) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// Program is one of the eBPF datapath's programs attached to a hook of a
// node device (the node's uplink, the VXLAN device); pods' programs belong
// to their endpoints.
type Program struct {
	Program   string // from_netdev, to_netdev
	Interface string
	Egress    bool

	Status reconciler.Status
}

// Name is "<program>/<interface>/<ingress|egress>".
func (p *Program) Name() string {
	dir := "ingress"
	if p.Egress {
		dir = "egress"
	}
	return p.Program + "/" + p.Interface + "/" + dir
}

// Clone returns a copy.
func (p *Program) Clone() *Program { c := *p; return &c }

// Same compares two attachments, status aside.
func (p *Program) Same(o *Program) bool { return p.Name() == o.Name() }

// TableHeader implements statedb.TableWritable.
func (*Program) TableHeader() []string { return []string{"Attachment", "Status"} }

// TableRow implements statedb.TableWritable.
func (p *Program) TableRow() []string { return []string{p.Name(), p.Status.String()} }

// GetStatus gives the reconciler the attachment's status.
func (p *Program) GetStatus() reconciler.Status { return p.Status }

// SetStatus sets the status on p (a clone) and returns it.
func (p *Program) SetStatus(s reconciler.Status) *Program { p.Status = s; return p }

// ProgramByName is the primary index.
var ProgramByName = statedb.Index[*Program, string]{
	Name:       "name",
	FromObject: func(p *Program) index.KeySet { return index.NewKeySet(index.String(p.Name())) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}
