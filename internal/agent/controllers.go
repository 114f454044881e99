package agent

import (
	"context"
	"sort"
	"sync"
	"time"

	"glia.dev/glia/internal/api"
)

// controllers records the outcome of every reconciler run, for `glia status`.
type controllers struct {
	mu sync.Mutex
	m  map[string]*api.ControllerStatus
}

func newControllers() *controllers { return &controllers{m: map[string]*api.ControllerStatus{}} }

// run runs f as controller name and records its result.
func (c *controllers) run(ctx context.Context, name string, f func(context.Context) error) error {
	err := f(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.m[name]
	if s == nil {
		s = &api.ControllerStatus{Name: name}
		c.m[name] = s
	}
	if err != nil {
		s.Failures++
		s.LastError = err.Error()
	} else {
		s.Failures = 0
		s.LastError = ""
		s.LastSuccess = time.Now()
	}
	return err
}

func (c *controllers) list() []api.ControllerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]api.ControllerStatus, 0, len(c.m))
	for _, s := range c.m {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
