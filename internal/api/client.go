package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client timeouts.
const (
	DialTimeout    = 2 * time.Second
	RequestTimeout = 30 * time.Second
)

// Client talks to the agent's API over its unix socket. Errors answered by
// the agent are *Error; failing to reach the socket wraps
// ErrAgentUnreachable.
type Client struct {
	socketPath string
	hc         *http.Client
}

var _ Backend = (*Client)(nil)

// NewClient returns a client for the agent socket at socketPath.
func NewClient(socketPath string) *Client {
	d := net.Dialer{Timeout: DialTimeout}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "unix", socketPath)
			if err != nil {
				return nil, fmt.Errorf("%w: socket %s: %w", ErrAgentUnreachable, socketPath, err)
			}
			return c, nil
		},
		MaxIdleConns:          2,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: RequestTimeout,
		DisableCompression:    true,
	}
	return &Client{socketPath: socketPath, hc: &http.Client{Transport: tr, Timeout: RequestTimeout}}
}

// SocketPath returns the socket the client talks to.
func (c *Client) SocketPath() string { return c.socketPath }

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := url.URL{Scheme: "http", Host: "glia-agent", Path: path}
	if query != nil {
		u.RawQuery = query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var ae Error
		if err := json.Unmarshal(data, &ae); err != nil || ae.Code == "" {
			snippet := string(data)
			if len(snippet) > 200 {
				snippet = snippet[:200]
			}
			return &Error{Code: CodeInternal, Message: fmt.Sprintf("agent answered %s: %s", resp.Status, snippet)}
		}
		return &ae
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func attachmentQuery(a Attachment) url.Values {
	return url.Values{"containerID": {a.ContainerID}, "ifName": {a.IfName}}
}

// Allocate implements Backend.
func (c *Client) Allocate(ctx context.Context, req AllocateRequest) (Allocation, error) {
	var out Allocation
	err := c.do(ctx, http.MethodPost, PathIPAM, nil, req, &out)
	return out, err
}

// Release implements Backend.
func (c *Client) Release(ctx context.Context, a Attachment) error {
	return c.do(ctx, http.MethodDelete, PathIPAM, attachmentQuery(a), nil, nil)
}

// UpsertEndpoint implements Backend.
func (c *Client) UpsertEndpoint(ctx context.Context, ep Endpoint) error {
	return c.do(ctx, http.MethodPut, PathEndpoints, nil, ep, nil)
}

// DeleteEndpoint implements Backend.
func (c *Client) DeleteEndpoint(ctx context.Context, a Attachment) error {
	return c.do(ctx, http.MethodDelete, PathEndpoints, attachmentQuery(a), nil, nil)
}

// GetEndpoint implements Backend.
func (c *Client) GetEndpoint(ctx context.Context, a Attachment) (Endpoint, error) {
	var out Endpoint
	err := c.do(ctx, http.MethodGet, PathEndpoint, attachmentQuery(a), nil, &out)
	return out, err
}

// ListEndpoints implements Backend.
func (c *Client) ListEndpoints(ctx context.Context) ([]Endpoint, error) {
	var out []Endpoint
	err := c.do(ctx, http.MethodGet, PathEndpoints, nil, nil, &out)
	return out, err
}

// GC implements Backend.
func (c *Client) GC(ctx context.Context, req GCRequest) (GCResult, error) {
	var out GCResult
	err := c.do(ctx, http.MethodPost, PathGC, nil, req, &out)
	return out, err
}

// CNIStatus implements Backend.
func (c *Client) CNIStatus(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, PathCNIStatus, nil, nil, nil)
}

// Get decodes the agent's JSON answer to GET path into out (PathStatus,
// PathHealth, PathConfig, PathServices, PathEndpoints).
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, nil, out)
}

// Status decodes the agent's status document (a Status) into out.
func (c *Client) Status(ctx context.Context, out any) error { return c.Get(ctx, PathStatus, out) }

// Healthz is nil when the agent is up and restored.
func (c *Client) Healthz(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, PathHealthz, nil, nil, nil)
}
