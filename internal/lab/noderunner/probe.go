package noderunner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prober is one probe of one container, as kubelet's prober worker: it runs
// every periodSeconds once initialDelaySeconds passed since the container
// started, and its result flips only after successThreshold consecutive
// successes or failureThreshold consecutive failures.
type prober struct {
	spec        *corev1.Probe
	containerUp time.Time
	result      bool
	lastRaw     bool
	resultRun   int
	lastRun     time.Time
	lastErr     error
}

func newProber(spec *corev1.Probe, initial bool, containerUp time.Time) *prober {
	return &prober{spec: spec, result: initial, containerUp: containerUp}
}

func (p *prober) period() time.Duration {
	if p.spec.PeriodSeconds <= 0 {
		return 10 * time.Second
	}
	return time.Duration(p.spec.PeriodSeconds) * time.Second
}

func (p *prober) successThreshold() int { return int(max(p.spec.SuccessThreshold, 1)) }

func (p *prober) failureThreshold() int {
	if p.spec.FailureThreshold <= 0 {
		return 3
	}
	return int(p.spec.FailureThreshold)
}

// due reports whether the probe should run at now.
func (p *prober) due(now time.Time) bool {
	if now.Before(p.containerUp.Add(time.Duration(p.spec.InitialDelaySeconds) * time.Second)) {
		return false
	}
	return p.lastRun.IsZero() || now.Sub(p.lastRun) >= p.period()
}

// record adds one probe outcome; it reports whether the result changed.
func (p *prober) record(now time.Time, err error) bool {
	ok := err == nil
	p.lastRun, p.lastErr = now, err
	if p.resultRun > 0 && ok == p.lastRaw {
		p.resultRun++
	} else {
		p.lastRaw, p.resultRun = ok, 1
	}
	threshold := p.failureThreshold()
	if ok {
		threshold = p.successThreshold()
	}
	if p.resultRun < threshold || ok == p.result {
		return false
	}
	p.result = ok
	return true
}

// probeState is one running container's probes.
type probeState struct {
	// started: the startup probe succeeded (or there is none); ready: the
	// readiness probe passes (or there is none) and the container started.
	started, ready bool
	startup        *prober
	liveness       *prober
	readiness      *prober
	// killing is set once a liveness or startup probe failed: the
	// container is being stopped (SIGKILL at killDeadline) and restarted
	// per the pod's restartPolicy; its probes are on hold.
	killing      bool
	killDeadline time.Time
}

// newProbeState sets up c's probes for a container started at up: liveness
// starts as success, readiness as failure, startup as not started.
func newProbeState(c *corev1.Container, up time.Time) *probeState {
	ps := &probeState{}
	if c.StartupProbe != nil {
		ps.startup = newProber(c.StartupProbe, false, up)
	} else {
		ps.started = true
	}
	if c.LivenessProbe != nil {
		ps.liveness = newProber(c.LivenessProbe, true, up)
	}
	if c.ReadinessProbe != nil {
		ps.readiness = newProber(c.ReadinessProbe, false, up)
	}
	return ps
}

// runProbes runs the startup, liveness and readiness probes that are due;
// a failed startup or liveness probe stops the container, which is then
// restarted per the pod's restartPolicy.
func (w *podWorker) runProbes(ctx context.Context, pod *corev1.Pod) {
	now := w.r.now()
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		p, running := w.procs[c.Name]
		ps := w.probes[c.Name]
		if !running || ps == nil {
			continue
		}
		if ps.killing {
			if now.After(ps.killDeadline) {
				signalContainer(p, syscall.SIGKILL)
			}
			continue
		}
		run := func(pr *prober) bool {
			return pr.record(now, w.r.probe(ctx, c, pr.spec, w.podIP(w.st), p.PID()))
		}
		if !ps.started {
			if ps.startup.due(now) && run(ps.startup) {
				if ps.startup.result {
					ps.started = true
					w.log.Info("container started (startup probe succeeded)", "container", c.Name)
				}
			}
			if !ps.started && ps.startup.resultRun >= ps.startup.failureThreshold() && !ps.startup.lastRaw {
				w.killContainer(pod, c, p, ps, "startup", ps.startup)
				continue
			}
			if !ps.started {
				ps.ready = false
				continue
			}
		}
		if ps.liveness != nil && ps.liveness.due(now) && run(ps.liveness) && !ps.liveness.result {
			w.killContainer(pod, c, p, ps, "liveness", ps.liveness)
			continue
		}
		was := ps.ready
		switch {
		case ps.readiness == nil:
			ps.ready = true
		case ps.readiness.due(now):
			run(ps.readiness)
			ps.ready = ps.readiness.result
		}
		if was != ps.ready {
			var err error
			if ps.readiness != nil {
				err = ps.readiness.lastErr
			}
			w.log.Info("container readiness changed", "container", c.Name, "ready", ps.ready, "probe_err", err)
		}
	}
}

// killContainer stops a container whose startup or liveness probe failed:
// SIGTERM to its process group now, SIGKILL after the grace period (the
// probe's terminationGracePeriodSeconds, else the pod's).
func (w *podWorker) killContainer(pod *corev1.Pod, c *corev1.Container, p Process, ps *probeState, kind string, pr *prober) {
	grace := w.gracePeriod(pod)
	if pr.spec.TerminationGracePeriodSeconds != nil {
		grace = min(time.Duration(*pr.spec.TerminationGracePeriodSeconds)*time.Second, w.r.maxGrace)
	}
	ps.killing, ps.ready = true, false
	ps.killDeadline = w.r.now().Add(grace)
	w.log.Info(fmt.Sprintf("container %s failed %s probe, will be restarted", c.Name, kind), "container", c.Name, "probe_err", pr.lastErr, "grace", grace)
	signalContainer(p, syscall.SIGTERM)
}

// groupSignaler is a process whose whole process group (the container's
// session) can be signalled.
type groupSignaler interface {
	SignalGroup(sig syscall.Signal) error
}

func signalContainer(p Process, sig syscall.Signal) {
	if g, ok := p.(groupSignaler); ok {
		g.SignalGroup(sig)
		return
	}
	p.Signal(sig)
}

// probe runs one probe against a container: HTTP, TCP and gRPC probes
// connect from the node's network namespace (where the runner runs) to the
// pod IP, or to the host the probe names; exec probes run inside the
// container's namespaces.
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
		service := ""
		if pr.GRPC.Service != nil {
			service = *pr.GRPC.Service
		}
		return grpcProbe(ctx, podIP, int(pr.GRPC.Port), service)
	}
	return errors.New("probe has no handler")
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
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if pu, err := url.Parse(g.Path); err == nil {
		u.Path, u.RawQuery = pu.Path, pu.RawQuery
	} else {
		u.Path = g.Path
	}
	if u.Path == "" {
		u.Path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if http.CanonicalHeaderKey(h.Name) == "Host" {
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
		// As kubelet: follow redirects to the same host (at most 10); a
		// redirect elsewhere counts as success without being followed.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if req.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
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
