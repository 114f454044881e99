package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// StatusFunc returns the agent's status document for PathStatus. An error
// makes PathHealthz answer 503.
type StatusFunc func(ctx context.Context) (any, error)

type handler struct {
	log     *slog.Logger
	backend Backend
	status  StatusFunc
	mux     *http.ServeMux
}

// NewHandler serves backend and status on the paths of this package. Request
// bodies are limited to MaxRequestBytes and decoded strictly (unknown fields
// are refused); every error is answered as an Error document.
func NewHandler(log *slog.Logger, backend Backend, status func(ctx context.Context) (any, error)) http.Handler {
	h := &handler{log: log, backend: backend, status: status, mux: http.NewServeMux()}
	h.mux.HandleFunc(PathHealthz, h.methods(map[string]http.HandlerFunc{http.MethodGet: h.healthz}))
	h.mux.HandleFunc(PathStatus, h.methods(map[string]http.HandlerFunc{http.MethodGet: h.getStatus}))
	h.mux.HandleFunc(PathIPAM, h.methods(map[string]http.HandlerFunc{
		http.MethodPost:   h.allocate,
		http.MethodDelete: h.release,
	}))
	h.mux.HandleFunc(PathEndpoints, h.methods(map[string]http.HandlerFunc{
		http.MethodGet:    h.listEndpoints,
		http.MethodPut:    h.upsertEndpoint,
		http.MethodDelete: h.deleteEndpoint,
	}))
	h.mux.HandleFunc(PathEndpoint, h.methods(map[string]http.HandlerFunc{http.MethodGet: h.getEndpoint}))
	h.mux.HandleFunc(PathGC, h.methods(map[string]http.HandlerFunc{http.MethodPost: h.gc}))
	h.mux.HandleFunc(PathCNIStatus, h.methods(map[string]http.HandlerFunc{http.MethodGet: h.cniStatus}))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, Errorf(CodeNotFound, "no such path %q", r.URL.Path))
	})
	return h
}

// NewServer returns an http.Server for h with timeouts suited to a local
// control socket.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

func (h *handler) methods(m map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, ok := m[r.Method]
		if !ok {
			h.writeError(w, r, &httpError{status: http.StatusMethodNotAllowed,
				err: Errorf(CodeBadRequest, "method %s not allowed on %s", r.Method, r.URL.Path)})
			return
		}
		f(w, r)
	}
}

// httpError overrides the status code derived from an Error's code.
type httpError struct {
	status int
	err    *Error
}

func (e *httpError) Error() string { return e.err.Error() }

// StatusCode maps an Error code to its HTTP status.
func StatusCode(code string) int {
	switch code {
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeConflict:
		return http.StatusConflict
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeExhausted, CodeNotReady:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		he     *httpError
		ae     *Error
		status int
	)
	switch {
	case errors.As(err, &he):
		ae, status = he.err, he.status
	case errors.As(err, &ae):
		status = StatusCode(ae.Code)
	default:
		ae = Errorf(CodeInternal, "%v", err)
		status = http.StatusInternalServerError
	}
	lvl := slog.LevelDebug
	if status >= 500 && ae.Code != CodeExhausted && ae.Code != CodeNotReady {
		lvl = slog.LevelWarn
	}
	h.log.Log(r.Context(), lvl, "api request failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", ae.Code, "error", ae.Message)
	writeJSON(w, status, ae)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads exactly one JSON value from the body into v, refusing unknown
// fields, trailing data and bodies larger than MaxRequestBytes.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if derr := dec.Decode(&struct{}{}); derr != io.EOF {
			err = errors.New("trailing data after the JSON body")
			var mbe *http.MaxBytesError
			if errors.As(derr, &mbe) {
				err = derr
			}
		}
	}
	if err == nil {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return Errorf(CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
	}
	if errors.Is(err, io.EOF) {
		return Errorf(CodeBadRequest, "request body is empty")
	}
	return Errorf(CodeBadRequest, "decode request body: %v", err)
}

func attachmentFromQuery(r *http.Request) (Attachment, error) {
	q := r.URL.Query()
	a := Attachment{ContainerID: q.Get("containerID"), IfName: q.Get("ifName")}
	if err := ValidateAttachment(a); err != nil {
		return Attachment{}, err
	}
	return a, nil
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	if h.status != nil {
		if _, err := h.status(r.Context()); err != nil {
			h.writeError(w, r, Errorf(CodeNotReady, "%v", err))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *handler) getStatus(w http.ResponseWriter, r *http.Request) {
	if h.status == nil {
		h.writeError(w, r, Errorf(CodeNotFound, "this agent serves no status"))
		return
	}
	st, err := h.status(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) allocate(w http.ResponseWriter, r *http.Request) {
	var req AllocateRequest
	if err := decode(w, r, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := ValidateAttachment(req.Attachment); err != nil {
		h.writeError(w, r, err)
		return
	}
	alloc, err := h.backend.Allocate(r.Context(), req)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, alloc)
}

func (h *handler) release(w http.ResponseWriter, r *http.Request) {
	a, err := attachmentFromQuery(r)
	if err == nil {
		err = h.backend.Release(r.Context(), a)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) listEndpoints(w http.ResponseWriter, r *http.Request) {
	eps, err := h.backend.ListEndpoints(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if eps == nil {
		eps = []Endpoint{}
	}
	writeJSON(w, http.StatusOK, eps)
}

func (h *handler) upsertEndpoint(w http.ResponseWriter, r *http.Request) {
	var ep Endpoint
	if err := decode(w, r, &ep); err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := ValidateAttachment(ep.Attachment); err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.backend.UpsertEndpoint(r.Context(), ep); err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) deleteEndpoint(w http.ResponseWriter, r *http.Request) {
	a, err := attachmentFromQuery(r)
	if err == nil {
		err = h.backend.DeleteEndpoint(r.Context(), a)
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) getEndpoint(w http.ResponseWriter, r *http.Request) {
	a, err := attachmentFromQuery(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	ep, err := h.backend.GetEndpoint(r.Context(), a)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ep)
}

func (h *handler) gc(w http.ResponseWriter, r *http.Request) {
	var req GCRequest
	if err := decode(w, r, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	for _, a := range req.Valid {
		if a.ContainerID == "" || a.IfName == "" {
			h.writeError(w, r, Errorf(CodeBadRequest, "valid attachment %q has an empty field", a.Key()))
			return
		}
	}
	res, err := h.backend.GC(r.Context(), req)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if res.Released == nil {
		res.Released = []Attachment{}
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *handler) cniStatus(w http.ResponseWriter, r *http.Request) {
	if err := h.backend.CNIStatus(r.Context()); err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
