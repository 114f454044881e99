package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestJSONKeys(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, FormatJSON, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	agent := log.With(KeySubsys, "daemon", KeyNode, "lab-node-1")
	agent.Info("Datapath decided", "datapath", "legacy")
	health := agent.With(KeySubsys, "health")
	health.Info("probe round", "nodes", 3)
	agent.Info("BPF host routing requires enable-bpf-masquerade", KeySubsys, "datapath", "blockingKey", "enable-bpf-masquerade")
	agent.Debug("not shown")
	agent.WithGroup("g").Info("grouped", "k", "v")

	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		if strings.Count(l, `"subsys"`) != 1 {
			t.Errorf("line %q: subsys must appear once", l)
		}
		delete(m, "time")
		got = append(got, m)
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "Datapath decided", "subsys": "daemon", "node": "lab-node-1", "datapath": "legacy"},
		{"level": "INFO", "msg": "probe round", "subsys": "health", "node": "lab-node-1", "nodes": float64(3)},
		{"level": "INFO", "msg": "BPF host routing requires enable-bpf-masquerade", "subsys": "datapath", "node": "lab-node-1", "blockingKey": "enable-bpf-masquerade"},
		{"level": "INFO", "msg": "grouped", "subsys": "daemon", "node": "lab-node-1", "g": map[string]any{"k": "v"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("lines (-want +got):\n%s", d)
	}
}

func TestText(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, FormatText, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	log.With(KeySubsys, "daemon").With(KeySubsys, "health").Info("hi")
	if got := b.String(); !strings.Contains(got, `level=INFO msg=hi subsys=health`) || strings.Count(got, "subsys=") != 1 {
		t.Errorf("text line %q", got)
	}
}

func TestCheckFormat(t *testing.T) {
	for _, tt := range []struct {
		f  string
		ok bool
	}{{"text", true}, {"json", true}, {"JSON", false}, {"", false}, {"logfmt", false}} {
		err := CheckFormat(tt.f)
		if (err == nil) != tt.ok {
			t.Errorf("%q: %v", tt.f, err)
		}
		if err != nil && !strings.Contains(err.Error(), "use text or json") {
			t.Errorf("%q: error %q does not say what to use", tt.f, err)
		}
	}
}
