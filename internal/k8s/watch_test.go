package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"glia.dev/glia/internal/state"
)

func ptr[T any](v T) *T { return &v }

// equateNetip compares netip values by ==, and objects without their
// reconciliation status.
var equateNetip = cmp.Options{cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{}), cmpopts.IgnoreTypes(reconciler.Status{})}

func svc(name, clusterIP string, typ corev1.ServiceType, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: clusterIP, Type: typ, Ports: ports},
	}
}

func newSlice(name, svcName string, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func ep(node string, ready, terminating *bool, addrs ...string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready, Terminating: terminating}}
	if node != "" {
		e.NodeName = ptr(node)
	}
	return e
}

func tcpPort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(port)}
}

func be(addrPort, node string, ready, terminating bool) state.Backend {
	return state.Backend{Addr: netip.MustParseAddrPort(addrPort), NodeName: node, Ready: ready, Terminating: terminating}
}

// wantPort is one frontend of a Service as the tests spell it.
type wantPort struct {
	Namespace, Name, PortName, Protocol string
	Frontend                            netip.AddrPort
	NodePort                            uint16
	SessionAffinity                     bool
	Backends                            []state.Backend
}

// group turns the ports of one Service into the Service (nil: none).
func group(ps []wantPort) *state.Service {
	if len(ps) == 0 {
		return nil
	}
	s := &state.Service{Name: state.ServiceName{Namespace: ps[0].Namespace, Name: ps[0].Name}}
	for _, p := range ps {
		s.Frontends = append(s.Frontends, state.Frontend{PortName: p.PortName, Protocol: p.Protocol, Addr: p.Frontend,
			NodePort: p.NodePort, SessionAffinity: p.SessionAffinity, Backends: p.Backends})
	}
	return s
}

func TestTranslateService(t *testing.T) {
	http := corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}
	unnamed := corev1.ServicePort{Protocol: corev1.ProtocolTCP, Port: 80}
	tests := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   []wantPort
	}{{
		name: "ClusterIP with named port",
		svc:  svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, http),
		slices: []*discoveryv1.EndpointSlice{newSlice("web-1", "web", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{tcpPort("http", 8080)},
			ep("n2", ptr(true), nil, "198.19.2.5"), ep("n1", ptr(true), ptr(false), "198.19.1.5"))},
		want: []wantPort{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80"),
			Backends: []state.Backend{be("198.19.1.5:8080", "n1", true, false), be("198.19.2.5:8080", "n2", true, false)}}},
	}, {
		name: "unnamed port matches a slice port named empty or unnamed",
		svc:  svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, unnamed),
		slices: []*discoveryv1.EndpointSlice{
			newSlice("web-1", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("", 8080)}, ep("n1", nil, nil, "198.19.1.5")),
			newSlice("web-2", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Port: ptr(int32(8081))}}, ep("n1", nil, nil, "198.19.1.6")),
			newSlice("web-3", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("other", 9)}, ep("n1", nil, nil, "198.19.1.7")),
		},
		want: []wantPort{{Namespace: "default", Name: "web", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80"),
			Backends: []state.Backend{be("198.19.1.5:8080", "n1", true, false), be("198.19.1.6:8081", "n1", true, false)}}},
	}, {
		name:   "headless",
		svc:    svc("db", corev1.ClusterIPNone, corev1.ServiceTypeClusterIP, http),
		slices: []*discoveryv1.EndpointSlice{newSlice("db-1", "db", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 80)}, ep("n1", nil, nil, "198.19.1.5"))},
		want:   nil,
	}, {
		name: "no ClusterIP (ExternalName)",
		svc:  svc("ext", "", corev1.ServiceTypeExternalName, http),
		want: nil,
	}, {
		name: "IPv6 ClusterIP",
		svc:  svc("v6", "fd00::1", corev1.ServiceTypeClusterIP, http),
		want: nil,
	}, {
		name: "NodePort",
		svc: func() *corev1.Service {
			p := http
			p.NodePort = 30080
			return svc("web", "198.18.128.20", corev1.ServiceTypeNodePort, p)
		}(),
		want: []wantPort{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80"), NodePort: 30080}},
	}, {
		name: "ClusterIP ignores a stray nodePort",
		svc: func() *corev1.Service {
			p := http
			p.NodePort = 30080
			return svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, p)
		}(),
		want: []wantPort{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80")}},
	}, {
		name: "session affinity ClientIP",
		svc: func() *corev1.Service {
			s := svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, http)
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			return s
		}(),
		want: []wantPort{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80"), SessionAffinity: true}},
	}, {
		name: "multiple slices, not-ready and terminating endpoints, duplicates across slices",
		svc:  svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, http),
		slices: []*discoveryv1.EndpointSlice{
			newSlice("web-1", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)},
				ep("n1", ptr(false), nil, "198.19.1.5"),
				ep("n1", ptr(false), ptr(true), "198.19.1.6")),
			newSlice("web-2", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)},
				ep("n1", ptr(false), nil, "198.19.1.5"), // the same endpoint, listed twice while it moves
				ep("", ptr(true), nil, "198.19.3.7", "not-an-ip")),
		},
		want: []wantPort{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80"),
			Backends: []state.Backend{
				be("198.19.1.5:8080", "n1", false, false),
				be("198.19.1.6:8080", "n1", false, true),
				be("198.19.3.7:8080", "", true, false),
			}}},
	}, {
		name: "UDP and TCP on the same port number",
		svc: svc("dns", "198.18.128.10", corev1.ServiceTypeClusterIP,
			corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
			corev1.ServicePort{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53},
			corev1.ServicePort{Name: "sctp", Protocol: corev1.ProtocolSCTP, Port: 99}),
		slices: []*discoveryv1.EndpointSlice{newSlice("dns-1", "dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{
			{Name: ptr("dns"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr(int32(5353))},
			{Name: ptr("dns-tcp"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(5354))},
			{Name: ptr("sctp"), Protocol: ptr(corev1.ProtocolSCTP), Port: ptr(int32(99))},
		}, ep("n1", ptr(true), nil, "198.19.1.9"))},
		// Frontends are sorted by protocol, then address.
		want: []wantPort{{
			Namespace: "default", Name: "dns", PortName: "dns-tcp", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.10:53"),
			Backends: []state.Backend{be("198.19.1.9:5354", "n1", true, false)},
		}, {
			Namespace: "default", Name: "dns", PortName: "dns", Protocol: "UDP",
			Frontend: netip.MustParseAddrPort("198.18.128.10:53"),
			Backends: []state.Backend{be("198.19.1.9:5353", "n1", true, false)},
		}},
	}, {
		name: "slice port name matches but protocol differs",
		svc:  svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, http),
		slices: []*discoveryv1.EndpointSlice{newSlice("web-1", "web", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr(int32(8080))}},
			ep("n1", nil, nil, "198.19.1.5"))},
		want: []wantPort{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80")}},
	}, {
		name: "IPv6 and FQDN slices are ignored",
		svc:  svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, http),
		slices: []*discoveryv1.EndpointSlice{
			newSlice("web-v6", "web", discoveryv1.AddressTypeIPv6, []discoveryv1.EndpointPort{tcpPort("http", 8080)}, ep("n1", nil, nil, "fd00::5")),
			newSlice("web-fqdn", "web", discoveryv1.AddressTypeFQDN, []discoveryv1.EndpointPort{tcpPort("http", 8080)}, ep("n1", nil, nil, "example.test")),
			newSlice("web-v4", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)}, ep("n1", nil, nil, "198.19.1.5")),
		},
		want: []wantPort{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80"),
			Backends: []state.Backend{be("198.19.1.5:8080", "n1", true, false)}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := TranslateService(tt.svc, tt.slices)
			if diff := cmp.Diff(group(tt.want), got, equateNetip); diff != "" {
				t.Errorf("TranslateService (-want +got):\n%s", diff)
			}
		})
	}
}

func node(name, podCIDR string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR},
		Status:     corev1.NodeStatus{Addresses: addrs},
	}
}

func internalIP(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

// startWatcher starts a Watcher for lab-node-1 on a fake clientset holding objs.
func startWatcher(t testing.TB, withServices bool, objs ...runtime.Object) (*Watcher, *fake.Clientset) {
	t.Helper()
	tables, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(objs...)
	w := NewWatcher(slog.New(slog.DiscardHandler), &Clients{Kube: cs}, tables,
		WatcherConfig{LocalNode: "lab-node-1", Services: withServices, ServiceCIDR: netip.MustParsePrefix("198.18.128.0/17")}, NewAPIHealth())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		w.Stop()
	})
	if err := w.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return w, cs
}

func nodes(w *Watcher) []*state.Node {
	var out []*state.Node
	for n := range w.tables.Nodes.All(w.tables.DB.ReadTxn()) {
		out = append(out, n)
	}
	return out
}

func services(w *Watcher) []*state.Service {
	var out []*state.Service
	for s := range w.tables.Services.All(w.tables.DB.ReadTxn()) {
		out = append(out, s)
	}
	return out
}

// waitFor waits until cond holds of the tables, watching them change.
func waitFor(t *testing.T, w *Watcher, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		_, nw := w.tables.Nodes.AllWatch(w.tables.DB.ReadTxn())
		_, sw := w.tables.Services.AllWatch(w.tables.DB.ReadTxn())
		if cond() {
			return
		}
		select {
		case <-nw:
		case <-sw:
		case <-deadline:
			t.Fatal("the tables never got there")
		}
	}
}

func TestWatcherNodes(t *testing.T) {
	w, _ := startWatcher(t, false,
		node("lab-node-1", "198.19.1.0/24", internalIP("198.18.0.11")),
		node("lab-node-3", "198.19.3.0/24", corev1.NodeAddress{Type: corev1.NodeHostName, Address: "lab-node-3"}, internalIP("198.18.0.13")),
		node("lab-node-2", "198.19.2.0/24", internalIP("198.18.0.12")),
		node("no-cidr", "", internalIP("198.18.0.14")),
		node("no-address", "198.19.5.0/24"),
		node("v6-only", "198.19.6.0/24", internalIP("fd00::6")),
	)
	want := []*state.Node{
		{Name: "lab-node-1", IP: netip.MustParseAddr("198.18.0.11"), PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), Local: true},
		{Name: "lab-node-2", IP: netip.MustParseAddr("198.18.0.12"), PodCIDR: netip.MustParsePrefix("198.19.2.0/24")},
		{Name: "lab-node-3", IP: netip.MustParseAddr("198.18.0.13"), PodCIDR: netip.MustParsePrefix("198.19.3.0/24")},
		{Name: "no-address", PodCIDR: netip.MustParsePrefix("198.19.5.0/24")},
		{Name: "no-cidr", IP: netip.MustParseAddr("198.18.0.14")},
		{Name: "v6-only", PodCIDR: netip.MustParsePrefix("198.19.6.0/24")},
	}
	if diff := cmp.Diff(want, nodes(w), equateNetip); diff != "" {
		t.Errorf("nodes table (-want +got):\n%s", diff)
	}
	if init, _ := w.tables.Nodes.Initialized(w.tables.DB.ReadTxn()); !init {
		t.Error("nodes table not initialised after Start")
	}
	if n := w.tables.Services.NumObjects(w.tables.DB.ReadTxn()); n != 0 {
		t.Errorf("%d Services without the service informers", n)
	}
	// The informer keeps a slim copy: no labels, no conditions.
	n, _ := w.Node("lab-node-3")
	if len(n.Status.Addresses) != 1 || n.Labels != nil {
		t.Errorf("slim node = %+v", n)
	}
}

func TestWatcherServices(t *testing.T) {
	http := corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}
	web := svc("web", "198.18.128.20", corev1.ServiceTypeClusterIP, http)
	otherNS := svc("web", "198.18.128.21", corev1.ServiceTypeClusterIP, http)
	otherNS.Namespace = "prod"
	webSlice := newSlice("web-abc", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)}, ep("n1", ptr(true), nil, "198.19.1.5"))
	webSlice2 := newSlice("web-def", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)}, ep("n2", ptr(true), nil, "198.19.2.5"))
	webV6 := newSlice("web-v6", "web", discoveryv1.AddressTypeIPv6, []discoveryv1.EndpointPort{tcpPort("http", 8080)}, ep("n1", ptr(true), nil, "fd00::5"))
	prodSlice := newSlice("web-prod", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 9090)}, ep("n3", ptr(true), nil, "198.19.3.5"))
	prodSlice.Namespace = "prod"
	orphan := newSlice("orphan", "", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)}, ep("n1", ptr(true), nil, "198.19.1.99"))
	orphan.Labels = nil
	dns := svc("kube-dns", "198.18.128.10", corev1.ServiceTypeClusterIP,
		corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
		corev1.ServicePort{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53})
	headless := svc("db", corev1.ClusterIPNone, corev1.ServiceTypeClusterIP, http)
	outside := svc("far", "10.96.0.10", corev1.ServiceTypeClusterIP, http)

	w, _ := startWatcher(t, true, web, otherNS, webSlice, webSlice2, webV6, prodSlice, orphan, dns, headless, outside)
	want := []*state.Service{
		group([]wantPort{{Namespace: "default", Name: "far", PortName: "http", Protocol: "TCP", Frontend: netip.MustParseAddrPort("10.96.0.10:80")}}),
		group([]wantPort{{
			Namespace: "default", Name: "kube-dns", PortName: "dns-tcp", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.10:53"),
		}, {
			Namespace: "default", Name: "kube-dns", PortName: "dns", Protocol: "UDP",
			Frontend: netip.MustParseAddrPort("198.18.128.10:53"),
		}}),
		group([]wantPort{{
			Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.20:80"),
			Backends: []state.Backend{be("198.19.1.5:8080", "n1", true, false), be("198.19.2.5:8080", "n2", true, false)},
		}}),
		group([]wantPort{{
			Namespace: "prod", Name: "web", PortName: "http", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.21:80"),
			Backends: []state.Backend{be("198.19.3.5:9090", "n3", true, false)},
		}}),
	}
	if diff := cmp.Diff(want, services(w), equateNetip); diff != "" {
		t.Errorf("services table (-want +got):\n%s", diff)
	}
	if init, _ := w.tables.Services.Initialized(w.tables.DB.ReadTxn()); !init {
		t.Error("services table not initialised after Start")
	}
	if n := w.OutsideServiceCIDR(); n != 1 {
		t.Errorf("OutsideServiceCIDR = %d, want 1 (default/far)", n)
	}
}

// TestWatcherWritesOnlyChanges: a node status heartbeat writes nothing; an
// address change rewrites that node; a Service or EndpointSlice change
// rewrites only that Service.
func TestWatcherWritesOnlyChanges(t *testing.T) {
	n1 := node("lab-node-1", "198.19.1.0/24", internalIP("198.18.0.11"))
	w, cs := startWatcher(t, true, n1,
		svc("a", "198.18.128.20", corev1.ServiceTypeClusterIP, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}),
		svc("b", "198.18.128.21", corev1.ServiceTypeClusterIP, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}))
	ctx := context.Background()
	rev := func(get func(statedb.ReadTxn) (statedb.Revision, bool)) statedb.Revision {
		r, _ := get(w.tables.DB.ReadTxn())
		return r
	}
	nodeRev := func(txn statedb.ReadTxn) (statedb.Revision, bool) {
		_, r, ok := w.tables.Nodes.Get(txn, state.NodeByName.Query("lab-node-1"))
		return r, ok
	}
	svcRev := func(name string) func(statedb.ReadTxn) (statedb.Revision, bool) {
		return func(txn statedb.ReadTxn) (statedb.Revision, bool) {
			_, r, ok := w.tables.Services.Get(txn, state.ServiceByName.Query(state.ServiceName{Namespace: "default", Name: name}))
			return r, ok
		}
	}
	n0, a0, b0 := rev(nodeRev), rev(svcRev("a")), rev(svcRev("b"))

	// A heartbeat (condition time only) writes nothing...
	hb := n1.DeepCopy()
	hb.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, hb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// ... an address change does (after the heartbeat, in order).
	moved := hb.DeepCopy()
	moved.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.21"}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, func() bool { return rev(nodeRev) != n0 })
	n, _, _ := w.tables.Nodes.Get(w.tables.DB.ReadTxn(), state.NodeByName.Query("lab-node-1"))
	if n.IP != netip.MustParseAddr("198.18.0.21") {
		t.Fatalf("node after the address change: %+v", n)
	}
	// The node was written once: the heartbeat before it changed nothing.
	if changes := rev(nodeRev) - n0; changes != 1 {
		t.Errorf("node written %d times for one heartbeat and one address change, want 1", changes)
	}

	// An EndpointSlice of b: only b is rewritten, with its backend.
	ready := true
	port, proto, name := int32(8080), corev1.ProtocolTCP, "http"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "b-1", Labels: map[string]string{discoveryv1.LabelServiceName: "b"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"198.19.1.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, func() bool { return rev(svcRev("b")) != b0 })
	if rev(svcRev("a")) != a0 {
		t.Error("b's slice rewrote a")
	}
	b, _, _ := w.tables.Services.Get(w.tables.DB.ReadTxn(), state.ServiceByName.Query(state.ServiceName{Namespace: "default", Name: "b"}))
	if len(b.Frontends) != 1 || len(b.Frontends[0].Backends) != 1 {
		t.Fatalf("b after its slice = %+v, want one backend", b)
	}
	// Deleting a: gone from the table.
	if err := cs.CoreV1().Services("default").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, func() bool { _, ok := svcRev("a")(w.tables.DB.ReadTxn()); return !ok })
}

// BenchmarkWatcherServices is the first write of N Services (2 endpoints
// each) into the services table: what the agent's start costs.
func BenchmarkWatcherServices(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			http := corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}
			var objs []runtime.Object
			for i := range n {
				name := fmt.Sprintf("svc-%05d", i)
				ip := netip.AddrFrom4([4]byte{198, 18, 128 + byte(i>>8), byte(i)})
				objs = append(objs, svc(name, ip.String(), corev1.ServiceTypeClusterIP, http),
					newSlice(name+"-x", name, discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)},
						ep("n1", ptr(true), nil, "198.19.1.5"), ep("n2", ptr(true), nil, "198.19.2.5")))
			}
			w, _ := startWatcher(b, true, objs...)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				w.mu.Lock()
				w.synced = false // the next sync writes every Service
				w.mu.Unlock()
				w.syncServices()
				if got := w.tables.Services.NumObjects(w.tables.DB.ReadTxn()); got != n {
					b.Fatalf("%d Services, want %d", got, n)
				}
			}
		})
	}
}
