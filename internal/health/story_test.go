package health

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// storyPath is the users' story, beside the repository (shared/), or
// where $GLIA_STORY says (a git worktree elsewhere).
func storyPath() string {
	if p := os.Getenv("GLIA_STORY"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "..", "shared", "reference", "migration-story.txt")
}

// storyHealthLines is the story's `cilium-health status` output, trimmed:
// from the story when it is there (the testdata copy must equal it), else
// the copy.
func storyHealthLines(t *testing.T) []string {
	t.Helper()
	copied := nonComment(t, readFile(t, filepath.Join("testdata", "story-health-lines.txt")))
	storyFile := storyPath()
	story, err := os.ReadFile(storyFile)
	if os.IsNotExist(err) {
		t.Logf("%s is not there: using the copy in testdata", storyFile)
		return copied
	}
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in := false
	for _, l := range strings.Split(string(story), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.Contains(l, "-- cilium-health status"):
			in = true
		case in && l == "[...]":
			in = false
		case in && l != "":
			lines = append(lines, l)
		}
	}
	if !slices.Equal(lines, copied) {
		t.Errorf("testdata's copy differs from the story's cilium-health status output:\ncopy:  %q\nstory: %q", copied, lines)
	}
	return lines
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func nonComment(t *testing.T, b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

var (
	reProbeTime = regexp.MustCompile(`^Probe time: (\S+)$`)
	reNode      = regexp.MustCompile(`^(\S+?)( \(localhost\))?:$`)
	rePath      = regexp.MustCompile(`^(Host|Endpoint) connectivity to (\S+):$`)
	reProbe     = regexp.MustCompile(`^(ICMP to stack|HTTP to agent): OK, RTT=(\S+)$`)
)

// parseStory builds the Report the story's output shows.
func parseStory(t *testing.T, lines []string) Report {
	t.Helper()
	var rep Report
	var path *PathStatus
	for _, l := range lines {
		switch {
		case l == "Nodes:":
		case reProbeTime.MatchString(l):
			pt, err := time.Parse(time.RFC3339, reProbeTime.FindStringSubmatch(l)[1])
			if err != nil {
				t.Fatal(err)
			}
			rep.ProbeTime = pt
		case rePath.MatchString(l):
			m := rePath.FindStringSubmatch(l)
			n := &rep.Nodes[len(rep.Nodes)-1]
			p := PathStatus{Addr: netip.MustParseAddr(m[2])}
			if m[1] == "Host" {
				n.Host = p
				path = &n.Host
			} else {
				n.Endpoint = &p
				path = n.Endpoint
			}
		case reProbe.MatchString(l):
			m := reProbe.FindStringSubmatch(l)
			rtt, err := time.ParseDuration(m[2])
			if err != nil {
				t.Fatal(err)
			}
			r := ProbeResult{OK: true, RTT: rtt}
			if m[1] == ICMPName {
				path.ICMP = r
			} else {
				path.HTTP = r
			}
		case reNode.MatchString(l):
			m := reNode.FindStringSubmatch(l)
			rep.Nodes = append(rep.Nodes, NodeStatus{Name: m[1], Local: m[2] != ""})
		default:
			t.Fatalf("story line %q: this test cannot read it: add a case", l)
		}
	}
	return rep
}

// TestStoryLines: glia prints the story's cilium-health status output line
// for line (indentation aside) for the same probe results.
func TestStoryLines(t *testing.T) {
	lines := storyHealthLines(t)
	rep := parseStory(t, lines)
	if len(rep.Nodes) < 2 {
		t.Fatalf("read %d nodes from the story: %+v", len(rep.Nodes), rep)
	}
	var b bytes.Buffer
	if err := Render(&b, rep, true); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		got = append(got, strings.TrimSpace(l))
	}
	// The story's lines, in order, then glia's Cluster health line.
	if len(got) != len(lines)+1 || !slices.Equal(got[:len(lines)], lines) {
		t.Errorf("output (trimmed) differs from the story's:\ngot:\n%s\nwant:\n%s\n(and a Cluster health line)", strings.Join(got, "\n"), strings.Join(lines, "\n"))
	}
	if want := "Cluster health: 2/2 reachable (2023-09-12T14:47:03Z)"; got[len(got)-1] != want {
		t.Errorf("last line %q, want %q", got[len(got)-1], want)
	}
}
