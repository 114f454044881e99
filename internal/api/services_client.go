package api

import (
	"context"
	"net/http"
)

// PathServices lists the Service frontends the agent programs (with
// kube-proxy replacement) or sees (without).
const PathServices = "/v1/services"

// ServiceBackend is one backend of a frontend.
type ServiceBackend struct {
	Address     string `json:"address"`
	Node        string `json:"node,omitempty"`
	Ready       bool   `json:"ready"`
	Terminating bool   `json:"terminating,omitempty"`
}

// Service is one frontend (address, port, protocol) and its backends.
type Service struct {
	Name     string           `json:"name"` // namespace/name[:port]
	Type     string           `json:"type"` // ClusterIP or NodePort
	Frontend string           `json:"frontend"`
	NodePort uint16           `json:"nodePort,omitempty"`
	Protocol string           `json:"protocol"`
	Backends []ServiceBackend `json:"backends"`
}

// Services lists the agent's Service frontends.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	var out []Service
	err := c.do(ctx, http.MethodGet, PathServices, nil, nil, &out)
	return out, err
}
