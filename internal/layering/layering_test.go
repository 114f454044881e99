package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "glia.dev/glia/"

// pkg is what `go list -json` says of a package.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
}

func (p pkg) name() string { return strings.TrimPrefix(p.ImportPath, module) }

// all imports, the tests' included.
func (p pkg) allImports() []string {
	return slices.Concat(p.Imports, p.TestImports, p.XTestImports)
}

func list(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.name()] = p
	}
	return pkgs
}

// glia keeps the module's own packages of paths, without the prefix.
func glia(paths []string) []string {
	var out []string
	for _, p := range paths {
		if strings.HasPrefix(p, module) {
			out = append(out, strings.TrimPrefix(p, module))
		}
	}
	return out
}

func TestImportRules(t *testing.T) {
	pkgs := list(t)
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages: is this the module?", len(pkgs))
	}
	rules := []struct {
		pkg string
		// mayNot lists packages (and their subpackages, with a trailing
		// "/...") the package must not depend on, directly or not, its
		// tests' imports included.
		mayNot []string
		why    string
	}{
		{"internal/datapath/legacy", []string{"internal/datapath/bpf"}, "the two datapaths stand beside each other on the shared Linux layer"},
		{"internal/datapath/bpf", []string{"internal/datapath/legacy"}, "the two datapaths stand beside each other on the shared Linux layer"},
		{"internal/state", []string{"internal/agent", "internal/k8s", "internal/api", "internal/endpoint", "internal/reconcile", "internal/datapath/...", "internal/maps"},
			"the desired state is the bottom of the flow: its values, and the config it is decided from"},
		{"internal/api", []string{"internal/..."}, "the socket API's package is wire types, paths and the one client"},
		{"internal/k8s", []string{"internal/datapath/...", "internal/reconcile", "internal/endpoint", "internal/agent", "internal/api"},
			"the Kubernetes edge writes the desired state and nothing else"},
		{"internal/datapath/...", []string{"internal/k8s", "internal/reconcile", "internal/endpoint", "internal/agent", "internal/api"},
			"the datapaths are programmed from the desired state only"},
		{"internal/reconcile", []string{"internal/k8s", "internal/endpoint", "internal/agent", "internal/api", "internal/datapath/bpf", "internal/datapath/legacy"},
			"the reconcilers know the datapath's interface, not its edges or implementations"},
		{"internal/endpoint", []string{"internal/datapath", "internal/datapath/bpf", "internal/datapath/legacy", "internal/reconcile", "internal/k8s"},
			"the endpoint manager hands endpoints to the desired state, whoever programs them"},
		{"cmd/glia-cni", []string{"internal/state", "internal/reconcile", "internal/datapath", "internal/datapath/bpf", "internal/k8s"},
			"the CNI plugin is thin: the agent owns all state"},
	}
	matches := func(pattern, name string) bool {
		if base, ok := strings.CutSuffix(pattern, "/..."); ok {
			return name == base || strings.HasPrefix(name, base+"/")
		}
		return name == pattern
	}
	for _, r := range rules {
		found := false
		for name, p := range pkgs {
			if !matches(r.pkg, name) {
				continue
			}
			found = true
			deps := glia(p.Deps)
			// The tests' own imports count too (and what they import).
			for _, imp := range glia(p.allImports()) {
				deps = append(deps, imp)
				deps = append(deps, glia(pkgs[imp].Deps)...)
			}
			for _, d := range deps {
				for _, bad := range r.mayNot {
					if matches(bad, d) && d != name {
						t.Errorf("%s depends on %s: %s", name, d, r.why)
					}
				}
			}
		}
		if !found {
			t.Errorf("rule for %s matches no package: update the rule", r.pkg)
		}
	}
	// The CNI plugin runs once per pod operation: none of the agent's
	// state machinery may be linked in.
	for _, d := range pkgs["cmd/glia-cni"].Deps {
		if strings.HasPrefix(d, "github.com/cilium/statedb") || strings.HasPrefix(d, "github.com/cilium/hive") {
			t.Errorf("cmd/glia-cni links %s", d)
		}
	}
}

// TestNoImportCycle walks the graph of the module's packages (the tests'
// imports included, as the build does not check them together): a cycle
// is named.
func TestNoImportCycle(t *testing.T) {
	pkgs := list(t)
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(string) bool
	visit = func(n string) bool {
		switch state[n] {
		case active:
			i := slices.Index(stack, n)
			t.Errorf("import cycle: %s -> %s", strings.Join(stack[i:], " -> "), n)
			return false
		case done:
			return true
		}
		state[n] = active
		stack = append(stack, n)
		ok := true
		for _, imp := range glia(pkgs[n].Imports) {
			ok = visit(imp) && ok
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return ok
	}
	for n := range pkgs {
		visit(n)
	}
	// And the rule test's own premise: every datapath imports the shared layer.
	for _, dp := range []string{"internal/datapath/legacy", "internal/datapath/bpf"} {
		if !slices.Contains(glia(pkgs[dp].Imports), "internal/datapath/linux") {
			t.Errorf("%s does not build on internal/datapath/linux", dp)
		}
	}
}
