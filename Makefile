# glia — build, lab and tests. `make lab` brings up a 3-node lab running the
# story's web server; `make test` runs the whole suite (unit, privileged, lab
# end-to-end). Both need root (network namespaces, BPF, iptables).

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
K8S_VERSION := v1.37.2
COREDNS_VERSION := v1.15.0
HELM_VERSION := v4.3.2
NODES ?= 3

K8S_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=37 \
	-X $(p).gitTreeState=clean -X $(p).buildDate=2026-11-01T00:00:00Z)

# glia's build information (package internal/version), stamped into every
# binary `make build` and `make image` make: the release is the chart's
# appVersion (its default image tag), the commit is git's (with -dirty when
# the tree has changes). A plain `go build` says version "dev".
GLIA_VERSION ?= $(or $(shell sed -n 's/^appVersion: *//p' deploy/chart/glia/Chart.yaml 2>/dev/null | tr -d "\"' "),dev)
GLIA_COMMIT := $(shell git rev-parse HEAD 2>/dev/null)$(shell git rev-parse HEAD >/dev/null 2>&1 && ! git diff --quiet HEAD 2>/dev/null && echo -dirty)
GLIA_LDFLAGS = -X glia.dev/glia/internal/version.version=$(GLIA_VERSION) -X glia.dev/glia/internal/version.commit=$(GLIA_COMMIT)

# deploy/ whole: the binaries embed the Helm chart (templates, schema, NOTES).
GO_SOURCES := $(shell find cmd internal bpf -type f \( -name '*.go' -o -name '*.o' -o -name '*.yaml' \) 2>/dev/null) $(shell find deploy -type f) go.mod go.sum

.PHONY: all deps build old-glia image lab lab-down test test-unit test-e2e fuzz generate clean e2e-bin

all: build

deps:
	@scripts/deps.sh

build: $(BIN)/glia $(BIN)/glia-agent $(BIN)/glia-cni $(BIN)/glia-k8s $(BIN)/coredns $(BIN)/helm

$(BIN)/glia $(BIN)/glia-agent $(BIN)/glia-cni: $(GO_SOURCES)
	@mkdir -p $(BIN)
	@echo "==> building glia, glia-agent, glia-cni"
	@$(GO) build -ldflags '$(GLIA_LDFLAGS)' -o $(BIN)/ ./cmd/glia ./cmd/glia-agent ./cmd/glia-cni

# glia at an earlier commit, for the upgrade test: its glia, glia-agent and
# glia-cni in bin/images/glia-<commit12>/ (the lab runs image
# glia:<commit12> from there) and its chart in .../chart; cached by commit.
OLD_GLIA_COMMIT ?= $(shell sed -n 's/^const upgradeFromCommit = "\(.*\)".*/\1/p' test/e2e/upgrade_test.go 2>/dev/null)
old-glia:
	@scripts/build-old-glia.sh $(OLD_GLIA_COMMIT) $(BIN)

# The real Kubernetes control plane and kube-proxy, from k8s.io/kubernetes.
# About 7 minutes on 2 cores when the Go build cache is cold, under a minute warm.
$(BIN)/glia-k8s: k8s/go.mod k8s/go.sum k8s/main.go
	@mkdir -p $(BIN)
	@echo "==> building glia-k8s (kube-apiserver, controller-manager, scheduler, kube-proxy $(K8S_VERSION)); ~7 min cold"
	@cd k8s && ../scripts/gobuild-progress.sh glia-k8s -trimpath -ldflags '$(K8S_LDFLAGS)' -o $(BIN)/glia-k8s .

# CoreDNS, built from its own Go module (about 2 minutes cold).
$(BIN)/coredns:
	@mkdir -p $(BIN)
	@echo "==> building coredns $(COREDNS_VERSION); ~2 min cold"
	@GOBIN=$(BIN) $(GO) install github.com/coredns/coredns@$(COREDNS_VERSION)

# The upstream Kubernetes e2e suite's own programs, from the same module (not
# part of build): agnhost, the suite's test image program (the lab's image
# catalog runs bin/agnhost for registry.k8s.io/e2e-test-images/agnhost), and
# the suite itself, bin/e2e.test (run it against the lab with
# --provider=skeleton --kubeconfig /run/glia-lab/kubeconfig). Cold on 2 idle
# cores: agnhost about 4 minutes, e2e.test about 8.5; warm, under a minute.
e2e-bin: $(BIN)/agnhost $(BIN)/e2e.test

$(BIN)/agnhost: k8s/go.mod k8s/go.sum
	@mkdir -p $(BIN)
	@echo "==> building agnhost $(K8S_VERSION); ~4 min cold"
	@cd k8s && $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/agnhost k8s.io/kubernetes/test/images/agnhost

$(BIN)/e2e.test: k8s/go.mod k8s/go.sum k8s/tools.go
	@mkdir -p $(BIN)
	@echo "==> building the upstream e2e suite $(K8S_VERSION) (bin/e2e.test); ~8.5 min cold"
	@cd k8s && $(GO) test -c -trimpath -ldflags '$(K8S_LDFLAGS)' -o $(BIN)/e2e.test k8s.io/kubernetes/test/e2e

# The OCI image glia (not part of build): glia, glia-agent and glia-cni built
# static and reproducibly, with this host's iptables/nftables userspace and
# every library it loads, written without Docker by cmd/glia-image as an OCI
# layout (bin/image/oci) and a docker-save tarball (bin/image/glia.tar) tagged
# glia:$(GLIA_VERSION). Same sources and packages, same digest.
IMAGE_DIR := $(BIN)/image
IMAGE_EPOCH = $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct 2>/dev/null),0)
IMAGE_REVISION = $(shell git rev-parse HEAD 2>/dev/null)

image: deps
	@mkdir -p $(IMAGE_DIR)/bin
	@echo "==> building glia, glia-agent, glia-cni for the image (static, reproducible)"
	@CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -buildvcs=false -ldflags '-s -w -buildid= $(GLIA_LDFLAGS)' \
	  -o $(IMAGE_DIR)/bin/ ./cmd/glia ./cmd/glia-agent ./cmd/glia-cni
	@$(GO) build -o $(IMAGE_DIR)/glia-image ./cmd/glia-image
	@echo "==> assembling image glia:$(GLIA_VERSION)"
	@$(IMAGE_DIR)/glia-image --bin-dir $(IMAGE_DIR)/bin --repository glia --version '$(GLIA_VERSION)' \
	  --revision '$(IMAGE_REVISION)' --source-date-epoch '$(IMAGE_EPOCH)' \
	  --oci-layout $(IMAGE_DIR)/oci --tarball $(IMAGE_DIR)/glia.tar

# Helm, built from its own Go module (stamped with its version, as Helm's own
# release build does): the lab installs glia with it, and the chart's tests
# (package deploy) lint and render deploy/chart/glia with it. About 7 minutes
# of CPU cold; 14 minutes measured on 2 busy cores, modules downloaded.
$(BIN)/helm:
	@mkdir -p $(BIN)
	@echo "==> building helm $(HELM_VERSION); up to ~14 min cold"
	@GOBIN=$(BIN) $(GO) install -ldflags '-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)' helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

# The lab: 3 nodes, the story's DaemonSet and Service, then `glia status` of each node.
lab: deps build
	@$(BIN)/glia lab up --nodes $(NODES)
	@echo "==> applying the story's web server DaemonSet, Service and curl pod (examples/story)"
	@KUBECONFIG=$$($(BIN)/glia lab kubeconfig) kubectl apply -f examples/story/webserver.yaml -f examples/story/curler.yaml
	@KUBECONFIG=$$($(BIN)/glia lab kubeconfig) kubectl rollout status daemonset/simple-webserver-daemonset --timeout=120s
	@KUBECONFIG=$$($(BIN)/glia lab kubeconfig) kubectl wait --for=condition=Ready pod/curler --timeout=120s
	@KUBECONFIG=$$($(BIN)/glia lab kubeconfig) kubectl get nodes -o wide
	@KUBECONFIG=$$($(BIN)/glia lab kubeconfig) kubectl get pods -o wide
	@echo "==> waiting (up to 40 s) for every node's health probes to reach the whole cluster"
	@for i in $$(seq 1 $(NODES)); do for t in $$(seq 1 40); do \
	  $(BIN)/glia status --node lab-node-$$i | grep -q "Cluster health: *$(NODES)/$(NODES) reachable" && break; sleep 1; done; done
	@for i in $$(seq 1 $(NODES)); do echo "==> glia status --node lab-node-$$i"; $(BIN)/glia status --node lab-node-$$i; done
	@echo "==> from the curler pod: curl http://simple-webserver-service:8081 (a few times: every backend answers)"
	@for t in $$(seq 1 30); do $(BIN)/glia lab exec curler -- curl -sf --max-time 3 http://simple-webserver-service:8081 >/dev/null && break; \
	  [ $$t -lt 30 ] || { echo "simple-webserver-service did not answer within 30 s" >&2; exit 1; }; sleep 1; done
	@for t in 1 2 3 4 5 6; do $(BIN)/glia lab exec curler -- curl -s --max-time 3 http://simple-webserver-service:8081; done

lab-down:
	@$(BIN)/glia lab down

# The whole suite: unit and privileged tests, brief fuzzing, then the lab end-to-end tests.
test: deps build
	@echo "==> unit and privileged tests"
	@# containernetworking's testutils.NewNS makes /run/netns a mount point
	@# (as `ip netns` does) and never undoes it: undo it when the tests made it.
	@had_dir=$$(test -d /run/netns && echo y); had_mount=$$(mountpoint -q /run/netns && echo y); \
	GLIA_BIN=$(BIN) $(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v /test/e2e); rc=$$?; \
	if [ -z "$$had_mount" ] && mountpoint -q /run/netns && [ -z "$$(ls -A /run/netns)" ]; then umount /run/netns; fi; \
	if [ -z "$$had_dir" ] && [ -d /run/netns ] && ! mountpoint -q /run/netns; then rmdir /run/netns 2>/dev/null; fi; \
	exit $$rc
	@$(MAKE) --no-print-directory fuzz
	@echo "==> lab end-to-end tests"
	@GLIA_E2E=1 GLIA_BIN=$(BIN) $(GO) test -count=1 -timeout 60m -v ./test/e2e/

FUZZ_TARGETS := ./internal/cni:FuzzParseConfig ./internal/api:FuzzDecodeRequest
FUZZTIME ?= 10s
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "==> fuzz $$fn ($$pkg, $(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; done

# Regenerate the BPF objects (needs clang-19); the results are committed.
generate:
	@scripts/deps.sh generate
	@$(GO) generate ./internal/datapath/bpf/ ./internal/datapath/policydp/

clean:
	rm -rf $(BIN)
