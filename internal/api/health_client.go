package api

import (
	"context"
	"net/http"
)

// PathHealth serves the agent's latest cluster health report.
const PathHealth = "/v1/health"

// Health decodes the agent's latest cluster health report into out.
func (c *Client) Health(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, PathHealth, nil, nil, out)
}
