package api

import (
	"context"
	"net/http"
)

// PathConfig serves the inputs the agent resolved its config from, and its
// kernel probe, so `glia config view|preview` resolve exactly what it did.
const PathConfig = "/v1/config"

// Config decodes the agent's config report into out.
func (c *Client) Config(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, PathConfig, nil, nil, out)
}
