package connectivity

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// printer writes the progress of a run as `cilium connectivity test` does:
// a line per test with a mark per action, failures in full.
type printer struct {
	w       io.Writer
	verbose bool
	label   string
	// open is true while a test line waits for its end.
	open bool
}

func (p *printer) printf(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, format, args...)
	}
}

func (p *printer) prefix() string {
	if p.label == "" {
		return ""
	}
	return p.label + " "
}

func (p *printer) testStart(name string, i, n int) {
	p.printf("[=] %sTest [%s] [%d/%d] ", p.prefix(), name, i, n)
	p.open = true
}

func (p *printer) closeLine() {
	if p.open {
		p.printf("\n")
		p.open = false
	}
}

func (p *printer) action(r ActionResult) {
	if p.verbose {
		p.closeLine()
		mark := "✅"
		if !r.Success {
			mark = "❌"
		}
		p.printf("  %s %s: %s -> %s\n", mark, r.Name, r.Source, r.Destination)
		if !r.Success {
			p.printf("%s", failureDetail(r, "     "))
		}
		return
	}
	if r.Success {
		p.printf(".")
	} else {
		p.printf("x")
	}
}

func (p *printer) scenarioSkipped(test, scenario, reason string) {
	p.closeLine()
	p.printf("  ⏭️  %s/%s skipped: %s\n", test, scenario, reason)
}

func (p *printer) testEnd(r *TestResult, i, n int) {
	if r.Skipped {
		// The line opened by testStart names the test; finish it.
		p.closeLine()
		p.printf("  ⏭️  skipped: %s\n", r.SkipReason)
		return
	}
	failed := r.FailedActions()
	if !p.verbose && p.open {
		if failed == 0 {
			p.printf(" ✅ %d actions\n", len(r.Actions))
		} else {
			p.printf(" ❌ %d/%d actions failed\n", failed, len(r.Actions))
		}
		p.open = false
	} else {
		p.closeLine()
	}
	if failed > 0 && !p.verbose {
		for _, a := range r.Actions {
			if !a.Success {
				p.printf("  ❌ %s: %s -> %s\n%s", a.Name, a.Source, a.Destination, failureDetail(a, "     "))
			}
		}
	}
}

// failureDetail says what a failed action ran and what came back.
func failureDetail(a ActionResult, indent string) string {
	var b strings.Builder
	if a.Command != "" {
		where := ""
		if a.Where != "" {
			where = " in " + a.Where
		}
		fmt.Fprintf(&b, "%scommand %q%s failed: %s\n", indent, a.Command, where, a.Error)
	} else {
		fmt.Fprintf(&b, "%s%s\n", indent, a.Error)
	}
	if out := strings.TrimSpace(a.Output); out != "" {
		lines := strings.Split(out, "\n")
		if len(lines) > 10 {
			lines = append(lines[:10], fmt.Sprintf("... (%d more lines)", len(lines)-10))
		}
		fmt.Fprintf(&b, "%sgot: %s\n", indent, strings.Join(lines, "\n"+indent+"     "))
	}
	return b.String()
}

// NewReport builds the report of a run.
func NewReport(namespace string, results []TestResult) *Report {
	s := Summarize(results)
	if results == nil {
		results = []TestResult{}
	}
	for i := range results {
		if results[i].Actions == nil {
			results[i].Actions = []ActionResult{}
		}
	}
	return &Report{Namespace: namespace, Tests: results, Summary: s, Line: s.Line()}
}

// RenderText prints the final report: the summary line, the failed actions
// and the skipped tests with their reasons.
func RenderText(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\n📋 Test Report [%s]\n", r.Namespace)
	if r.Summary.Success {
		fmt.Fprintf(w, "✅ [%s] %s\n", r.Namespace, r.Line)
	} else {
		fmt.Fprintf(w, "❌ [%s] %s\n", r.Namespace, r.Line)
		for _, t := range r.Tests {
			if !t.Failed() {
				continue
			}
			fmt.Fprintf(w, "Test [%s]:\n", t.Name)
			for _, a := range t.Actions {
				if !a.Success {
					fmt.Fprintf(w, "  ❌ %s: %s -> %s: %s\n", a.Name, a.Source, a.Destination, firstLine(a.Error))
				}
			}
		}
	}
	for _, t := range r.Tests {
		if t.Skipped {
			fmt.Fprintf(w, "⏭️  Skipped test [%s]: %s\n", t.Name, t.SkipReason)
		}
		for _, s := range t.SkippedScenarios {
			fmt.Fprintf(w, "⏭️  Skipped scenario [%s/%s]: %s\n", t.Name, s.Scenario, s.Reason)
		}
	}
}

// RenderJSON prints the report as indented JSON.
func RenderJSON(w io.Writer, r *Report) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
