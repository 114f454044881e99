package noderunner

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestProbes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	c := &corev1.Container{Name: "web", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	r := &runner{sb: newFakeSandbox()}
	tests := []struct {
		name    string
		probe   corev1.ProbeHandler
		wantErr bool
	}{
		{"http ok by named port", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}, false},
		{"http 503", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/other", Port: intstr.FromInt32(int32(port))}}, true},
		{"http unknown port name", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("metrics")}}, true},
		{"tcp open", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}}, false},
		{"tcp closed", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(closedPort))}}, true},
		{"exec goes to the sandbox", corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, true},
		{"grpc refused", corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: int32(closedPort)}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The pod IP is where probes connect when the probe names no host.
			err := r.probe(context.Background(), c, &corev1.Probe{ProbeHandler: tt.probe}, "127.0.0.1", 1)
			if (err != nil) != tt.wantErr {
				t.Errorf("probe error = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestProberThresholds(t *testing.T) {
	up := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	fail := errors.New("fail")
	tests := []struct {
		name    string
		spec    corev1.Probe
		initial bool
		// outcomes, one per period; want is the result after each.
		outcomes []error
		want     []bool
	}{
		{"liveness fails after 3", corev1.Probe{}, true, []error{fail, fail, fail, nil}, []bool{true, true, false, true}},
		{"a success resets the failure run", corev1.Probe{}, true, []error{fail, fail, nil, fail, fail, fail}, []bool{true, true, true, true, true, false}},
		{"readiness needs successThreshold", corev1.Probe{SuccessThreshold: 2, FailureThreshold: 1}, false, []error{nil, fail, nil, nil, fail}, []bool{false, false, false, true, false}},
		{"failureThreshold 1", corev1.Probe{FailureThreshold: 1}, true, []error{fail}, []bool{false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			spec.PeriodSeconds = 5
			p := newProber(&spec, tt.initial, up)
			now := up
			for i, o := range tt.outcomes {
				if !p.due(now) {
					t.Fatalf("step %d: not due at +%s", i, now.Sub(up))
				}
				p.record(now, o)
				if p.result != tt.want[i] {
					t.Errorf("step %d (%v): result %t, want %t", i, o, p.result, tt.want[i])
				}
				if p.due(now.Add(4 * time.Second)) {
					t.Errorf("step %d: due again before the period", i)
				}
				now = now.Add(5 * time.Second)
			}
		})
	}
	// initialDelaySeconds counts from the container's start.
	p := newProber(&corev1.Probe{InitialDelaySeconds: 10}, true, up)
	if p.due(up.Add(9*time.Second)) || !p.due(up.Add(10*time.Second)) {
		t.Error("initialDelaySeconds not honoured")
	}
}

// grpcHealthServer answers grpc.health.v1.Health/Check over h2c with
// status for the service it is asked about.
func grpcHealthServer(t *testing.T, status map[string]byte) int {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		service := ""
		if len(b) > 7 && b[5] == 0x0a {
			service = string(b[7 : 7+int(b[6])])
		}
		st, ok := status[service]
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		if !ok {
			w.Header().Set("Grpc-Status", "5") // NOT_FOUND, trailers-only
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.Write([]byte{0, 0, 0, 0, 2, 0x08, st})
		w.Header().Set("Grpc-Status", "0")
	})
	srv := httptest.NewUnstartedServer(h2c.NewHandler(h, &http2.Server{}))
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

func TestGRPCProbe(t *testing.T) {
	port := grpcHealthServer(t, map[string]byte{"": 1, "db": 2})
	tests := []struct {
		service string
		wantErr string
	}{
		{"", ""},
		{"db", "NOT_SERVING"},
		{"other", "status 5"},
	}
	for _, tt := range tests {
		err := grpcProbe(context.Background(), "127.0.0.1", port, tt.service)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("service %q: %v, want %q", tt.service, err, tt.wantErr)
		}
	}
}
