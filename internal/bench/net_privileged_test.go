package bench

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestPrivilegedVethFloor runs every client glia bench has against the
// veth floor's server: two real namespaces joined by a veth pair.
func TestPrivilegedVethFloor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	f, err := newVethFloor()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			f.Close()
		}
	})
	paths := []string{f.client.Path(), f.server.Path()}
	host := floorServer.String()

	ans, err := func() (string, error) {
		var ans string
		err := netnsDo(f.client.Path(), func() error {
			var err error
			ans, _, err = connOnce(net.JoinHostPort(host, strconv.Itoa(portConn)), time.Second, false)
			return err
		})
		return ans, err
	}()
	if err != nil || trimLine(ans) != "veth-floor-server" {
		t.Fatalf("connOnce: answer %q, error %v; want the server's name", ans, err)
	}

	st, err := connSeries(context.Background(), f.client.Path(), net.JoinHostPort(host, strconv.Itoa(portConn)), 50, false)
	if err != nil || st.failed != 0 || len(st.lat) != 50 {
		t.Fatalf("connSeries: %d answered, %d failed, error %v; want 50, 0, nil", len(st.lat), st.failed, err)
	}

	rate, err := rr(f.client.Path(), net.JoinHostPort(host, strconv.Itoa(portRR)), 200*time.Millisecond)
	if err != nil || rate <= 0 {
		t.Fatalf("rr: %.0f trans/s, error %v", rate, err)
	}
	t.Logf("veth floor: RR %.0f trans/s", rate)
	gbps, err := stream(f.client.Path(), net.JoinHostPort(host, strconv.Itoa(portStream)), 200*time.Millisecond)
	if err != nil || gbps <= 0 {
		t.Fatalf("stream: %.2f Gbit/s, error %v", gbps, err)
	}

	// Nothing answers from outside the floor's namespaces.
	if _, err := rr(f.client.Path(), net.JoinHostPort("198.19.254.3", strconv.Itoa(portRR)), 50*time.Millisecond); err == nil {
		t.Fatal("rr to an address nobody holds succeeded")
	}

	closed = true
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after Close (%v)", p, err)
		}
	}
}
