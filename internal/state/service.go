package state

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// ServiceName names a Service.
type ServiceName struct {
	Namespace string
	Name      string
}

func (n ServiceName) String() string { return n.Namespace + "/" + n.Name }

// Backend is one endpoint of a Service port.
type Backend struct {
	Addr        netip.AddrPort
	NodeName    string
	Ready       bool
	Terminating bool
}

// Frontend is one (ClusterIP, port, protocol) of a Service and its
// backends; with a NodePort, the same backends answer on that port of
// every node address.
type Frontend struct {
	PortName        string
	Protocol        string         // "TCP" or "UDP"
	Addr            netip.AddrPort // ClusterIP:port
	NodePort        uint16         // 0 when none
	SessionAffinity bool           // ClientIP affinity
	Backends        []Backend      // sorted by address
}

// Equal compares two frontends field by field.
func (f Frontend) Equal(o Frontend) bool {
	return f.PortName == o.PortName && f.Protocol == o.Protocol && f.Addr == o.Addr && f.NodePort == o.NodePort &&
		f.SessionAffinity == o.SessionAffinity && slices.Equal(f.Backends, o.Backends)
}

// Service is a Service the agent load-balances (kube-proxy replacement):
// every frontend of its ports, each with its backends from the Service's
// EndpointSlices.
type Service struct {
	Name      ServiceName
	Frontends []Frontend // sorted by protocol, then address

	Status reconciler.Status
}

// Clone returns a shallow copy (the slices are never mutated).
func (s *Service) Clone() *Service { c := *s; return &c }

// Same says whether two Services want the same frontends (status aside).
func (s *Service) Same(o *Service) bool {
	return s.Name == o.Name && slices.EqualFunc(s.Frontends, o.Frontends, Frontend.Equal)
}

// TableHeader implements statedb.TableWritable.
func (*Service) TableHeader() []string { return []string{"Name", "Frontends", "Status"} }

// TableRow implements statedb.TableWritable.
func (s *Service) TableRow() []string {
	fes := make([]string, len(s.Frontends))
	for i, f := range s.Frontends {
		fes[i] = fmt.Sprintf("%s/%s (%d backends)", f.Protocol, f.Addr, len(f.Backends))
		if f.NodePort != 0 {
			fes[i] += " NodePort " + strconv.Itoa(int(f.NodePort))
		}
	}
	return []string{s.Name.String(), strings.Join(fes, ", "), s.Status.String()}
}

// GetStatus gives the reconciler the Service's status.
func (s *Service) GetStatus() reconciler.Status { return s.Status }

// SetStatus sets the status on s (a clone the reconciler made) and returns it.
func (s *Service) SetStatus(st reconciler.Status) *Service { s.Status = st; return s }

// ServiceByName is the primary index: "namespace/name".
var ServiceByName = statedb.Index[*Service, ServiceName]{
	Name:       "name",
	FromObject: func(s *Service) index.KeySet { return index.NewKeySet(index.String(s.Name.String())) },
	FromKey:    func(n ServiceName) index.Key { return index.String(n.String()) },
	FromString: index.FromString,
	Unique:     true,
}
