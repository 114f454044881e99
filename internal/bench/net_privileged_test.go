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
			ans, _, err = connOnce(net.JoinHostPort(host, strconv.Itoa(portConn)), 0, time.Second, false)
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

	// Probes come from probe ports, measured connections from ephemeral
	// ones: the two never share a connection-tracking entry.
	var ln net.Listener
	if err := netnsDo(f.server.Path(), func() error {
		var err error
		ln, err = net.Listen("tcp4", ":9100")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ports := make(chan int, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ports <- c.RemoteAddr().(*net.TCPAddr).Port
			c.Write([]byte("probed\n"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	probe := net.JoinHostPort(host, "9100")
	if _, err := waitCarried(ctx, f.client.Path(), probe, map[string]bool{"probed": true}, time.Millisecond); err != nil {
		t.Fatalf("waitCarried: %v", err)
	}
	if p := <-ports; p < probePortMin || p >= probePortMax {
		t.Errorf("a probe came from port %d, outside [%d, %d)", p, probePortMin, probePortMax)
	}
	for len(ports) > 0 { // probes still in flight when the first answered
		<-ports
	}
	if _, err := connSeries(ctx, f.client.Path(), probe, 5, false); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if p := <-ports; p >= probePortMin && p < probePortMax {
			t.Errorf("a measured connection came from probe port %d", p)
		}
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
