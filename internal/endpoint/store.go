// Package endpoint keeps the node's pod endpoints: one JSON file per endpoint
// under the agent's state directory (written atomically), and the Manager
// that serves the agent's local API on top of the IPAM allocator and the
// datapath. The Manager restores endpoints at agent start before any address
// is handed out, and removes what is stale only after that.
package endpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/atomicfile"
	"glia.dev/glia/internal/state"
)

func macString(m net.HardwareAddr) string {
	if len(m) == 0 {
		return ""
	}
	return m.String()
}

// Store persists endpoints as one JSON file each in a directory.
type Store struct {
	log *slog.Logger
	dir string
	now func() time.Time
}

// NewStore returns a store in dir, creating it (0700) when missing.
func NewStore(log *slog.Logger, dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("endpoint store directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create endpoint store directory: %w", err)
	}
	return &Store{log: log, dir: dir, now: time.Now}, nil
}

// Dir returns the directory the store writes to.
func (s *Store) Dir() string { return s.dir }

// fileName names the file of an attachment: "<containerID>+<ifName>.json"
// with ifName query-escaped. Container IDs never contain '+', and the
// escaping is injective, so two attachments never share a file.
func fileName(a state.Attachment) string {
	return a.ContainerID + "+" + url.QueryEscape(a.IfName) + ".json"
}

// Put writes ep atomically. ep is valid: it was checked where it entered
// the agent.
func (s *Store) Put(ep *state.Endpoint) error {
	// A file holds the endpoint as the socket API shows it: the shape the
	// agent has always written, so a newer agent reads what an older left.
	data, err := json.MarshalIndent(ToWire(ep), "", "  ")
	if err != nil {
		return fmt.Errorf("encode endpoint %s: %w", ep.Attachment, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, fileName(ep.Attachment)), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("store endpoint %s: %w", ep.Attachment, err)
	}
	return nil
}

// Delete removes the file of an attachment; a missing file is not an error.
func (s *Store) Delete(a state.Attachment) error {
	err := os.Remove(filepath.Join(s.dir, fileName(a)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete endpoint %s: %w", a, err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("delete endpoint %s: %w", a, err)
	}
	return nil
}

// Load reads every endpoint file. A file that cannot be parsed or does not
// describe a valid endpoint is logged and moved aside as
// <name>.corrupt-<timestamp>; leftover temporary files of interrupted writes
// are removed.
func (s *Store) Load() ([]*state.Endpoint, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read endpoint store: %w", err)
	}
	var out []*state.Endpoint
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		if atomicfile.IsTemp(name) {
			if err := os.Remove(path); err != nil {
				s.log.Warn("cannot remove leftover temporary file", "file", path, "error", err)
			}
			continue
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".json") {
			continue
		}
		ep, err := s.read(path)
		if err != nil {
			aside := fmt.Sprintf("%s.corrupt-%s", path, s.now().UTC().Format("20060102T150405.000000000Z"))
			if rerr := os.Rename(path, aside); rerr != nil {
				return nil, fmt.Errorf("move bad endpoint file %s aside: %w", path, rerr)
			}
			s.log.Error("dropped an endpoint file that cannot be read; moved it aside", "file", path, "movedTo", aside, "error", err)
			continue
		}
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

func (s *Store) read(path string) (*state.Endpoint, error) {
	var w api.Endpoint
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Unknown fields are accepted: a file written by a newer agent must not
	// cost a running pod its endpoint.
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := api.ValidateAttachment(w.Attachment); err != nil {
		return nil, err
	}
	ep, err := FromWire(w)
	if err != nil {
		return nil, err
	}
	if want := fileName(ep.Attachment); filepath.Base(path) != want {
		return nil, fmt.Errorf("file describes attachment %s, which belongs in %s", ep.Attachment, want)
	}
	return ep, nil
}

// FromWire turns an endpoint of the socket API (or of a file) into the
// agent's typed endpoint, checking once every field but the attachment
// (the socket API's handler, or the file's reader, checked that): the
// address, the host interface's name, the namespace, the MACs.
func FromWire(w api.Endpoint) (*state.Endpoint, error) {
	ip, err := netip.ParseAddr(w.IP)
	if err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "endpoint ip %q: %v", w.IP, err)
	}
	if err := api.ValidateIfName(w.HostIfName); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "endpoint hostIfName: %v", err)
	}
	if w.Netns == "" {
		return nil, api.Errorf(api.CodeBadRequest, "endpoint netns is empty")
	}
	ep := &state.Endpoint{
		Attachment: state.Attachment{ContainerID: w.ContainerID, IfName: w.IfName}, IP: ip, Netns: w.Netns,
		HostIfName: w.HostIfName, HostIfIndex: w.HostIfIndex, PodNamespace: w.PodNamespace, PodName: w.PodName, Created: w.Created,
	}
	for _, m := range []struct {
		name string
		s    string
		dst  *net.HardwareAddr
	}{{"hostMAC", w.HostMAC, &ep.HostMAC}, {"podMAC", w.PodMAC, &ep.PodMAC}} {
		if m.s == "" {
			continue
		}
		mac, err := net.ParseMAC(m.s)
		if err != nil {
			return nil, api.Errorf(api.CodeBadRequest, "endpoint %s %q: %v", m.name, m.s, err)
		}
		*m.dst = mac
	}
	return ep, nil
}

// ToWire is the endpoint as the socket API shows it.
func ToWire(ep *state.Endpoint) api.Endpoint {
	return api.Endpoint{
		Attachment: api.Attachment{ContainerID: ep.ContainerID, IfName: ep.IfName}, IP: ep.IP.String(), Netns: ep.Netns,
		HostIfName: ep.HostIfName, HostIfIndex: ep.HostIfIndex, HostMAC: macString(ep.HostMAC), PodMAC: macString(ep.PodMAC),
		PodNamespace: ep.PodNamespace, PodName: ep.PodName, Created: ep.Created,
	}
}
