// Package images is the lab's image catalog: there is no container engine in
// the lab, so the node runner maps each container image to a program it can
// run on this machine. The registry host, tag and digest of a reference are
// ignored; the catalog matches on the repository name.
//
//	repository                     what runs
//	zwindler/vhelloworld           built-in echo server on :8081, "hello from <pod>"
//	glia/echo                      built-in echo server on the first containerPort (default 8080),
//	                               also answers /client-ip with the address it saw
//	curlimages/curl                command/args as host binaries (args alone starting with an
//	                               option run "curl ARGS", other args run as the command, as the
//	                               image's entrypoint does), otherwise the built-in sleep program
//	busybox                        command/args as host binaries, otherwise sleep
//	glia/client                    command/args as host binaries, otherwise sleep
//	coredns/coredns (or coredns)   the coredns binary beside the glia binary, with a
//	                               Corefile written by the runner
//	glia                           the lab's glia, glia-agent and glia-cni at /usr/bin;
//	                               command as written (default /usr/bin/glia-agent)
//	e2e-test-images/agnhost        the lab's agnhost binary at /agnhost (entrypoint),
//	                               default args "pause"
//	anything else                  the container's command as a host binary; without a
//	                               command the image cannot run (ErrNotInCatalog)
//
// Every container's root is the node's root file system seen through an
// overlay (internal/lab/podinit); an image's Files are bind-mounted into it,
// so a program runs "as written", found through the container's PATH.
//
// Built-in programs run as `glia lab _image NAME ARGS...` (see Run).
// README.md in this directory holds the same table.
package images

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Built-in program names, run by Run.
const (
	BuiltinEcho  = "echo"
	BuiltinSleep = "sleep"
)

// ErrNotInCatalog reports an image the lab cannot run.
var ErrNotInCatalog = errors.New("image not in the lab image catalog")

// Kind says how a container runs.
type Kind int

const (
	// KindBuiltin runs a built-in program (Plan.Builtin, Plan.Args) through
	// `glia lab _image`.
	KindBuiltin Kind = iota + 1
	// KindHost runs Plan.Args[0] with Plan.Args[1:], found in the
	// container's root: the image's Files, else the node's root file
	// system (host binaries).
	KindHost
	// KindCoreDNS runs the coredns binary beside the glia binary with a
	// Corefile written by the runner; Plan.Args is empty.
	KindCoreDNS
)

func (k Kind) String() string {
	switch k {
	case KindBuiltin:
		return "builtin"
	case KindHost:
		return "host"
	case KindCoreDNS:
		return "coredns"
	}
	return "unknown"
}

// Container is what the catalog needs to know about a container.
type Container struct {
	Image   string
	Command []string
	Args    []string
	// Ports are the container's containerPorts, in order.
	Ports []int
}

// Plan says how to run one container.
type Plan struct {
	// Repository is the catalog key the image matched, or the image's
	// repository when it ran as a plain command.
	Repository string
	Kind       Kind
	// Builtin is the built-in program for KindBuiltin.
	Builtin string
	// Args are the built-in program's arguments (KindBuiltin) or the host
	// program and its arguments (KindHost).
	Args []string
	// Files are the image's own files: container path → file in the lab's
	// bin dir (a relative name) or an absolute host path.
	Files map[string]string
	// Build says how to build the files when they are missing.
	Build string
	// Tag is the image's tag, for a repository whose tags select a
	// version of its files (glia): HostFiles takes relative files from
	// VersionDir(binDir, Repository, Tag) when that directory exists.
	Tag string
}

// tagPattern is the grammar of an image tag; nothing else names a
// directory.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Tag returns the tag of an image reference ("" for none, or a digest).
func Tag(image string) string {
	ref := strings.TrimSpace(image)
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i >= 0 && i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return ""
}

// VersionDir is the directory holding the files of tag of a versioned
// repository: <binDir>/images/<repository>-<tag>, e.g. bin/images/glia-0.1.0
// for glia:0.1.0 (the upgrade test builds an earlier glia there). A tag
// that is not a valid image tag has none.
func VersionDir(binDir, repository, tag string) string {
	if !tagPattern.MatchString(tag) || strings.Contains(repository, "/") {
		return ""
	}
	return filepath.Join(binDir, "images", repository+"-"+tag)
}

// HostFiles returns p.Files with names resolved against binDir, or an
// error (the container's ErrImagePull) naming a missing file and how to
// build it.
func (p Plan) HostFiles(binDir string) (map[string]string, error) {
	if p.Tag != "" {
		if dir := VersionDir(binDir, p.Repository, p.Tag); dir != "" {
			if st, err := os.Stat(dir); err == nil && st.IsDir() {
				binDir = dir
			}
		}
	}
	out := make(map[string]string, len(p.Files))
	for target, src := range p.Files {
		if !filepath.IsAbs(src) {
			src = filepath.Join(binDir, src)
		}
		st, err := os.Stat(src)
		if err != nil || st.IsDir() {
			return nil, fmt.Errorf("image %s needs %s for %s, which is missing (build it with `%s`)", p.Repository, src, target, p.Build)
		}
		out[target] = src
	}
	return out, nil
}

type entry struct {
	repositories []string
	// versioned: the image's tag selects its files (Plan.Tag).
	versioned bool
	describe  string
	plan      func(c Container) (Plan, error)
}

func echoOn(defaultPort int, usePorts bool) func(Container) (Plan, error) {
	return func(c Container) (Plan, error) {
		port := defaultPort
		if usePorts && len(c.Ports) > 0 && c.Ports[0] > 0 {
			port = c.Ports[0]
		}
		return Plan{Kind: KindBuiltin, Builtin: BuiltinEcho, Args: []string{"--port", strconv.Itoa(port)}}, nil
	}
}

// commandOrSleep runs the container's command (or entrypoint+args) as a host
// binary, or sleeps when the container gives neither.
func commandOrSleep(entrypoint []string) func(Container) (Plan, error) {
	return func(c Container) (Plan, error) {
		if argv := commandLine(c, entrypoint); len(argv) > 0 {
			return Plan{Kind: KindHost, Args: argv}, nil
		}
		return Plan{Kind: KindBuiltin, Builtin: BuiltinSleep}, nil
	}
}

// curlEntrypoint follows the curlimages/curl image, whose entrypoint runs
// its arguments as the command unless the first one is an option, which
// goes to curl: `kubectl run -it --image curlimages/curl x -- /bin/sh` runs
// a shell, `... -- -s URL` runs curl.
func curlEntrypoint(c Container) (Plan, error) {
	if len(c.Command) == 0 && len(c.Args) > 0 && !strings.HasPrefix(c.Args[0], "-") {
		return Plan{Kind: KindHost, Args: append([]string(nil), c.Args...)}, nil
	}
	return commandOrSleep([]string{"curl"})(c)
}

// commandLine follows Kubernetes' rules: command replaces the image's
// entrypoint, args replace its cmd.
func commandLine(c Container, entrypoint []string) []string {
	if len(c.Command) == 0 && len(c.Args) == 0 {
		return nil
	}
	return imageCommand(c, entrypoint, nil)
}

// imageCommand is what runs for an image with entrypoint and cmd: command
// replaces the entrypoint (and drops cmd), args replace cmd.
func imageCommand(c Container, entrypoint, cmd []string) []string {
	if len(c.Command) > 0 {
		return append(append([]string(nil), c.Command...), c.Args...)
	}
	if len(c.Args) > 0 {
		return append(append([]string(nil), entrypoint...), c.Args...)
	}
	return append(append([]string(nil), entrypoint...), cmd...)
}

// fileImage is an image made of files from the lab's bin dir: its program
// runs as written, found through the container's PATH.
func fileImage(files map[string]string, build string, entrypoint, cmd []string) func(Container) (Plan, error) {
	return func(c Container) (Plan, error) {
		argv := imageCommand(c, entrypoint, cmd)
		if len(argv) == 0 {
			return Plan{}, errors.New("the container gives no command and the image has none")
		}
		return Plan{Kind: KindHost, Args: argv, Files: files, Build: build}, nil
	}
}

// withFiles adds the lab's files (built by the make target build) to an
// image's plans.
func withFiles(plan func(Container) (Plan, error), files map[string]string, build string) func(Container) (Plan, error) {
	return func(c Container) (Plan, error) {
		p, err := plan(c)
		if err == nil {
			p.Files, p.Build = files, build
		}
		return p, err
	}
}

var catalog = []entry{
	{
		repositories: []string{"zwindler/vhelloworld"},
		describe:     "built-in echo server on :8081 answering `hello from <pod>`",
		plan:         echoOn(8081, false),
	},
	{
		repositories: []string{"glia/echo"},
		describe:     "built-in echo server on the first containerPort (default 8080); `/client-ip` answers the client address it saw",
		plan:         echoOn(8080, true),
	},
	{
		repositories: []string{"curlimages/curl"},
		describe:     "command/args as host binaries (args alone starting with an option run `curl ARGS`, other args run as the command, as the image's entrypoint does); otherwise the built-in sleep",
		plan:         curlEntrypoint,
	},
	{
		repositories: []string{"busybox"},
		describe:     "command/args as host binaries; otherwise the built-in sleep",
		plan:         commandOrSleep(nil),
	},
	{
		repositories: []string{"glia/client"},
		describe:     "the lab's `glia` at `/usr/bin/glia` (for `glia connectivity` programs, as in the `glia` image); command/args as host binaries; otherwise the built-in sleep",
		plan:         withFiles(commandOrSleep(nil), map[string]string{"/usr/bin/glia": "glia"}, "make build"),
	},
	{
		repositories: []string{"coredns/coredns", "coredns"},
		describe:     "the `coredns` binary beside the glia binary, with a Corefile written by the runner (kubernetes plugin, ready on :8181)",
		plan: func(Container) (Plan, error) {
			return Plan{Kind: KindCoreDNS}, nil
		},
	},
	{
		repositories: []string{"glia"},
		versioned:    true,
		describe:     "glia's image: the lab's `glia`, `glia-agent` and `glia-cni` at `/usr/bin` — for `glia:TAG`, those of `<bin>/images/glia-TAG/` when that directory exists (another version of glia, e.g. the upgrade test's), else the lab's own; the command runs as written through PATH (default `/usr/bin/glia-agent`)",
		plan: fileImage(map[string]string{
			"/usr/bin/glia":       "glia",
			"/usr/bin/glia-agent": "glia-agent",
			"/usr/bin/glia-cni":   "glia-cni",
		}, "make build", nil, []string{"/usr/bin/glia-agent"}),
	},
	{
		repositories: []string{"e2e-test-images/agnhost"},
		describe:     "the upstream e2e image: the lab's `agnhost` at `/agnhost` (entrypoint; default args `pause`); ErrImagePull naming `make agnhost` when it is not built",
		plan:         fileImage(map[string]string{"/agnhost": "agnhost"}, "make agnhost", []string{"/agnhost"}, []string{"pause"}),
	},
}

// Repository returns the repository name of an image reference: without the
// registry host, tag and digest, and without Docker Hub's "library/" prefix.
//
//	registry.k8s.io/coredns/coredns:v1.12.0 → coredns/coredns
//	docker.io/library/busybox:1.36           → busybox
//	localhost:5000/glia/echo@sha256:…         → glia/echo
func Repository(image string) string {
	ref := strings.TrimSpace(image)
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	// A tag is a ':' after the last '/'; a ':' before it belongs to a host:port.
	if i := strings.LastIndex(ref, ":"); i >= 0 && i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	parts := strings.Split(ref, "/")
	// Registry hosts are the leading components that look like hosts; strip
	// up to the last of them ("after the last registry host").
	start := 0
	for i := 0; i < len(parts)-1; i++ {
		if looksLikeHost(parts[i]) {
			start = i + 1
		}
	}
	parts = parts[start:]
	if len(parts) > 1 && parts[0] == "library" {
		parts = parts[1:]
	}
	return strings.ToLower(strings.Join(parts, "/"))
}

func looksLikeHost(s string) bool {
	return s == "localhost" || strings.ContainsAny(s, ".:")
}

// Resolve says how to run c, or returns an error wrapping ErrNotInCatalog.
func Resolve(c Container) (Plan, error) {
	repo := Repository(c.Image)
	for _, e := range catalog {
		for _, r := range e.repositories {
			if r == repo {
				p, err := e.plan(c)
				if err != nil {
					return Plan{}, err
				}
				p.Repository = e.repositories[0]
				if e.versioned {
					p.Tag = Tag(c.Image)
				}
				return p, nil
			}
		}
	}
	if len(c.Command) > 0 {
		return Plan{Repository: repo, Kind: KindHost, Args: commandLine(c, nil)}, nil
	}
	return Plan{}, fmt.Errorf("%w: %q (repository %q) has no entry and the container has no command to run as a host binary; known repositories: %s",
		ErrNotInCatalog, c.Image, repo, strings.Join(Known(), ", "))
}

// Known lists the catalog's repositories, sorted.
func Known() []string {
	var out []string
	for _, e := range catalog {
		out = append(out, e.repositories...)
	}
	sort.Strings(out)
	return out
}

// Markdown renders the catalog as the markdown table kept in README.md.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| repository | what runs |\n|---|---|\n")
	for _, e := range catalog {
		names := make([]string, len(e.repositories))
		for i, r := range e.repositories {
			names[i] = "`" + r + "`"
		}
		fmt.Fprintf(&b, "| %s | %s |\n", strings.Join(names, ", "), e.describe)
	}
	b.WriteString("| anything else | the container's `command` (+`args`) as a host binary; without a command the pod stays Waiting with reason `ErrImagePull` naming this catalog |\n")
	return b.String()
}
