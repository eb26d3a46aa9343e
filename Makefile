# microagent build, test and benchmark entry points. See README.md.
GO      ?= go
BIN     := $(CURDIR)/bin
PKGS    := ./...
# The version is the git tag (v1.2.3), or what git describe makes of the
# commits since it; release packages are named after it.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
LDFLAGS := -X github.com/microagent-dev/microagent/cli.Version=$(VERSION) -X github.com/microagent-dev/microagent/cli.Commit=$(COMMIT)
PREFIX  ?= /usr/local
DIST    ?= $(CURDIR)/dist

.PHONY: all build install release deps test-deps setup test fuzz-smoke bench vet docs clean

all: build

# The host CLI and, beside it, the static guest agent it puts in every VM,
# the static network helper it runs for every VM with a user network and the
# Kubernetes node. All are stripped of DWARF and the symbol table (-s -w:
# microagent 28 -> 19 MB, microagent-node 92 -> 64 MB); panics still print
# function names and lines.
build:
	$(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(BIN)/microagent ./cmd/microagent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/microagent-net ./cmd/microagent-net
	$(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o $(BIN)/microagent-node ./cmd/microagent-node
	CGO_ENABLED=0 GOEXPERIMENT=runtimesecret $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/microagent-agent ./cmd/microagent-agent

# The four binaries side by side in $(DESTDIR)$(PREFIX)/bin: the CLI looks
# for the guest agent, the network helper and the node beside itself.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/microagent $(BIN)/microagent-net $(BIN)/microagent-agent $(BIN)/microagent-node $(DESTDIR)$(PREFIX)/bin/

# dist/microagent-$(VERSION)-linux-amd64.tar.gz, a .deb (nfpm) and SHA256SUMS.
# scripts/release is its own module, so nfpm stays out of microagent's go.mod.
release: build
	cd scripts/release && $(GO) run . -version '$(VERSION)' -bin '$(BIN)' -root '$(CURDIR)' -out '$(DIST)' \
	  -mtime "$$(git log -1 --format=%ct 2>/dev/null || echo 0)"

# Host packages: QEMU, e2fsprogs, busybox-static, a registry for the tests.
deps:
	bash scripts/install-deps.sh

# What the tests need beyond deps: a Vault server, the sops CLI and a
# Kubernetes control plane (etcd from apt; kube-apiserver, kube-scheduler,
# kube-controller-manager and kubectl), built from the Go module proxy into
# caches outside the repository (~26-31 min the first time, nothing after).
test-deps: deps
	bash scripts/install-vault.sh
	bash scripts/install-sops.sh
	bash scripts/install-k8s.sh

# Everything a fresh host needs, then a first workload (see README).
setup: deps build
	bash scripts/demo.sh

# go.mod and go.sum must be what `go mod tidy` makes of the imports (a direct
# dependency marked indirect, say, fails here, with the diff to apply).
vet:
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

# The whole suite, VM tests included (they run on TCG where KVM is absent).
test: build vet
	MICROAGENT_AGENT=$(BIN)/microagent-agent $(GO) test -race -timeout 60m -count=1 $(PKGS)
	$(MAKE) fuzz-smoke

# Every fuzz target a few seconds past its seed corpus (which go test runs):
# a smoke run for CI; run one for minutes with FUZZTIME=10m.
FUZZ    := ./tarcopy:FuzzExtract ./channel:FuzzReadFrame ./supervisor:FuzzServerRequest \
           ./secrets:FuzzParseRef ./secrets:FuzzParseDecl ./secrets:FuzzParseDotenv ./guest:FuzzParseSecretRequest ./vmm/usernet/intercept:FuzzFind
FUZZTIME ?= 5s
fuzz-smoke:
	@for t in $(FUZZ); do \
	  echo "fuzz $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -parallel 1 $${t%%:*} >/tmp/fuzz-$$$$.log 2>&1 \
	    || { cat /tmp/fuzz-$$$$.log; rm -f /tmp/fuzz-$$$$.log; exit 1; }; \
	  tail -1 /tmp/fuzz-$$$$.log; rm -f /tmp/fuzz-$$$$.log; \
	done

# The CLI reference (docs/cli/*.md) and man pages (docs/cli/man/*.1),
# generated from the command tree; internal/gendocs's test fails while they
# differ from the code.
docs:
	$(GO) run ./internal/gendocs docs/cli

bench: build
	MICROAGENT_AGENT=$(BIN)/microagent-agent $(GO) run ./bench -out docs/performance.md

clean:
	rm -rf $(BIN) $(DIST)
