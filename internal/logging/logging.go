// Package logging builds glia-agent's logger: log/slog as text (logfmt,
// the default) or JSON lines (--log-format json, Helm value logFormat), on
// stderr, with stable keys a log pipeline can index on every line where
// they apply: subsys (the part of the agent that logs), node, endpoint and
// service.
//
// A key set on a logger replaces the same key set before (slog alone would
// repeat it): the agent's logger carries subsys=daemon and node=NAME, and
// a subsystem's logger.With("subsys", "health") says subsys=health once.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
)

// Stable keys.
const (
	KeySubsys   = "subsys"
	KeyNode     = "node"
	KeyEndpoint = "endpoint"
	KeyService  = "service"
)

// Formats of --log-format.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// Formats lists the formats, for help and errors.
var Formats = []string{FormatText, FormatJSON}

// CheckFormat says what is wrong with a --log-format value.
func CheckFormat(f string) error {
	if slices.Contains(Formats, f) {
		return nil
	}
	return fmt.Errorf("--log-format %q: use %s", f, strings.Join(Formats, " or "))
}

// New returns a logger writing format to w at level.
func New(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	if err := CheckFormat(format); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == FormatJSON {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(&dedup{inner: h}), nil
}

// dedup keeps the attributes set with With and adds them to each record,
// a later value of a key replacing an earlier one, and a record's own
// value of a key replacing both.
type dedup struct {
	inner slog.Handler
	attrs []slog.Attr
}

func (h *dedup) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *dedup) Handle(ctx context.Context, r slog.Record) error {
	own := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool {
		own[a.Key] = true
		return true
	})
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	for _, a := range h.attrs {
		if !own[a.Key] {
			out.AddAttrs(a)
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *dedup) WithAttrs(as []slog.Attr) slog.Handler {
	attrs := slices.Clone(h.attrs)
	for _, a := range as {
		if i := slices.IndexFunc(attrs, func(b slog.Attr) bool { return b.Key == a.Key }); i >= 0 {
			attrs[i] = a
		} else {
			attrs = append(attrs, a)
		}
	}
	return &dedup{inner: h.inner, attrs: attrs}
}

// WithGroup hands the attributes so far to the inner handler: keys inside
// a group are the group's.
func (h *dedup) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &dedup{inner: h.inner.WithAttrs(h.attrs).WithGroup(name)}
}
