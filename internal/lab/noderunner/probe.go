package noderunner

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeState tracks one container's readiness.
type probeState struct {
	ready     bool
	successes int
	failures  int
	lastRun   time.Time
}

// runProbes runs the readiness probes that are due.
func (w *podWorker) runProbes(ctx context.Context, pod *corev1.Pod) {
	now := w.r.now()
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		p, running := w.procs[c.Name]
		ps := w.probes[c.Name]
		cs := w.findState(c.Name)
		if !running || ps == nil || cs == nil {
			continue
		}
		pr := c.ReadinessProbe
		if pr == nil {
			ps.ready = true
			continue
		}
		if now.Before(cs.StartedAt.Add(time.Duration(pr.InitialDelaySeconds) * time.Second)) {
			continue
		}
		period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
		if pr.PeriodSeconds == 0 {
			period = 10 * time.Second
		}
		if !ps.lastRun.IsZero() && now.Sub(ps.lastRun) < period {
			continue
		}
		ps.lastRun = now
		err := w.r.probe(ctx, c, pr, w.podIP(w.st), p.PID())
		was := ps.ready
		if err == nil {
			ps.failures = 0
			ps.successes++
			if ps.successes >= int(max(pr.SuccessThreshold, 1)) {
				ps.ready = true
			}
		} else {
			ps.successes = 0
			ps.failures++
			threshold := int(pr.FailureThreshold)
			if threshold == 0 {
				threshold = 3
			}
			if !ps.ready || ps.failures >= threshold {
				ps.ready = false
			}
		}
		if was != ps.ready {
			w.log.Info("container readiness changed", "container", c.Name, "ready", ps.ready, "probe_err", err)
		}
	}
}

// probe runs one readiness probe against a container: HTTP and TCP probes
// connect to the pod IP from the node (as the kubelet does), exec probes
// run inside the container's namespaces.
func (r *runner) probe(ctx context.Context, c *corev1.Container, pr *corev1.Probe, podIP string, pid int) error {
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case pr.Exec != nil:
		_, err := r.sb.Exec(ctx, pid, pr.Exec.Command)
		return err
	case pr.HTTPGet != nil:
		return httpProbe(ctx, c, pr.HTTPGet, podIP)
	case pr.TCPSocket != nil:
		host := pr.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		port, err := resolvePort(pr.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("tcp probe: %w", err)
		}
		return conn.Close()
	case pr.GRPC != nil:
		return fmt.Errorf("grpc probes are not supported by the lab node runner")
	}
	return nil
}

func httpProbe(ctx context.Context, c *corev1.Container, g *corev1.HTTPGetAction, podIP string) error {
	host := g.Host
	if host == "" {
		host = podIP
	}
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return err
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: g.Path}
	if u.Path == "" {
		u.Path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	for _, h := range g.HTTPHeaders {
		if h.Name == "Host" {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet's prober
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http probe: %s returned %d", u.String(), resp.StatusCode)
	}
	return nil
}

func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("probe port %q is not a container port of %s", p.StrVal, c.Name)
}
