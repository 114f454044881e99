package status

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"glia.dev/glia/internal/api"
)

// storyPath is the users' story, beside the repository (shared/), or
// where $GLIA_STORY says (a git worktree elsewhere).
func storyPath() string {
	if p := os.Getenv("GLIA_STORY"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "..", "shared", "reference", "migration-story.txt")
}

// storyStatusLines are the story's `cilium status` lines glia must print
// alike: the story's when it is there (every copied line must still be in
// it), else the copy in testdata.
func storyStatusLines(t *testing.T) []string {
	t.Helper()
	copied := readLines(t, filepath.Join("testdata", "story-status-lines.txt"))
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
	for _, l := range strings.Split(string(story), "\n") {
		l = strings.TrimSpace(l)
		for _, key := range []string{"Host Routing:", "Masquerading:", "Cluster health:"} {
			if strings.HasPrefix(l, key) {
				lines = append(lines, l)
			}
		}
	}
	for _, c := range copied {
		if !slices.Contains(lines, c) {
			t.Errorf("testdata copies %q, which the story no longer has: copy the story's lines again", c)
		}
	}
	return lines
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
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
	reHostRouting = regexp.MustCompile(`^Host Routing: (BPF|Legacy)$`)
	reMasqIPT     = regexp.MustCompile(`^Masquerading: IPTables \[IPv4: (Enabled|Disabled), IPv6: Disabled\]$`)
	reMasqBPF     = regexp.MustCompile(`^Masquerading: BPF \[(\S+)\] (\S+) \[IPv4: (Enabled|Disabled), IPv6: Disabled\]$`)
	reHealth      = regexp.MustCompile(`^Cluster health: (\d+)/(\d+) reachable \((\S+)\)$`)
)

// TestStoryLines gives a status the values of each of the story's lines and
// checks glia prints that very line, so whatever a user greps for in
// `cilium status` output matches glia's.
func TestStoryLines(t *testing.T) {
	lines := storyStatusLines(t)
	if len(lines) < 4 {
		t.Fatalf("only %d story lines: %q", len(lines), lines)
	}
	for _, line := range lines {
		s := storyStatus(t, nil)
		switch m := (struct{ hr, ipt, bpf, h []string }{reHostRouting.FindStringSubmatch(line), reMasqIPT.FindStringSubmatch(line),
			reMasqBPF.FindStringSubmatch(line), reHealth.FindStringSubmatch(line)}); {
		case m.hr != nil:
			s.HostRouting = api.HostRoutingStatus{Mode: m.hr[1], Reason: "some reason"}
		case m.ipt != nil:
			s.Masquerading = api.MasqueradingStatus{Mode: "IPTables", IPv4: m.ipt[1] == "Enabled"}
		case m.bpf != nil:
			s.Masquerading = api.MasqueradingStatus{Mode: "BPF", Device: m.bpf[1], CIDR: m.bpf[2], IPv4: m.bpf[3] == "Enabled"}
		case m.h != nil:
			r, _ := strconv.Atoi(m.h[1])
			n, _ := strconv.Atoi(m.h[2])
			at, err := time.Parse(time.RFC3339, m.h[3])
			if err != nil {
				t.Fatal(err)
			}
			s.ClusterHealth = &api.ClusterHealthStatus{Reachable: r, Total: n, ProbeTime: at}
		default:
			t.Errorf("story line %q: no case of this test sets its values: add one", line)
			continue
		}
		for _, verbose := range []bool{false, true} {
			var b bytes.Buffer
			if err := Render(&b, s, verbose); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(strings.Split(b.String(), "\n"), line) {
				t.Errorf("verbose=%t: no line %q in:\n%s", verbose, line, b.String())
			}
		}
	}
}

// TestCiliumKeys: every line of `cilium status` glia has an equivalent of
// starts with Cilium's key, one space after the colon.
func TestCiliumKeys(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, storyStatus(t, nil), false); err != nil {
		t.Fatal(err)
	}
	out := strings.Split(b.String(), "\n")
	for _, key := range []string{"Kubernetes: ", "KubeProxyReplacement: ", "IPAM: ", "Routing: ", "Host Routing: ",
		"Masquerading: ", "Controller Status: ", "Cluster health: "} {
		found := slices.ContainsFunc(out, func(l string) bool { return strings.HasPrefix(l, key) && !strings.HasPrefix(l, key+" ") })
		if !found {
			t.Errorf("no line starting %q (one space after the colon) in:\n%s", key, b.String())
		}
	}
}
