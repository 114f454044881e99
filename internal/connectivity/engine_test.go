package connectivity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestSummaryLine(t *testing.T) {
	ok := ActionResult{Success: true}
	bad := ActionResult{Success: false, Error: "boom"}
	tests := []struct {
		name    string
		results []TestResult
		want    Summary
		line    string
	}{
		{
			name: "all pass, one skipped",
			results: []TestResult{
				{Name: "a", Actions: []ActionResult{ok, ok}},
				{Name: "b", Actions: []ActionResult{ok}},
				{Name: "c", Skipped: true, SkipReason: "no DNS"},
			},
			want: Summary{Tests: 2, Actions: 3, SkippedTests: 1, Success: true},
			line: "All 2 tests (3 actions) successful, 1 tests skipped, 0 scenarios skipped.",
		},
		{
			name: "one failed action",
			results: []TestResult{
				{Name: "a", Actions: []ActionResult{ok, bad, bad}},
				{Name: "b", Actions: []ActionResult{ok}, SkippedScenarios: []ScenarioSkip{{"x", "y"}}},
			},
			want: Summary{Tests: 2, Actions: 4, SkippedScenarios: 1, FailedTests: 1, FailedActions: 2},
			line: "1/2 tests failed (2/4 actions), 0 tests skipped, 1 scenarios skipped:",
		},
		{
			name:    "nothing ran",
			results: nil,
			want:    Summary{Success: true},
			line:    "All 0 tests (0 actions) successful, 0 tests skipped, 0 scenarios skipped.",
		},
		{
			name: "scenarios of a skipped test are not counted",
			results: []TestResult{
				{Name: "a", Skipped: true, SkippedScenarios: []ScenarioSkip{{"x", "y"}}},
			},
			want: Summary{SkippedTests: 1, Success: true},
			line: "All 0 tests (0 actions) successful, 1 tests skipped, 0 scenarios skipped.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summarize(tt.results)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Summarize (-want +got):\n%s", d)
			}
			if got.Line() != tt.line {
				t.Errorf("Line() = %q, want %q", got.Line(), tt.line)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	names := []string{"health", "pod-to-pod-same-node", "pod-to-pod-cross-node", "pod-to-service", "dns"}
	tests := []struct {
		exprs []string
		want  []string
		err   bool
	}{
		{exprs: nil, want: names},
		{exprs: []string{"pod-to-pod"}, want: []string{"pod-to-pod-same-node", "pod-to-pod-cross-node"}},
		{exprs: []string{"^pod-to-pod-cross-node$"}, want: []string{"pod-to-pod-cross-node"}},
		{exprs: []string{"pod-to", "!cross"}, want: []string{"pod-to-pod-same-node", "pod-to-service"}},
		{exprs: []string{"!pod-to"}, want: []string{"health", "dns"}},
		{exprs: []string{"health,dns"}, want: []string{"health", "dns"}},
		{exprs: []string{"nothing"}, want: nil},
		{exprs: []string{"("}, err: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.exprs, " "), func(t *testing.T) {
			f, err := ParseFilter(tt.exprs)
			if tt.err {
				if err == nil {
					t.Fatal("ParseFilter: want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range names {
				if f.Match(n) {
					got = append(got, n)
				}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("selected (-want +got):\n%s", d)
			}
		})
	}
}

func TestRunnerRecordsActionsSkipsAndFailures(t *testing.T) {
	tests := []Test{
		{Name: "passes", Run: func(ctx context.Context, t *T) {
			for i := 0; i < 3; i++ {
				t.Action("curl", "src", "dst", func(ctx context.Context, r *ActionResult) error {
					r.Command = "curl x"
					return nil
				})
			}
		}},
		{Name: "skips", Run: func(ctx context.Context, t *T) {
			t.Skip("no DNS here")
			panic("not reached")
		}},
		{Name: "fails", Run: func(ctx context.Context, t *T) {
			t.Action("curl", "client (n1)", "echo (n2)", func(ctx context.Context, r *ActionResult) error {
				r.Command, r.Where, r.Output = "curl -sS http://198.19.2.5:8080/", "pod glia-test/client", "curl: (28) Connection timed out"
				return errors.New("command terminated with exit code 28")
			})
			t.Action("ping", "a", "b", func(ctx context.Context, r *ActionResult) error { return nil })
			t.SkipScenario("masquerade", "disabled")
		}},
		{Name: "filtered-out", Run: func(ctx context.Context, t *T) { panic("must not run") }},
	}
	f, err := ParseFilter([]string{"!filtered"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r := &Runner{Tests: tests, Filter: f, Out: &out, Label: "[glia-test]"}
	results := r.Run(context.Background())
	type brief struct {
		Name             string
		Skipped          bool
		Actions, Failed  int
		SkippedScenarios int
	}
	var got []brief
	for _, res := range results {
		got = append(got, brief{res.Name, res.Skipped, len(res.Actions), res.FailedActions(), len(res.SkippedScenarios)})
	}
	want := []brief{{"passes", false, 3, 0, 0}, {"skips", true, 0, 0, 0}, {"fails", false, 2, 1, 1}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("results (-want +got):\n%s", d)
	}
	if n := results[0].Actions[2].Name; n != "passes/curl-2" {
		t.Errorf("third action named %q, want passes/curl-2", n)
	}
	if n := results[2].Actions[1].Name; n != "fails/ping-0" {
		t.Errorf("ping action named %q, want fails/ping-0", n)
	}
	text := out.String()
	for _, want := range []string{
		"Running 3 tests",
		"[=] [glia-test] Test [passes] [1/3] ... ✅ 3 actions",
		"skipped: no DNS here",
		"❌ fails/curl-0: client (n1) -> echo (n2)",
		`command "curl -sS http://198.19.2.5:8080/" in pod glia-test/client failed: command terminated with exit code 28`,
		"got: curl: (28) Connection timed out",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("progress lacks %q:\n%s", want, text)
		}
	}

	rep := NewReport("glia-test", results)
	var rendered bytes.Buffer
	RenderText(&rendered, rep)
	for _, want := range []string{
		"❌ [glia-test] 1/2 tests failed (1/5 actions), 1 tests skipped, 1 scenarios skipped:",
		"Test [fails]:",
		"❌ fails/curl-0: client (n1) -> echo (n2): command terminated with exit code 28",
		"Skipped test [skips]: no DNS here",
		"Skipped scenario [fails/masquerade]: disabled",
	} {
		if !strings.Contains(rendered.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, rendered.String())
		}
	}

	var js bytes.Buffer
	if err := RenderJSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON output does not parse: %v\n%s", err, js.String())
	}
	if d := cmp.Diff(rep, &back, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", d)
	}
	if back.Line != "1/2 tests failed (1/5 actions), 1 tests skipped, 1 scenarios skipped:" || back.Summary.Success {
		t.Errorf("JSON summary = %q success=%t", back.Line, back.Summary.Success)
	}
}

func TestParseCounterByLabel(t *testing.T) {
	tests := []struct {
		name string
		text string
		want map[string]float64
		err  error
	}{
		{
			name: "samples",
			text: `# HELP glia_drops_total Packets dropped by the datapath, by reason.
# TYPE glia_drops_total counter
glia_drops_total{reason="no_backend"} 3
glia_drops_total{reason="invalid"} 1.5e+01
glia_drops_total_other{reason="x"} 7
glia_endpoints 4
`,
			want: map[string]float64{"no_backend": 3, "invalid": 15},
		},
		{
			name: "escaped label and extra labels",
			text: `glia_drops_total{node="a",reason="a \"quoted\" one"} 2` + "\n",
			want: map[string]float64{`a "quoted" one`: 2},
		},
		{
			name: "absent",
			text: "# HELP glia_drops_total x\n# TYPE glia_drops_total counter\nglia_endpoints 4\n",
			err:  errNoMetric,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCounterByLabel(tt.text, "glia_drops_total", "reason")
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if d := cmp.Diff(tt.want, got); tt.err == nil && d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestShellJoin(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"curl", "-sS", "http://1.2.3.4:80/"}, "curl -sS http://1.2.3.4:80/"},
		{[]string{"sh", "-c", "echo 'hi' | cat"}, `sh -c 'echo '\''hi'\'' | cat'`},
		{[]string{"x", ""}, "x ''"},
	}
	for _, tt := range tests {
		if got := shellJoin(tt.in); got != tt.want {
			t.Errorf("shellJoin(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
