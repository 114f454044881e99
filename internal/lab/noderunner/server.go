package noderunner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// The kubelet API the API server proxies `kubectl exec`, `attach` and
// `logs` to: HTTPS on the node's InternalIP (port 10250 by default, reported
// in the Node's status.daemonEndpoints), with a serving certificate for the
// node's IP and client certificates signed by the lab CA required.
//
//	/exec/{namespace}/{pod}[/{uid}]/{container}?command=...&input=1&output=1&error=1&tty=1
//	/attach/{namespace}/{pod}[/{uid}]/{container}?input=1&output=1&error=1&tty=1
//	/containerLogs/{namespace}/{pod}/{container}?follow&previous&sinceSeconds&sinceTime&timestamps&tailLines&limitBytes&stream
//	/healthz
//
// Exec and attach speak the remote command protocols (SPDY and WebSocket,
// k8s.io/cri-streaming); logs are read from the CRI-format files the log
// shims write.

const (
	// DefaultKubeletPort is the kubelet API's port.
	DefaultKubeletPort = 10250
	// streamIdleTimeout closes an exec or attach stream idle this long
	// (the kubelet's default).
	streamIdleTimeout = 4 * time.Hour
)

// ioStreams are a client's streams for exec or attach; nil ones were not
// asked for.
type ioStreams struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	TTY    bool
	Resize <-chan remotecommand.TerminalSize
}

// execTarget is a running container.
type execTarget struct {
	Pod       *corev1.Pod
	State     *PodState
	Container ContainerState
}

// containerRuntime runs commands in, and attaches to, running containers.
type containerRuntime interface {
	Exec(ctx context.Context, t execTarget, argv []string, s ioStreams) error
	Attach(ctx context.Context, t execTarget, s ioStreams) error
}

// podSource is what the kubelet API knows about pods.
type podSource interface {
	// Pod returns a pod bound to this node, as the API server has it.
	Pod(namespace, name string) (*corev1.Pod, bool)
	// State returns the runner's record of a pod's sandbox and containers.
	State(uid types.UID) (*PodState, bool)
	// Running reports whether a recorded container process still runs.
	Running(c ContainerState) bool
}

// kubeletServer serves the kubelet API.
type kubeletServer struct {
	log  *slog.Logger
	pods podSource
	rt   containerRuntime
	now  func() time.Time
	// creationTimeout bounds how long a client may take to open its
	// streams.
	creationTimeout time.Duration
}

func newKubeletServer(log *slog.Logger, pods podSource, rt containerRuntime) *kubeletServer {
	return &kubeletServer{log: log, pods: pods, rt: rt, now: time.Now, creationTimeout: remotecommand.DefaultStreamCreationTimeout}
}

// Handler returns the API's routes.
func (s *kubeletServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	})
	for _, p := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, s.serveExec)
		mux.HandleFunc("POST "+p, s.serveExec)
	}
	for _, p := range []string{"/attach/{ns}/{pod}/{container}", "/attach/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, s.serveAttach)
		mux.HandleFunc("POST "+p, s.serveAttach)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", s.serveLogs)
	return mux
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg)
}

func containerSpec(pod *corev1.Pod, name string) *corev1.Container {
	for _, c := range allContainers(pod) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func findContainer(st *PodState, name string) *ContainerState {
	if st == nil {
		return nil
	}
	for i := range st.Containers {
		if st.Containers[i].Name == name {
			return &st.Containers[i]
		}
	}
	return nil
}

// runningContainer finds the running container a streaming request names;
// on failure it has answered the request.
func (s *kubeletServer) runningContainer(w http.ResponseWriter, r *http.Request) (execTarget, bool) {
	ns, name, container, uid := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container"), r.PathValue("uid")
	pod, ok := s.pods.Pod(ns, name)
	if !ok || (uid != "" && types.UID(uid) != pod.UID) {
		httpError(w, http.StatusNotFound, "pod does not exist")
		return execTarget{}, false
	}
	notFound := fmt.Sprintf("container not found (%q)", container)
	if containerSpec(pod, container) == nil {
		httpError(w, http.StatusNotFound, notFound)
		return execTarget{}, false
	}
	st, _ := s.pods.State(pod.UID)
	cs := findContainer(st, container)
	if cs == nil || cs.PID == 0 || !s.pods.Running(*cs) {
		httpError(w, http.StatusNotFound, notFound+": it is not running")
		return execTarget{}, false
	}
	return execTarget{Pod: pod, State: st, Container: *cs}, true
}

// streamAdapter turns the streaming library's calls into runtime calls.
type streamAdapter struct {
	rt containerRuntime
	t  execTarget
}

func toStreams(in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) ioStreams {
	s := ioStreams{In: in, TTY: tty, Resize: resize}
	if out != nil {
		s.Out = out
	}
	if errw != nil {
		s.Err = errw
	}
	return s
}

func (a streamAdapter) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	// The error is returned as is: the library reports a
	// utilexec.ExitError as the command's exit code.
	return a.rt.Exec(ctx, a.t, cmd, toStreams(in, out, errw, tty, resize))
}

func (a streamAdapter) AttachContainer(ctx context.Context, _, _, _ string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return a.rt.Attach(ctx, a.t, toStreams(in, out, errw, tty, resize))
}

func (s *kubeletServer) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		httpError(w, http.StatusBadRequest, "no command given: pass the command and its arguments as command=... query parameters")
		return
	}
	t, ok := s.runningContainer(w, r)
	if !ok {
		return
	}
	s.log.Info("exec", "pod", podKey(t.Pod.Namespace, t.Pod.Name), "container", t.Container.Name, "command", cmd, "tty", opts.TTY, "stdin", opts.Stdin)
	remotecommand.ServeExec(w, r, streamAdapter{s.rt, t}, t.Pod.Name, string(t.Pod.UID), t.Container.Name, cmd, opts,
		streamIdleTimeout, s.creationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (s *kubeletServer) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	t, ok := s.runningContainer(w, r)
	if !ok {
		return
	}
	s.log.Info("attach", "pod", podKey(t.Pod.Namespace, t.Pod.Name), "container", t.Container.Name, "tty", opts.TTY, "stdin", opts.Stdin)
	remotecommand.ServeAttach(w, r, streamAdapter{s.rt, t}, t.Pod.Name, string(t.Pod.UID), t.Container.Name, opts,
		streamIdleTimeout, s.creationTimeout, remotecommand.SupportedStreamingProtocols)
}

// decodeLogOptions reads PodLogOptions from a query as the API server
// encodes them (booleans and integers as text, sinceTime as RFC 3339).
func decodeLogOptions(q url.Values) (*corev1.PodLogOptions, error) {
	var o corev1.PodLogOptions
	var errs []error
	boolean := func(key string, dst *bool) {
		if v := q.Get(key); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q is not a boolean", key, v))
			}
			*dst = b
		}
	}
	integer := func(key string, dst **int64) {
		if v := q.Get(key); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q is not an integer", key, v))
				return
			}
			*dst = &n
		}
	}
	boolean("follow", &o.Follow)
	boolean("previous", &o.Previous)
	boolean("timestamps", &o.Timestamps)
	boolean("insecureSkipTLSVerifyBackend", &o.InsecureSkipTLSVerifyBackend)
	integer("sinceSeconds", &o.SinceSeconds)
	integer("tailLines", &o.TailLines)
	integer("limitBytes", &o.LimitBytes)
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("sinceTime=%q is not an RFC 3339 time", v))
		} else {
			o.SinceTime = &metav1.Time{Time: t}
		}
	}
	if v := q.Get("stream"); v != "" {
		o.Stream = &v
	}
	o.Container = q.Get("container")
	return &o, errors.Join(errs...)
}

// validateLogOptions checks the options as the API server does, naming the
// offending parameter.
func validateLogOptions(o *corev1.PodLogOptions) error {
	var errs []error
	if o.SinceSeconds != nil && o.SinceTime != nil {
		errs = append(errs, errors.New("at most one of sinceSeconds and sinceTime may be given"))
	}
	if o.SinceSeconds != nil && *o.SinceSeconds < 1 {
		errs = append(errs, fmt.Errorf("sinceSeconds must be at least 1 (got %d)", *o.SinceSeconds))
	}
	if o.TailLines != nil && *o.TailLines < 0 {
		errs = append(errs, fmt.Errorf("tailLines must not be negative (got %d)", *o.TailLines))
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		errs = append(errs, fmt.Errorf("limitBytes must be at least 1 (got %d)", *o.LimitBytes))
	}
	if o.Stream != nil {
		switch *o.Stream {
		case corev1.LogStreamStdout, corev1.LogStreamStderr:
			if o.TailLines != nil {
				errs = append(errs, fmt.Errorf("tailLines cannot be combined with stream %s (only with %s)", *o.Stream, corev1.LogStreamAll))
			}
		case corev1.LogStreamAll:
		default:
			errs = append(errs, fmt.Errorf("stream must be %s, %s or %s (got %q)", corev1.LogStreamAll, corev1.LogStreamStdout, corev1.LogStreamStderr, *o.Stream))
		}
	}
	return errors.Join(errs...)
}

// logTarget picks the log file of the container run the request is about,
// with the kubelet's rules and messages. running reports whether that run
// still runs (nil: it ended).
func (s *kubeletServer) logTarget(pod *corev1.Pod, container string, previous bool) (path string, running func() bool, err error) {
	st, _ := s.pods.State(pod.UID)
	cs := findContainer(st, container)
	if cs == nil || cs.StartedAt.IsZero() || cs.LogPath == "" {
		return "", nil, waitingError(pod, container)
	}
	c := *cs
	if !previous {
		if c.PID > 0 {
			return c.LogPath, func() bool { return s.pods.Running(c) }, nil
		}
		return c.LogPath, nil, nil
	}
	switch {
	case c.PID > 0 && c.RestartCount > 0, c.PID == 0 && c.Done && c.RestartCount > 0:
		// The run before the current (or last) one, kept at its restart.
		return PreviousLogPath(c.LogPath), nil, nil
	case c.PID == 0 && !c.Done && c.LastExitCode != nil:
		// Exited and not restarted yet: its log is still the newest.
		return c.LogPath, nil, nil
	}
	return "", nil, fmt.Errorf("previous terminated container %q in pod %q not found", container, pod.Name)
}

// waitingError explains why a container that never ran has no logs.
func waitingError(pod *corev1.Pod, container string) error {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for _, cs := range list {
			if cs.Name != container || cs.State.Waiting == nil {
				continue
			}
			switch reason := cs.State.Waiting.Reason; reason {
			case "ErrImagePull":
				return fmt.Errorf("container %q in pod %q is waiting to start: image can't be pulled", container, pod.Name)
			case "ImagePullBackOff":
				return fmt.Errorf("container %q in pod %q is waiting to start: trying and failing to pull image", container, pod.Name)
			case "":
			default:
				return fmt.Errorf("container %q in pod %q is waiting to start: %s", container, pod.Name, reason)
			}
		}
	}
	return fmt.Errorf("container %q in pod %q is waiting to start - no logs yet", container, pod.Name)
}

// flushWriter sends every write to the client at once (kubectl logs -f).
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func (s *kubeletServer) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	q := r.URL.Query()
	// "tail" is the older spelling of tailLines; "all" means no tail.
	if tail := q.Get("tail"); tail != "" {
		q.Del("tail")
		if tail != "all" {
			q.Set("tailLines", tail)
		}
	}
	opts, err := decodeLogOptions(q)
	if err != nil {
		httpError(w, http.StatusBadRequest, "unable to decode query: "+err.Error())
		return
	}
	if err := validateLogOptions(opts); err != nil {
		httpError(w, http.StatusUnprocessableEntity, "invalid log options: "+err.Error())
		return
	}
	pod, ok := s.pods.Pod(ns, name)
	if !ok {
		httpError(w, http.StatusNotFound, fmt.Sprintf("pod %q does not exist", name))
		return
	}
	if containerSpec(pod, container) == nil {
		httpError(w, http.StatusNotFound, fmt.Sprintf("container %q not found in pod %q", container, name))
		return
	}
	path, running, err := s.logTarget(pod, container, opts.Previous)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ro := logReadOptions{
		TailLines:  opts.TailLines,
		LimitBytes: opts.LimitBytes,
		Timestamps: opts.Timestamps,
		Stdout:     true,
		Stderr:     true,
		Follow:     opts.Follow,
		Running:    running,
	}
	if running == nil {
		ro.Running = func() bool { return false }
	}
	if opts.Stream != nil {
		ro.Stdout = *opts.Stream != corev1.LogStreamStderr
		ro.Stderr = *opts.Stream != corev1.LogStreamStdout
	}
	switch {
	case opts.SinceSeconds != nil:
		ro.Since = s.now().Add(-time.Duration(*opts.SinceSeconds) * time.Second)
	case opts.SinceTime != nil:
		ro.Since = opts.SinceTime.Time
	}
	f, err := os.Open(path)
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("container %q in pod %q: no log: %v", container, name, err))
		return
	}
	f.Close()
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	if err := readLog(r.Context(), path, ro, flushWriter{w, http.NewResponseController(w)}); err != nil && r.Context().Err() == nil {
		s.log.Warn("serve container log", "pod", podKey(ns, name), "container", container, "err", err)
	}
}

// podIndex holds the pod informer's index once the informer exists (the
// kubelet API starts before it).
type podIndex struct{ v atomic.Pointer[cache.Indexer] }

func (p *podIndex) set(i cache.Indexer) { p.v.Store(&i) }

func (p *podIndex) get() cache.Indexer {
	if i := p.v.Load(); i != nil {
		return *i
	}
	return nil
}

// runnerPods is the runner's podSource: pods from its informer, states from
// its store.
type runnerPods struct {
	index func() cache.Indexer // nil until the informer exists
	store *Store
}

func (p runnerPods) Pod(namespace, name string) (*corev1.Pod, bool) {
	idx := p.index()
	if idx == nil {
		return nil, false
	}
	obj, ok, err := idx.GetByKey(podKey(namespace, name))
	if err != nil || !ok {
		return nil, false
	}
	pod, ok := obj.(*corev1.Pod)
	return pod, ok
}

func (p runnerPods) State(uid types.UID) (*PodState, bool) {
	st, err := p.store.Get(string(uid))
	return st, err == nil
}

func (runnerPods) Running(c ContainerState) bool {
	return c.PID > 0 && processAlive(c.PID, c.StartTime)
}

// serverTLS builds the kubelet API's TLS config: the serving certificate,
// and client certificates required and verified against the client CA.
func serverTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load kubelet serving certificate (--tls-cert-file, --tls-private-key-file): %w", err)
	}
	ca, err := os.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("read client CA (--client-ca-file): %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("client CA file %s holds no PEM certificate (--client-ca-file)", clientCAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		// Exec and attach upgrade the connection: HTTP/1.1 only.
		NextProtos: []string{"http/1.1"},
	}, nil
}

// serveKubeletAPI listens on addr and serves h over TLS until ctx ends. The
// listener is open when it returns.
func serveKubeletAPI(ctx context.Context, log *slog.Logger, addr string, tlsCfg *tls.Config, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelInfo),
	}
	go func() {
		if err := srv.Serve(tls.NewListener(ln, tlsCfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("kubelet API stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("kubelet API serving", "addr", addr)
	return nil
}

// startKubeletAPI starts the kubelet API when the runner has its TLS files.
func (r *runner) startKubeletAPI(ctx context.Context) error {
	if !r.cfg.kubeletAPIEnabled() {
		r.log.Warn("kubelet API disabled: kubectl exec, attach and logs will not reach this node's pods",
			"fix", "pass --tls-cert-file, --tls-private-key-file and --client-ca-file")
		return nil
	}
	tlsCfg, err := serverTLS(r.cfg.TLSCertFile, r.cfg.TLSPrivateKeyFile, r.cfg.ClientCAFile)
	if err != nil {
		return err
	}
	pods := runnerPods{index: r.pods.get, store: r.store}
	srv := newKubeletServer(r.log.With("component", "kubelet-api"), pods, hostRuntime{})
	return serveKubeletAPI(ctx, r.log.With("component", "kubelet-api"), net.JoinHostPort(r.cfg.NodeIP, strconv.Itoa(r.cfg.Port)), tlsCfg, srv.Handler())
}

// Get returns the stored state of pod uid.
func (s *Store) Get(uid string) (*PodState, error) {
	if uid == "" || strings.ContainsAny(uid, "/\\") {
		return nil, fmt.Errorf("invalid pod uid %q", uid)
	}
	b, err := os.ReadFile(s.path(uid))
	if err != nil {
		return nil, err
	}
	var st PodState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode pod state %s: %w", uid, err)
	}
	return &st, nil
}
