package connectivity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Test is one named connectivity test, made of actions: one action is one
// probe between one source and one destination.
type Test struct {
	Name string
	// Run performs the test's actions through t. It may call t.Skip before
	// its first action when the cluster lacks what the test needs.
	Run func(ctx context.Context, t *T)
}

// ActionResult is the outcome of one action.
type ActionResult struct {
	// Name is "<test>/<probe>-<n>", e.g. "pod-to-pod-cross-node/curl-0".
	Name        string `json:"name"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Command is the exact command the action ran, and Where where it ran
	// it ("pod glia-test/client-5d8f", "node lab-node-1").
	Command string `json:"command,omitempty"`
	Where   string `json:"where,omitempty"`
	Success bool   `json:"success"`
	// Output is what came back (stdout and stderr, trimmed).
	Output string `json:"output,omitempty"`
	// Error says why the action failed.
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration"`
}

// ScenarioSkip is a part of a test that did not run, and why.
type ScenarioSkip struct {
	Scenario string `json:"scenario"`
	Reason   string `json:"reason"`
}

// TestResult is the outcome of one test.
type TestResult struct {
	Name       string         `json:"name"`
	Skipped    bool           `json:"skipped,omitempty"`
	SkipReason string         `json:"skipReason,omitempty"`
	Actions    []ActionResult `json:"actions"`
	// SkippedScenarios are parts of the test that did not run.
	SkippedScenarios []ScenarioSkip `json:"skippedScenarios,omitempty"`
	Duration         time.Duration  `json:"duration"`
}

// Failed says whether any action of the test failed.
func (r TestResult) Failed() bool { return r.FailedActions() > 0 }

// FailedActions counts the failed actions of the test.
func (r TestResult) FailedActions() int {
	n := 0
	for _, a := range r.Actions {
		if !a.Success {
			n++
		}
	}
	return n
}

// Summary counts a run's results. Tests counts the tests that ran (not the
// skipped ones, nor those left out by --test).
type Summary struct {
	Tests            int  `json:"tests"`
	Actions          int  `json:"actions"`
	SkippedTests     int  `json:"skippedTests"`
	SkippedScenarios int  `json:"skippedScenarios"`
	FailedTests      int  `json:"failedTests"`
	FailedActions    int  `json:"failedActions"`
	Success          bool `json:"success"`
}

// Report is the result of a run, as printed by -o json.
type Report struct {
	Namespace string       `json:"namespace"`
	Tests     []TestResult `json:"tests"`
	Summary   Summary      `json:"summary"`
	// Line is the summary line of the text output.
	Line string `json:"line"`
}

// Summarize counts results.
func Summarize(results []TestResult) Summary {
	var s Summary
	for _, r := range results {
		if r.Skipped {
			s.SkippedTests++
			continue
		}
		s.Tests++
		s.Actions += len(r.Actions)
		s.SkippedScenarios += len(r.SkippedScenarios)
		if f := r.FailedActions(); f > 0 {
			s.FailedTests++
			s.FailedActions += f
		}
	}
	s.Success = s.FailedTests == 0
	return s
}

// Line is the summary line, as `cilium connectivity test` prints it.
func (s Summary) Line() string {
	if s.Success {
		return fmt.Sprintf("All %d tests (%d actions) successful, %d tests skipped, %d scenarios skipped.",
			s.Tests, s.Actions, s.SkippedTests, s.SkippedScenarios)
	}
	return fmt.Sprintf("%d/%d tests failed (%d/%d actions), %d tests skipped, %d scenarios skipped:",
		s.FailedTests, s.Tests, s.FailedActions, s.Actions, s.SkippedTests, s.SkippedScenarios)
}

// ErrFailed is returned (wrapped) by commands when a test failed, so that
// the CLI exits non-zero.
var ErrFailed = errors.New("connectivity test failed")

// Filter selects tests by name: a test runs when it matches one of the
// include expressions (or there are none) and none of the exclude ones.
type Filter struct {
	include, exclude []*regexp.Regexp
}

// ParseFilter parses --test values: regular expressions matched against test
// names; a leading "!" excludes. Values may also be comma-separated.
func ParseFilter(exprs []string) (Filter, error) {
	var f Filter
	for _, e := range exprs {
		for _, part := range strings.Split(e, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			neg := strings.HasPrefix(part, "!")
			re, err := regexp.Compile(strings.TrimPrefix(part, "!"))
			if err != nil {
				return Filter{}, fmt.Errorf("--test %q: %w", part, err)
			}
			if neg {
				f.exclude = append(f.exclude, re)
			} else {
				f.include = append(f.include, re)
			}
		}
	}
	return f, nil
}

// Match says whether the test named name is selected.
func (f Filter) Match(name string) bool {
	for _, re := range f.exclude {
		if re.MatchString(name) {
			return false
		}
	}
	if len(f.include) == 0 {
		return true
	}
	for _, re := range f.include {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// T is handed to a Test's Run: it runs and records actions.
type T struct {
	ctx     context.Context
	res     *TestResult
	p       *printer
	timeout time.Duration
	n       map[string]int
}

// errSkip ends a test's Run after Skip.
type skipPanic struct{}

// Skip marks the test skipped with reason and ends it. It must be called
// before the first action.
func (t *T) Skip(reason string) {
	if len(t.res.Actions) > 0 {
		t.res.Actions = append(t.res.Actions, ActionResult{
			Name: t.res.Name + "/skip", Error: "test skipped after it ran actions: " + reason,
		})
		panic(skipPanic{})
	}
	t.res.Skipped, t.res.SkipReason = true, reason
	panic(skipPanic{})
}

// SkipScenario records that a part of the test did not run, and why.
func (t *T) SkipScenario(scenario, reason string) {
	t.res.SkippedScenarios = append(t.res.SkippedScenarios, ScenarioSkip{Scenario: scenario, Reason: reason})
	t.p.scenarioSkipped(t.res.Name, scenario, reason)
}

// Action runs one action: probe is a short name of the probe ("curl",
// "ping", ...); f runs it, filling r.Command, r.Where and r.Output, and
// returns why it failed, or nil.
func (t *T) Action(probe, source, destination string, f func(ctx context.Context, r *ActionResult) error) bool {
	if t.n == nil {
		t.n = map[string]int{}
	}
	r := ActionResult{
		Name:        fmt.Sprintf("%s/%s-%d", t.res.Name, probe, t.n[probe]),
		Source:      source,
		Destination: destination,
	}
	t.n[probe]++
	ctx, cancel := context.WithTimeout(t.ctx, t.timeout)
	start := time.Now()
	err := f(ctx, &r)
	cancel()
	r.Duration = time.Since(start)
	r.Success = err == nil
	if err != nil {
		r.Error = err.Error()
	}
	t.res.Actions = append(t.res.Actions, r)
	t.p.action(r)
	return r.Success
}

// Runner runs tests in order.
type Runner struct {
	Tests  []Test
	Filter Filter
	// Out receives the text progress; nil prints nothing.
	Out     io.Writer
	Verbose bool
	// ActionTimeout bounds each action (default 30s).
	ActionTimeout time.Duration
	// Label prefixes the progress lines, e.g. "[glia-test]".
	Label string
}

// Selected returns the tests the filter selects.
func (r *Runner) Selected() []Test {
	var out []Test
	for _, t := range r.Tests {
		if r.Filter.Match(t.Name) {
			out = append(out, t)
		}
	}
	return out
}

// Run runs the selected tests and returns their results.
func (r *Runner) Run(ctx context.Context) []TestResult {
	p := &printer{w: r.Out, verbose: r.Verbose, label: r.Label}
	timeout := r.ActionTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	sel := r.Selected()
	p.printf("🏃 %sRunning %d tests ...\n", p.prefix(), len(sel))
	var results []TestResult
	for i, test := range sel {
		res := TestResult{Name: test.Name}
		p.testStart(test.Name, i+1, len(sel))
		t := &T{ctx: ctx, res: &res, p: p, timeout: timeout}
		start := time.Now()
		runTest(ctx, test, t)
		res.Duration = time.Since(start)
		p.testEnd(&res, i+1, len(sel))
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	return results
}

func runTest(ctx context.Context, test Test, t *T) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(skipPanic); ok {
				return
			}
			panic(v)
		}
	}()
	test.Run(ctx, t)
}
