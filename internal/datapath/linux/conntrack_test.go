package linux

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestCTFlowNAT(t *testing.T) {
	for _, tc := range []struct {
		name       string
		f          CTFlow
		snat, dnat string
	}{
		{"masquerade", CTFlow{Proto: unix.IPPROTO_TCP,
			Orig:  Tuple{ap("198.19.1.10:40000"), ap("198.18.64.10:80")},
			Reply: Tuple{ap("198.18.64.10:80"), ap("198.18.0.11:40000")}}, "198.18.0.11:40000", ""},
		{"service", CTFlow{Proto: unix.IPPROTO_UDP,
			Orig:  Tuple{ap("198.19.1.10:40000"), ap("198.18.128.10:53")},
			Reply: Tuple{ap("198.19.2.5:5353"), ap("198.19.1.10:40000")}}, "", "198.19.2.5:5353"},
		{"nodeport to a remote backend", CTFlow{Proto: unix.IPPROTO_TCP,
			Orig:  Tuple{ap("198.18.64.10:5000"), ap("198.18.0.11:30080")},
			Reply: Tuple{ap("198.19.2.5:8080"), ap("198.18.0.11:51000")}}, "198.18.0.11:51000", "198.19.2.5:8080"},
		{"plain", CTFlow{Proto: unix.IPPROTO_TCP,
			Orig:  Tuple{ap("198.18.0.12:5000"), ap("198.19.1.10:80")},
			Reply: Tuple{ap("198.19.1.10:80"), ap("198.18.0.12:5000")}}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, sok := tc.f.SNAT()
			d, dok := tc.f.DNAT()
			if got := map[bool]string{true: s.String()}[sok]; got != tc.snat {
				t.Errorf("SNAT %q, want %q", got, tc.snat)
			}
			if got := map[bool]string{true: d.String()}[dok]; got != tc.dnat {
				t.Errorf("DNAT %q, want %q", got, tc.dnat)
			}
		})
	}
}

// The kernel takes what ConntrackCreate writes as a translated flow: the
// dump shows the reply tuple its NAT core derived, a second create of the
// same flow is refused as existing, and delete removes it.
func TestPrivilegedConntrack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); testutils.UnmountNS(n) })
	flows := []CTFlow{
		{Proto: unix.IPPROTO_TCP, Orig: Tuple{ap("198.19.1.10:40000"), ap("198.18.64.10:80")},
			Reply: Tuple{ap("198.18.64.10:80"), ap("198.18.0.11:51234")}, Timeout: 600},
		{Proto: unix.IPPROTO_UDP, Orig: Tuple{ap("198.19.1.10:40001"), ap("198.18.128.10:53")},
			Reply: Tuple{ap("198.19.2.5:5353"), ap("198.19.1.10:40001")}, Timeout: 100},
		{Proto: unix.IPPROTO_TCP, Orig: Tuple{ap("198.18.64.10:5000"), ap("198.18.0.11:30080")},
			Reply: Tuple{ap("198.19.2.5:8080"), ap("198.18.0.11:52000")}, Timeout: 600},
		{Proto: unix.IPPROTO_TCP, Orig: Tuple{ap("198.18.0.12:5000"), ap("198.19.1.10:80")},
			Reply: Tuple{ap("198.19.1.10:80"), ap("198.18.0.12:5000")}, Timeout: 600},
	}
	err = n.Do(func(ns.NetNS) error {
		for _, f := range flows {
			if err := ConntrackCreate(f); err != nil {
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
					t.Skipf("no ctnetlink NAT in this kernel: %v", err)
				}
				t.Fatalf("create %s: %v", f, err)
			}
		}
		got, err := ConntrackList()
		if err != nil {
			return err
		}
		byOrig := map[Tuple]CTFlow{}
		for _, f := range got {
			byOrig[f.Orig] = f
		}
		for _, want := range flows {
			have, ok := byOrig[want.Orig]
			if !ok {
				t.Errorf("%s not in the dump %v", want, got)
				continue
			}
			if want.Reply != have.Reply {
				t.Errorf("%s: reply tuple %s, want %s", want, have.Reply, want.Reply)
			}
			if want.Proto == unix.IPPROTO_TCP && have.TCPState != nl.TCP_CONNTRACK_ESTABLISHED {
				t.Errorf("%s: TCP state %d, want ESTABLISHED", want, have.TCPState)
			}
			if !have.Established() {
				t.Errorf("%s: not established", have)
			}
		}
		if err := ConntrackCreate(flows[0]); !errors.Is(err, ErrConntrackExists) {
			t.Errorf("second create: %v, want ErrConntrackExists", err)
		}
		for _, f := range flows {
			if err := ConntrackDelete(f.Proto, f.Orig); err != nil {
				t.Error(err)
			}
		}
		if err := ConntrackDelete(flows[0].Proto, flows[0].Orig); err != nil {
			t.Errorf("delete of a missing entry: %v", err)
		}
		got, err = ConntrackList()
		if len(got) != 0 {
			t.Errorf("entries left after delete: %v", got)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
