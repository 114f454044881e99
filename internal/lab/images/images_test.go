package images

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRepository(t *testing.T) {
	tests := []struct {
		image string
		want  string
	}{
		{"zwindler/vhelloworld", "zwindler/vhelloworld"},
		{"zwindler/vhelloworld:latest", "zwindler/vhelloworld"},
		{"docker.io/zwindler/vhelloworld:1.0", "zwindler/vhelloworld"},
		{"busybox", "busybox"},
		{"busybox:1.36", "busybox"},
		{"docker.io/library/busybox:1.36", "busybox"},
		{"library/busybox", "busybox"},
		{"registry.k8s.io/coredns/coredns:v1.12.0", "coredns/coredns"},
		{"localhost:5000/glia/echo@sha256:abcd", "glia/echo"},
		{"mirror.example:5000/docker.io/curlimages/curl:8.10.1", "curlimages/curl"},
		{"Glia/Client", "glia/client"},
	}
	for _, tt := range tests {
		if got := Repository(tt.image); got != tt.want {
			t.Errorf("Repository(%q) = %q, want %q", tt.image, got, tt.want)
		}
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		c       Container
		want    Plan
		wantErr error
	}{
		{
			name: "vhelloworld ignores ports and command",
			c:    Container{Image: "zwindler/vhelloworld:latest", Ports: []int{80}, Command: []string{"/vhelloworld"}},
			want: Plan{Repository: "zwindler/vhelloworld", Kind: KindBuiltin, Builtin: BuiltinEcho, Args: []string{"--port", "8081"}},
		},
		{
			name: "glia echo on first container port",
			c:    Container{Image: "ghcr.io/glia/echo:v1", Ports: []int{9090, 80}},
			want: Plan{Repository: "glia/echo", Kind: KindBuiltin, Builtin: BuiltinEcho, Args: []string{"--port", "9090"}},
		},
		{
			name: "glia echo default port",
			c:    Container{Image: "glia/echo"},
			want: Plan{Repository: "glia/echo", Kind: KindBuiltin, Builtin: BuiltinEcho, Args: []string{"--port", "8080"}},
		},
		{
			name: "curl without command sleeps",
			c:    Container{Image: "curlimages/curl"},
			want: Plan{Repository: "curlimages/curl", Kind: KindBuiltin, Builtin: BuiltinSleep},
		},
		{
			name: "curl args alone run curl",
			c:    Container{Image: "curlimages/curl:8.1", Args: []string{"-s", "http://198.18.128.20"}},
			want: Plan{Repository: "curlimages/curl", Kind: KindHost, Args: []string{"curl", "-s", "http://198.18.128.20"}},
		},
		{
			name: "curl args alone that are a program run it",
			c:    Container{Image: "curlimages/curl", Args: []string{"/bin/sh"}},
			want: Plan{Repository: "curlimages/curl", Kind: KindHost, Args: []string{"/bin/sh"}},
		},
		{
			name: "curl command replaces the entrypoint",
			c:    Container{Image: "curlimages/curl", Command: []string{"sleep"}, Args: []string{"-h"}},
			want: Plan{Repository: "curlimages/curl", Kind: KindHost, Args: []string{"sleep", "-h"}},
		},
		{
			name: "busybox command and args",
			c:    Container{Image: "busybox", Command: []string{"sh", "-c"}, Args: []string{"sleep 5"}},
			want: Plan{Repository: "busybox", Kind: KindHost, Args: []string{"sh", "-c", "sleep 5"}},
		},
		{
			name: "busybox args alone are the command",
			c:    Container{Image: "busybox", Args: []string{"sleep", "3600"}},
			want: Plan{Repository: "busybox", Kind: KindHost, Args: []string{"sleep", "3600"}},
		},
		{
			name: "glia client sleeps",
			c:    Container{Image: "glia/client:dev"},
			want: Plan{Repository: "glia/client", Kind: KindBuiltin, Builtin: BuiltinSleep, Files: map[string]string{"/usr/bin/glia": "glia"}, Build: "make build"},
		},
		{
			name: "coredns from registry.k8s.io",
			c:    Container{Image: "registry.k8s.io/coredns/coredns:v1.12.0", Args: []string{"-conf", "/etc/coredns/Corefile"}},
			want: Plan{Repository: "coredns/coredns", Kind: KindCoreDNS},
		},
		{
			name: "coredns short name",
			c:    Container{Image: "coredns:1.15"},
			want: Plan{Repository: "coredns/coredns", Kind: KindCoreDNS},
		},
		{
			name: "unknown image with command runs host binary",
			c:    Container{Image: "example.com/team/tool:1", Command: []string{"/bin/true"}, Args: []string{"x"}},
			want: Plan{Repository: "team/tool", Kind: KindHost, Args: []string{"/bin/true", "x"}},
		},
		{
			name: "glia image runs its default command",
			c:    Container{Image: "localhost:5000/glia:0.1.0"},
			want: Plan{Repository: "glia", Kind: KindHost, Args: []string{"/usr/bin/glia-agent"}, Files: map[string]string{"/usr/bin/glia": "glia", "/usr/bin/glia-agent": "glia-agent", "/usr/bin/glia-cni": "glia-cni"}, Build: "make build", Tag: "0.1.0"},
		},
		{
			name: "glia image runs the command as written",
			c:    Container{Image: "glia@sha256:0123", Command: []string{"glia-agent"}, Args: []string{"init", "mount-bpffs"}},
			want: Plan{Repository: "glia", Kind: KindHost, Args: []string{"glia-agent", "init", "mount-bpffs"}, Files: map[string]string{"/usr/bin/glia": "glia", "/usr/bin/glia-agent": "glia-agent", "/usr/bin/glia-cni": "glia-cni"}, Build: "make build"},
		},
		{
			name: "agnhost default is pause",
			c:    Container{Image: "registry.k8s.io/e2e-test-images/agnhost:2.53"},
			want: Plan{Repository: "e2e-test-images/agnhost", Kind: KindHost, Args: []string{"/agnhost", "pause"}, Files: map[string]string{"/agnhost": "agnhost"}, Build: "make agnhost"},
		},
		{
			name: "agnhost args replace cmd",
			c:    Container{Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Args: []string{"netexec", "--http-port=8080"}},
			want: Plan{Repository: "e2e-test-images/agnhost", Kind: KindHost, Args: []string{"/agnhost", "netexec", "--http-port=8080"}, Files: map[string]string{"/agnhost": "agnhost"}, Build: "make agnhost"},
		},
		{
			name:    "unknown image without command",
			c:       Container{Image: "nginx:1.27", Args: []string{"-g", "daemon off;"}},
			wantErr: ErrNotInCatalog,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(tt.c)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Resolve() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Resolve() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHostFiles(t *testing.T) {
	bin := t.TempDir()
	for _, f := range []string{"glia", "glia-agent", "glia-cni"} {
		if err := os.WriteFile(filepath.Join(bin, f), []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p, err := Resolve(Container{Image: "glia"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.HostFiles(bin)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"/usr/bin/glia": filepath.Join(bin, "glia"), "/usr/bin/glia-agent": filepath.Join(bin, "glia-agent"), "/usr/bin/glia-cni": filepath.Join(bin, "glia-cni")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HostFiles (-want +got):\n%s", diff)
	}
	p, err = Resolve(Container{Image: "registry.k8s.io/e2e-test-images/agnhost:2.53"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.HostFiles(bin); err == nil || !strings.Contains(err.Error(), "make agnhost") || !strings.Contains(err.Error(), filepath.Join(bin, "agnhost")) {
		t.Errorf("missing agnhost: %v, want an error naming the file and `make agnhost`", err)
	}
}

// An image tag of glia selects <bin>/images/glia-<tag>/ when that
// directory exists, else the lab's own bin dir; a tag that is not a tag
// names no directory; other repositories ignore tags.
func TestHostFilesVersionDir(t *testing.T) {
	bin := t.TempDir()
	old := filepath.Join(bin, "images", "glia-v0.0.9")
	for _, dir := range []string{bin, old} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"glia", "glia-agent", "glia-cni", "agnhost"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		image, wantDir string
	}{
		{"glia:v0.0.9", old},
		{"localhost:5000/glia:v0.0.9", old},
		{"glia:v0.0.9@sha256:0123", old},
		{"glia:0.1.0", bin}, // no such directory: the lab's own
		{"glia", bin},
		{"glia@sha256:0123", bin},
		{"registry.k8s.io/e2e-test-images/agnhost:v0.0.9", bin},
	} {
		t.Run(tt.image, func(t *testing.T) {
			p, err := Resolve(Container{Image: tt.image})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.HostFiles(bin)
			if err != nil {
				t.Fatal(err)
			}
			for target, src := range got {
				if filepath.Dir(src) != tt.wantDir {
					t.Errorf("%s from %s, want from %s", target, src, tt.wantDir)
				}
			}
		})
	}
	for _, tt := range []struct{ repo, tag, want string }{
		{"glia", "v1", filepath.Join(bin, "images", "glia-v1")},
		{"glia", "..", ""},
		{"glia", ".hidden", ""},
		{"glia", "a/b", ""},
		{"glia", "", ""},
		{"glia/client", "v1", ""},
	} {
		if got := VersionDir(bin, tt.repo, tt.tag); got != tt.want {
			t.Errorf("VersionDir(%q, %q) = %q, want %q", tt.repo, tt.tag, got, tt.want)
		}
	}
	for image, want := range map[string]string{"glia": "", "glia:1.2": "1.2", "localhost:5000/glia": "", "localhost:5000/glia:x@sha256:0": "x", "glia@sha256:0": ""} {
		if got := Tag(image); got != want {
			t.Errorf("Tag(%q) = %q, want %q", image, got, want)
		}
	}
}

func TestResolveErrorNamesCatalog(t *testing.T) {
	_, err := Resolve(Container{Image: "nginx"})
	if err == nil || !strings.Contains(err.Error(), "catalog") || !strings.Contains(err.Error(), "zwindler/vhelloworld") {
		t.Fatalf("error %v does not name the catalog and its entries", err)
	}
}

// TestReadmeMatchesCatalog checks README.md's table; run with
// GLIA_UPDATE_README=1 to rewrite the table from the catalog.
func TestReadmeMatchesCatalog(t *testing.T) {
	if os.Getenv("GLIA_UPDATE_README") == "1" {
		if err := os.WriteFile("README.md", []byte(readmeHeader+Markdown()+readmeFooter), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), Markdown()) {
		t.Errorf("README.md does not contain the catalog table; it should contain:\n%s", Markdown())
	}
}

func TestEchoHandler(t *testing.T) {
	srv := httptest.NewServer(EchoHandler("web-1"))
	defer srv.Close()
	tests := []struct {
		path string
		want string
	}{
		{"/", "hello from web-1\n"},
		{"/anything", "hello from web-1\n"},
		{"/client-ip", "127.0.0.1\n"},
	}
	for _, tt := range tests {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, string(b)); diff != "" {
			t.Errorf("GET %s mismatch (-want +got):\n%s", tt.path, diff)
		}
	}
}

func TestRunSleepEndsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, BuiltinSleep, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := Run(ctx, "nope", nil, io.Discard); err == nil {
		t.Fatal("unknown program ran")
	}
}

const readmeHeader = `# Lab image catalog

The lab has no container engine: the node runner (internal/lab/noderunner) maps
each container image to a program it runs on this machine, in the pod's own
network, mount and UTS namespaces. The registry host, tag and digest of the
image reference are ignored; the catalog matches on the repository name
(` + "`registry.k8s.io/coredns/coredns:v1.12.0`" + ` → ` + "`coredns/coredns`" + `,
` + "`docker.io/library/busybox`" + ` → ` + "`busybox`" + `).

`

const readmeFooter = `
Every container starts through ` + "`glia lab _pod-init`" + `, which builds its root as a
runtime does: an overlay whose lower layer is the node's root file system (so
host binaries such as ` + "`curl`" + ` are found through the container's PATH) and whose
writes land in a tmpfs of the container's own; an image's own files (the
` + "`glia`" + ` binaries, ` + "`agnhost`" + `) are bind-mounted from the lab's bin dir (` + "`make build`" + `,
` + "`make agnhost`" + `); then fresh /proc, /sys, /dev, /tmp and /run, the pod's
/etc/resolv.conf, /etc/hosts and hostname, and the volumes. Built-in programs run
as ` + "`glia lab _image NAME ARGS...`" + `. The coredns binary is expected next to the glia
binary (` + "`go install github.com/coredns/coredns@v1.15.0`" + `).

This table is generated from the catalog in images.go:
` + "`GLIA_UPDATE_README=1 go test ./internal/lab/images -run TestReadmeMatchesCatalog`" + `.
`
