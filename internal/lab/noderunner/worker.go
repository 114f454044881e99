package noderunner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"glia.dev/glia/internal/lab/images"
	"glia.dev/glia/internal/lab/podinit"
)

type waitReason struct{ reason, message string }

type exitEvent struct {
	name string
	p    Process
}

// podWorker owns one pod's lifecycle: sandbox, containers, probes, status
// and teardown. Only its own goroutine touches its fields, except pod/gone
// (guarded by mu) which informer events update.
type podWorker struct {
	r   *runner
	uid types.UID
	log *slog.Logger

	mu     sync.Mutex
	pod    *corev1.Pod
	gone   bool
	notify chan struct{}
	quit   chan struct{}

	st           *PodState
	firstSeen    time.Time
	exits        chan exitEvent
	procs        map[string]Process
	probes       map[string]*probeState
	restarts     map[string]time.Time
	crashes      map[string]int
	waiting      map[string]waitReason
	sandboxErr   string
	sandboxRetry time.Time
	sandboxFails int
	terminal     bool
	lastStatus   *corev1.PodStatus
	podVolumes   // the pod's volumes (volumes.go)
}

func (w *podWorker) update(pod *corev1.Pod, deleted bool) {
	w.mu.Lock()
	if pod != nil {
		w.pod = pod
	}
	if deleted {
		w.gone = true
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) snapshot() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.gone
}

func (w *podWorker) deleting() bool {
	pod, gone := w.snapshot()
	return gone || pod == nil || pod.DeletionTimestamp != nil
}

func (w *podWorker) run(ctx context.Context) {
	w.quit = make(chan struct{})
	defer close(w.quit)
	select {
	case <-ctx.Done():
		return
	case <-w.notify:
	}
	pod, _ := w.snapshot()
	switch {
	case pod != nil:
		w.log = w.r.log.With("pod", podKey(pod.Namespace, pod.Name), "uid", w.uid)
	case w.st != nil:
		w.log = w.r.log.With("pod", podKey(w.st.Namespace, w.st.Name), "uid", w.uid)
	default:
		return
	}
	w.firstSeen = w.r.now()
	if w.st != nil {
		w.firstSeen = w.st.CreatedAt
		w.adopt(ctx)
	}
	t := time.NewTicker(w.r.tick)
	defer t.Stop()
	for {
		if w.deleting() {
			w.terminate(ctx)
			return
		}
		w.sync(ctx)
		w.pushStatus(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
		case ev := <-w.exits:
			w.handleExit(ev)
		case <-t.C:
		}
	}
}

// adopt re-attaches the processes of a pod started by an earlier runner.
func (w *podWorker) adopt(ctx context.Context) {
	st := w.st
	pod, _ := w.snapshot()
	if !st.TornDown {
		if err := w.r.sb.Check(ctx, st); err != nil {
			w.log.Warn("adopted pod's network check failed; keeping it as is", "err", err)
		}
	}
	for i := range st.Containers {
		cs := &st.Containers[i]
		if cs.Done || cs.PID == 0 {
			continue
		}
		p, err := w.r.sb.Adopt(st, *cs)
		if err != nil {
			w.log.Info("container process ended while the runner was down", "container", cs.Name, "pid", cs.PID, "err", err)
			p = exitedProcess{pid: cs.PID, startTime: cs.StartTime}
		} else {
			w.log.Info("container re-adopted", "container", cs.Name, "pid", cs.PID)
		}
		w.procs[cs.Name] = p
		ps := &probeState{started: true}
		// Keep the readiness the API has, so a runner restart does not
		// flip a ready pod to not ready; the probes go on from there.
		if pod != nil {
			for _, c := range allContainers(pod) {
				if c.Name == cs.Name {
					ps = newProbeState(c, cs.StartedAt)
					ps.started = true
				}
			}
			for _, s := range pod.Status.ContainerStatuses {
				if s.Name == cs.Name && s.Ready {
					ps.ready = true
					if ps.readiness != nil {
						ps.readiness.result = true
					}
				}
			}
		}
		w.probes[cs.Name] = ps
		w.watch(cs.Name, p)
	}
	w.terminal = st.Terminal
}

// exitedProcess stands for a container process found dead on adoption.
type exitedProcess struct {
	pid       int
	startTime uint64
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (p exitedProcess) PID() int                      { return p.pid }
func (p exitedProcess) StartTime() uint64             { return p.startTime }
func (p exitedProcess) Done() <-chan struct{}         { return closedChan }
func (p exitedProcess) ExitCode() int                 { return -1 }
func (p exitedProcess) Signal(_ syscall.Signal) error { return nil }

func (w *podWorker) watch(name string, p Process) {
	go func() {
		select {
		case <-p.Done():
		case <-w.quit:
			return
		}
		select {
		case w.exits <- exitEvent{name: name, p: p}:
		case <-w.quit:
		}
	}()
}

func (w *podWorker) containerState(name string, init bool) *ContainerState {
	for i := range w.st.Containers {
		if w.st.Containers[i].Name == name {
			return &w.st.Containers[i]
		}
	}
	w.st.Containers = append(w.st.Containers, ContainerState{Name: name, Init: init})
	return &w.st.Containers[len(w.st.Containers)-1]
}

func (w *podWorker) findState(name string) *ContainerState {
	if w.st == nil {
		return nil
	}
	for i := range w.st.Containers {
		if w.st.Containers[i].Name == name {
			return &w.st.Containers[i]
		}
	}
	return nil
}

func (w *podWorker) save() {
	if err := w.r.store.Save(w.st); err != nil {
		w.log.Error("persist pod state", "err", err)
	}
}

// sync drives the pod toward running: sandbox, init containers in order,
// then the containers, restarts when due, and readiness probes.
func (w *podWorker) sync(ctx context.Context) {
	pod, _ := w.snapshot()
	if pod == nil {
		return
	}
	now := w.r.now()
	if w.st == nil {
		if !w.checkImages(pod) {
			return
		}
		if now.Before(w.sandboxRetry) {
			return
		}
		if err := w.prepare(ctx, pod); err != nil {
			w.sandboxFails++
			delay := backoff(w.sandboxFails)
			w.sandboxRetry = now.Add(delay)
			msg := "failed to create pod sandbox: " + err.Error()
			var ve volumeError
			if errors.As(err, &ve) {
				msg = err.Error()
			}
			if msg != w.sandboxErr {
				w.log.Warn("pod sandbox", "err", err, "retry_in", delay)
			}
			w.sandboxErr = msg
			return
		}
		w.sandboxErr = ""
		w.log.Info("pod sandbox ready", "ips", w.st.PodIPs, "netns", w.st.NetNSPath)
	}
	if w.terminal {
		return
	}
	if !w.syncVolumes(ctx, pod) {
		return
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := w.findState(c.Name)
		if cs != nil && cs.Done {
			continue
		}
		if _, running := w.procs[c.Name]; !running && !now.Before(w.restarts[c.Name]) {
			w.start(ctx, pod, c, true)
		}
		return // init containers run one at a time, in order
	}
	stopped := stoppedContainers(pod)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := w.findState(c.Name)
		if cs != nil && cs.Done {
			continue
		}
		p, running := w.procs[c.Name]
		if stopped[c.Name] {
			if running {
				w.log.Info("stopping container: the pod's annotation keeps it stopped", "container", c.Name, "annotation", StoppedContainersAnnotation)
				p.Signal(syscall.SIGTERM)
			} else {
				w.waiting[c.Name] = waitReason{"Stopped", "kept stopped by annotation " + StoppedContainersAnnotation}
			}
			continue
		}
		if !running && !now.Before(w.restarts[c.Name]) {
			w.start(ctx, pod, c, false)
		}
	}
	if w.allDone(pod) {
		w.finish(ctx, pod)
		return
	}
	w.runProbes(ctx, pod)
}

// checkImages resolves every container image; containers that cannot run
// are marked ErrImagePull and the sandbox is not created.
func (w *podWorker) checkImages(pod *corev1.Pod) bool {
	ok := true
	for _, c := range allContainers(pod) {
		plan, err := images.Resolve(catalogContainer(c))
		if err == nil {
			_, err = plan.HostFiles(w.r.imageBin)
		}
		if err != nil {
			w.waiting[c.Name] = waitReason{"ErrImagePull", err.Error()}
			ok = false
		}
	}
	return ok
}

func allContainers(pod *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

func catalogContainer(c *corev1.Container) images.Container {
	ic := images.Container{Image: c.Image, Command: c.Command, Args: c.Args}
	for _, p := range c.Ports {
		ic.Ports = append(ic.Ports, int(p.ContainerPort))
	}
	return ic
}

func backoff(failures int) time.Duration {
	if failures < 1 {
		failures = 1
	}
	d := time.Second << min(failures-1, 4)
	return min(d, 10*time.Second)
}

// prepare creates the pod's sandbox and files and persists the pod.
func (w *podWorker) prepare(ctx context.Context, pod *corev1.Pod) error {
	st := &PodState{
		UID:         string(pod.UID),
		Namespace:   pod.Namespace,
		Name:        pod.Name,
		HostNetwork: pod.Spec.HostNetwork,
		SandboxID:   newID(),
		Dir:         filepath.Join(podDataDir(w.r.cfg.StateDir), string(pod.UID)),
		CreatedAt:   w.firstSeen,
	}
	if err := os.MkdirAll(st.Dir, 0o755); err != nil {
		return fmt.Errorf("create pod dir: %w", err)
	}
	// Persist before touching the kernel, so a crash in between leaves a
	// state the next runner tears down.
	if err := w.r.store.Save(st); err != nil {
		return err
	}
	// Volumes first, as kubelet: a pod whose volumes cannot be set up
	// gets no sandbox.
	vols, err := w.setupVolumes(ctx, pod, st)
	if err != nil {
		w.r.mounter.UnmountUnder(filepath.Join(st.Dir, "volumes"))
		w.r.tokens.forget(pod.UID)
		w.r.store.Delete(st.UID)
		os.RemoveAll(st.Dir)
		return err
	}
	if err := w.r.sb.Prepare(ctx, st); err != nil {
		w.r.mounter.UnmountUnder(filepath.Join(st.Dir, "volumes"))
		if terr := w.r.sb.Teardown(ctx, st); terr != nil {
			w.log.Warn("clean up failed sandbox", "err", terr)
		} else {
			w.r.store.Delete(st.UID)
			os.RemoveAll(st.Dir)
		}
		return err
	}
	if err := writePodFiles(st, pod, w.r.cfg, w.podIP(st)); err != nil {
		return err
	}
	w.st = st
	w.setVolumes(vols)
	w.save()
	return nil
}

func (w *podWorker) podIP(st *PodState) string {
	if st != nil && st.HostNetwork {
		return w.r.cfg.NodeIP
	}
	if st != nil && len(st.PodIPs) > 0 {
		return st.PodIPs[0]
	}
	return ""
}

func writePodFiles(st *PodState, pod *corev1.Pod, cfg Config, podIP string) error {
	files := map[string]string{
		"hostname": podHostnameFor(pod, cfg) + "\n",
	}
	if rc, ok := ResolvConf(pod, cfg.ClusterDNS, cfg.ClusterDomain); ok {
		files["resolv.conf"] = rc
	}
	if !pod.Spec.HostNetwork {
		files["hosts"] = HostsFile(pod, podIP, cfg.ClusterDomain)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(st.Dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write pod %s: %w", name, err)
		}
	}
	return nil
}

func podHostnameFor(pod *corev1.Pod, cfg Config) string {
	if pod.Spec.HostNetwork {
		return cfg.Node
	}
	return PodHostname(pod)
}

func (w *podWorker) initOptions(pod *corev1.Pod, c *corev1.Container, argv []string) podinit.Options {
	o := podinit.Options{
		Hostname:     podHostnameFor(pod, w.r.cfg),
		HostnameFile: filepath.Join(w.st.Dir, "hostname"),
		Argv:         argv,
	}
	if p := filepath.Join(w.st.Dir, "resolv.conf"); fileExists(p) {
		o.ResolvConf = p
	}
	if p := filepath.Join(w.st.Dir, "hosts"); fileExists(p) {
		o.Hosts = p
	}
	if c.WorkingDir != "" && fileExists(c.WorkingDir) {
		o.Dir = c.WorkingDir
	}
	return o
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// start starts (or restarts) one container.
func (w *podWorker) start(ctx context.Context, pod *corev1.Pod, c *corev1.Container, init bool) {
	now := w.r.now()
	fail := func(reason string, err error) {
		w.crashes[c.Name]++
		delay := backoff(w.crashes[c.Name])
		w.restarts[c.Name] = now.Add(delay)
		w.waiting[c.Name] = waitReason{reason, err.Error()}
		w.log.Warn("start container", "container", c.Name, "reason", reason, "err", err, "retry_in", delay)
	}
	spec, err := w.launchSpec(ctx, pod, c)
	if err != nil {
		var se startError
		errors.As(err, &se)
		fail(se.reason, err)
		return
	}
	argv := spec.argv
	cs := w.containerState(c.Name, init)
	logPath := LogPath(w.r.cfg.StateDir, pod.Namespace, pod.Name, c.Name)
	cio := ContainerIO{LogPath: logPath, Restart: !cs.StartedAt.IsZero(), Stdin: c.Stdin, StdinOnce: c.StdinOnce, TTY: c.TTY,
		AttachSocket: AttachSocketPath(w.st.Dir, c.Name)}
	p, err := w.r.sb.Start(ctx, w.st, spec.opts, spec.env, cio)
	if err != nil {
		fail("RunContainerError", err)
		return
	}
	if !cs.StartedAt.IsZero() {
		cs.RestartCount++
	}
	cs.ID = newID()
	cs.Image = c.Image
	cs.PID = p.PID()
	cs.StartTime = p.StartTime()
	cs.StartedAt = now
	cs.LogPath = logPath
	cs.Done = false
	w.procs[c.Name] = p
	w.probes[c.Name] = newProbeState(c, now)
	delete(w.waiting, c.Name)
	delete(w.restarts, c.Name)
	w.save()
	w.log.Info("container started", "container", c.Name, "pid", cs.PID, "image", c.Image, "program", argv[0], "restarts", cs.RestartCount)
	w.watch(c.Name, p)
}

// handleExit records a container's exit and schedules its restart per the
// pod's restartPolicy.
func (w *podWorker) handleExit(ev exitEvent) {
	if w.procs[ev.name] != ev.p {
		return
	}
	delete(w.procs, ev.name)
	delete(w.probes, ev.name)
	pod, _ := w.snapshot()
	if w.st == nil || pod == nil {
		return
	}
	now := w.r.now()
	cs := w.findState(ev.name)
	if cs == nil {
		return
	}
	code := int32(ev.p.ExitCode())
	cs.LastExitCode = &code
	cs.LastStartedAt = cs.StartedAt
	cs.LastFinishedAt = now
	cs.PID, cs.StartTime = 0, 0

	policy := pod.Spec.RestartPolicy
	if policy == "" {
		policy = corev1.RestartPolicyAlways
	}
	restart := policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0)
	if cs.Init {
		restart = code != 0 && policy != corev1.RestartPolicyNever
	}
	if !restart {
		cs.Done = true
		w.log.Info("container exited", "container", ev.name, "exit_code", code)
		w.save()
		return
	}
	if stoppedContainers(pod)[ev.name] {
		w.waiting[ev.name] = waitReason{"Stopped", "kept stopped by annotation " + StoppedContainersAnnotation}
		w.log.Info("container stopped; kept stopped by the pod's annotation", "container", ev.name, "exit_code", code)
		w.save()
		return
	}
	if now.Sub(cs.StartedAt) > time.Minute {
		w.crashes[ev.name] = 0
	}
	w.crashes[ev.name]++
	delay := backoff(w.crashes[ev.name])
	w.restarts[ev.name] = now.Add(delay)
	w.waiting[ev.name] = waitReason{"CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", delay, ev.name, pod.Name, pod.Namespace, pod.UID)}
	w.log.Info("container exited; restarting", "container", ev.name, "exit_code", code, "in", delay)
	w.save()
}

// allDone reports whether no container will run again: every container
// completed, or an init container failed for good.
func (w *podWorker) allDone(pod *corev1.Pod) bool {
	for i := range pod.Spec.InitContainers {
		cs := w.findState(pod.Spec.InitContainers[i].Name)
		if cs != nil && cs.Done && cs.LastExitCode != nil && *cs.LastExitCode != 0 {
			return true
		}
	}
	for i := range pod.Spec.Containers {
		cs := w.findState(pod.Spec.Containers[i].Name)
		if cs == nil || !cs.Done {
			return false
		}
	}
	return true
}

// finish releases the sandbox of a pod whose containers all ended; the Pod
// object stays (Succeeded/Failed) until it is deleted.
func (w *podWorker) finish(ctx context.Context, pod *corev1.Pod) {
	w.terminal = true
	w.st.Terminal = true
	w.save()
	if err := w.r.sb.Teardown(ctx, w.st); err != nil {
		w.log.Warn("release sandbox of completed pod", "err", err)
		return
	}
	w.st.TornDown = true
	w.save()
	w.log.Info("pod completed; sandbox released")
}

// gracePeriod is the pod's termination grace period, capped.
func (w *podWorker) gracePeriod(pod *corev1.Pod) time.Duration {
	g := int64(30)
	if pod != nil {
		if pod.DeletionGracePeriodSeconds != nil {
			g = *pod.DeletionGracePeriodSeconds
		} else if pod.Spec.TerminationGracePeriodSeconds != nil {
			g = *pod.Spec.TerminationGracePeriodSeconds
		}
	}
	return min(time.Duration(g)*time.Second, w.r.maxGrace)
}

// terminate stops the pod's processes (SIGTERM, grace period, SIGKILL),
// tears down its sandbox (CNI DEL, namespace, cgroup), forgets it and, when
// the API still has it, deletes the Pod object with grace period 0.
func (w *podWorker) terminate(ctx context.Context) {
	pod, gone := w.snapshot()
	if w.st != nil {
		if len(w.procs) > 0 {
			grace := w.gracePeriod(pod)
			w.log.Info("stopping pod", "grace", grace)
			if err := w.r.sb.Signal(w.st, syscall.SIGTERM); err != nil {
				w.log.Warn("SIGTERM pod", "err", err)
			}
			if !w.waitProcs(ctx, grace) {
				if ctx.Err() != nil {
					return
				}
				if err := w.r.sb.Signal(w.st, syscall.SIGKILL); err != nil {
					w.log.Warn("SIGKILL pod", "err", err)
				}
				for _, p := range w.procs {
					p.Signal(syscall.SIGKILL)
				}
				if !w.waitProcs(ctx, 10*time.Second) {
					w.log.Warn("pod processes survived SIGKILL")
				}
			}
		}
		if !w.st.TornDown {
			for attempt := 1; ; attempt++ {
				err := w.r.sb.Teardown(ctx, w.st)
				if err == nil {
					break
				}
				delay := backoff(attempt)
				w.log.Warn("tear down pod sandbox; retrying", "err", err, "in", delay)
				select {
				case <-ctx.Done():
					return // the next runner resumes from the stored state
				case <-time.After(delay):
				}
			}
		}
		if err := w.releaseVolumes(); err != nil {
			w.log.Warn("release pod volumes", "err", err)
		}
		if err := w.r.store.Delete(w.st.UID); err != nil {
			w.log.Warn("forget pod", "err", err)
		}
		os.RemoveAll(w.st.Dir)
		w.log.Info("pod torn down")
	}
	if !gone && pod != nil {
		w.r.deletePodObject(pod)
	}
}

// waitProcs waits until every container process exited or d passed.
func (w *podWorker) waitProcs(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for _, p := range w.procs {
		select {
		case <-p.Done():
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// pushStatus writes the pod's status when it changed.
func (w *podWorker) pushStatus(ctx context.Context) {
	pod, _ := w.snapshot()
	if pod == nil {
		return
	}
	want := w.buildStatus(pod)
	if w.lastStatus != nil && apiequality.Semantic.DeepEqual(*w.lastStatus, want) {
		return
	}
	pods := w.r.client.CoreV1().Pods(pod.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != w.uid {
			return nil
		}
		cur.Status = w.buildStatus(cur)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	switch {
	case err == nil:
		w.lastStatus = &want
	case apierrors.IsNotFound(err) || ctx.Err() != nil:
	default:
		w.log.Warn("update pod status", "err", err)
	}
}

// buildStatus computes the pod status the runner owns on top of pod's.
func (w *podWorker) buildStatus(pod *corev1.Pod) corev1.PodStatus {
	s := *pod.Status.DeepCopy()
	nodeIP := w.r.cfg.NodeIP
	s.HostIP = nodeIP
	s.HostIPs = []corev1.HostIP{{IP: nodeIP}}
	start := metav1.NewTime(w.firstSeen)
	s.StartTime = &start
	s.PodIP, s.PodIPs = "", nil
	if w.st != nil {
		ips := w.st.PodIPs
		if w.st.HostNetwork {
			ips = []string{nodeIP}
		}
		for _, ip := range ips {
			s.PodIPs = append(s.PodIPs, corev1.PodIP{IP: ip})
		}
		if len(ips) > 0 {
			s.PodIP = ips[0]
		}
	}

	initDone := true
	s.InitContainerStatuses = nil
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cst := w.containerStatus(c, "PodInitializing")
		s.InitContainerStatuses = append(s.InitContainerStatuses, cst)
		if cs := w.findState(c.Name); cs == nil || !cs.Done || cs.LastExitCode == nil || *cs.LastExitCode != 0 {
			initDone = false
		}
	}
	s.ContainerStatuses = nil
	allReady, allStarted, failed := true, true, false
	var unready []string
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		waitDefault := "ContainerCreating"
		if !initDone {
			waitDefault = "PodInitializing"
		}
		cst := w.containerStatus(c, waitDefault)
		s.ContainerStatuses = append(s.ContainerStatuses, cst)
		if !cst.Ready {
			allReady = false
			unready = append(unready, c.Name)
		}
		cs := w.findState(c.Name)
		if cs == nil || cs.StartedAt.IsZero() {
			allStarted = false
		}
		if cs != nil && cs.Done && (cs.LastExitCode == nil || *cs.LastExitCode != 0) {
			failed = true
		}
	}
	switch {
	case w.terminal && (failed || !initDone):
		s.Phase = corev1.PodFailed
	case w.terminal:
		s.Phase = corev1.PodSucceeded
	case w.st != nil && initDone && allStarted:
		s.Phase = corev1.PodRunning
	default:
		s.Phase = corev1.PodPending
	}

	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg}
		if ok {
			c = corev1.PodCondition{Type: t, Status: corev1.ConditionTrue}
		}
		setPodCondition(&s, c, w.firstSeen)
	}
	cond(corev1.PodReadyToStartContainers, w.st != nil && !w.st.TornDown, "", "")
	cond(corev1.PodInitialized, initDone, "ContainersNotInitialized", "containers with incomplete status: init containers")
	notReadyReason, notReadyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	if w.terminal {
		notReadyReason, notReadyMsg = "PodCompleted", ""
	}
	cond(corev1.ContainersReady, allReady && !w.terminal, notReadyReason, notReadyMsg)
	ready := allReady && !w.terminal
	for _, g := range pod.Spec.ReadinessGates {
		met := false
		for _, c := range pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				met = true
			}
		}
		if !met {
			ready = false
			notReadyReason, notReadyMsg = "ReadinessGatesNotReady", "the status of pod readiness gate "+string(g.ConditionType)+" is not True"
		}
	}
	cond(corev1.PodReady, ready, notReadyReason, notReadyMsg)
	return s
}

// setPodCondition sets c in s, keeping the transition time when the status
// did not change.
func setPodCondition(s *corev1.PodStatus, c corev1.PodCondition, now time.Time) {
	for i := range s.Conditions {
		if s.Conditions[i].Type != c.Type {
			continue
		}
		c.LastTransitionTime = s.Conditions[i].LastTransitionTime
		if s.Conditions[i].Status != c.Status || c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = metav1.NewTime(now)
		}
		s.Conditions[i] = c
		return
	}
	c.LastTransitionTime = metav1.NewTime(now)
	s.Conditions = append(s.Conditions, c)
}

func (w *podWorker) containerStatus(c *corev1.Container, waitDefault string) corev1.ContainerStatus {
	repo := images.Repository(c.Image)
	out := corev1.ContainerStatus{
		Name:    c.Name,
		Image:   c.Image,
		ImageID: "glia-lab://images/" + repo,
		Started: new(bool),
	}
	cs := w.findState(c.Name)
	_, running := w.procs[c.Name]
	if cs != nil {
		out.RestartCount = cs.RestartCount
		if cs.ID != "" {
			out.ContainerID = "glia-lab://" + cs.ID
		}
	}
	terminated := func() *corev1.ContainerStateTerminated {
		reason := "Completed"
		if *cs.LastExitCode != 0 {
			reason = "Error"
		}
		return &corev1.ContainerStateTerminated{
			ExitCode:    *cs.LastExitCode,
			Reason:      reason,
			StartedAt:   metav1.NewTime(cs.LastStartedAt),
			FinishedAt:  metav1.NewTime(cs.LastFinishedAt),
			ContainerID: out.ContainerID,
		}
	}
	switch {
	case running && cs != nil:
		out.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(cs.StartedAt)}
		ps := w.probes[c.Name]
		*out.Started = ps != nil && ps.started
		out.Ready = ps != nil && ps.started && ps.ready
	case cs != nil && cs.Done && cs.LastExitCode != nil:
		out.State.Terminated = terminated()
	default:
		wr, ok := w.waiting[c.Name]
		if !ok {
			wr = waitReason{reason: waitDefault}
			if w.st == nil && w.sandboxErr != "" {
				wr.message = w.sandboxErr
			}
		}
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: wr.reason, Message: wr.message}
	}
	if cs != nil && cs.LastExitCode != nil && out.State.Terminated == nil {
		out.LastTerminationState.Terminated = terminated()
	}
	return out
}

func newID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}
