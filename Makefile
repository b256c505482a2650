# zun-wsproxy: build and test.
GO ?= go

.PHONY: bench bench-100k all build image test test-env check unit fuzz mutation clean web demo demo-stop security soak

all: build

# build makes a static binary (no cgo: the SQLite driver is pure Go, and
# Go's own DNS resolver serves), which runs in any Linux image, scratch
# included. BIN_DIR chooses where it goes.
BIN_DIR ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN_DIR)/zun-wsproxy ./cmd/zun-wsproxy

# image builds the container image (deploy/container/Dockerfile) from the
# static binary, offline: FROM scratch, nothing is pulled. The build
# context is BIN_DIR.
IMAGE ?= zun-wsproxy:$(VERSION)
image: build
	docker build -q -f deploy/container/Dockerfile -t $(IMAGE) $(BIN_DIR)

# test-env installs and starts what the integration tests need (MariaDB,
# dockerd, the offline busybox image, python3-zunclient). Idempotent.
test-env:
	bash scripts/test-env.sh

# check: formatting and vet, without the integration environment.
check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# IN_ENV runs a command in the network namespace of the tests' servers
# (scripts/test-env.sh starts them there, out of this machine's network).
IN_ENV = bash scripts/in-test-env.sh

# test is THE test command: the whole suite, against real components, then
# each fuzz target briefly from its committed seed corpus.
test: test-env check
	$(IN_ENV) $(GO) test -race -count=1 -timeout 20m -skip '^(TestSecuritySuite|TestSoak)$$' ./...
	$(IN_ENV) $(GO) test -race -count=1 ./internal/proxy/ -park-all -engine goroutines
	$(IN_ENV) $(GO) test -race -count=1 -skip '^(TestSecuritySuite|TestSoak)$$' ./internal/proxy/ ./internal/server/ -engine goroutines
	$(GO) test -count=1 -run '^TestRelayAllocatesNothing$$' ./internal/proxy/
	$(GO) test -count=1 -run '^TestRelayAllocatesNothing$$' ./internal/proxy/ -engine goroutines
	$(MAKE) security
	$(MAKE) security SECURITY_ENGINE=goroutines
	$(MAKE) soak
	$(MAKE) fuzz FUZZTIME=$(CI_FUZZTIME)

# security runs the hostile-input suite and prints its table, on the
# default engine (SECURITY_ENGINE=goroutines: on the goroutine engine).
SECURITY_ENGINE ?= loop
security:
	$(IN_ENV) $(GO) test -race -count=1 -run '^TestSecuritySuite$$' -v ./internal/server/ -engine $(SECURITY_ENGINE)

# A count, not a duration: with a duration, Go's fuzzing coordinator
# (before Go 1.27, golang/go#75804) can report "context deadline exceeded"
# at the deadline with no failing input when the machine is busy.
CI_FUZZTIME ?= 100000x

# soak runs 200 concurrent sessions with faults for SOAK (40s in CI; try
# SOAK=30m) and prints a summary line.
SOAK ?= 40s
soak:
	$(IN_ENV) $(GO) test -race -count=1 -timeout 60m -run '^TestSoak$$' -v ./internal/server/ -soak=$(SOAK)

# unit runs only the tests that need no external component.
unit:
	$(GO) test -race -count=1 ./internal/websocket/ ./internal/proxy/ ./internal/auth/ ./internal/config/ ./internal/proxyproto/ ./internal/front/
	$(GO) test -count=1 -run '^TestRelayAllocatesNothing$$' ./internal/proxy/

# fuzz runs each fuzz target briefly (FUZZTIME=30s by default).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./internal/websocket/
	$(GO) test -run '^$$' -fuzz '^FuzzReadChunk$$' -fuzztime $(FUZZTIME) ./internal/websocket/
	$(GO) test -run '^$$' -fuzz '^FuzzRegroup$$' -fuzztime $(FUZZTIME) ./internal/proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzOriginCheck$$' -fuzztime $(FUZZTIME) ./internal/auth/
	$(GO) test -run '^$$' -fuzz '^FuzzParseQuery$$' -fuzztime $(FUZZTIME) ./internal/auth/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config/
	$(GO) test -run '^$$' -fuzz '^FuzzParseDatabaseURL$$' -fuzztime $(FUZZTIME) ./internal/config/
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./internal/recording/
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./internal/proxyproto/
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./internal/proxyproto/
	$(GO) test -run '^$$' -fuzz '^FuzzForwardedFor$$' -fuzztime $(FUZZTIME) ./internal/server/
	$(GO) test -run '^$$' -fuzz '^FuzzParseHead$$' -fuzztime $(FUZZTIME) ./internal/front/
	$(GO) test -run '^$$' -fuzz '^FuzzAPIEndpoint$$' -fuzztime $(FUZZTIME) ./internal/docker/
	$(GO) test -run '^$$' -fuzz '^FuzzExecStartAnswer$$' -fuzztime $(FUZZTIME) ./internal/docker/

# mutation measures how many small deliberate bugs the pure packages' tests
# notice (gremlins' test efficacy) and fails if a package is below
# MUTATION_MIN percent; docs/MUTATION.md lists the mutants no test can
# notice. Slow (about 15 minutes): not part of test. gremlins is installed,
# at the pinned version, in .tools/ (module proxy needed the first time).
GREMLINS_VERSION ?= v0.6.0
GREMLINS = .tools/gremlins-$(GREMLINS_VERSION)/gremlins
MUTATION_MIN ?= 90
MUTATION_PKGS ?= internal/utf8tail internal/auth internal/recording internal/idle internal/config internal/websocket
mutation: $(GREMLINS)
	$(IN_ENV) bash scripts/mutation.sh $(CURDIR)/$(GREMLINS) $(MUTATION_MIN) $(MUTATION_PKGS)

$(GREMLINS):
	GOBIN=$(CURDIR)/$(dir $(GREMLINS)) $(GO) install github.com/go-gremlins/gremlins/cmd/gremlins@$(GREMLINS_VERSION)

# bench prints the performance figures (docs/PERFORMANCE.md); bench-100k
# holds 100,000 idle sessions through the proxy and prints their memory.
bench:
	bash scripts/bench.sh
# Each session is two descriptors in the proxy: where the hard limit on open
# files cannot be raised to 200,000+ (it takes CAP_SYS_RESOURCE), it runs as
# many sessions as the limit allows and says so.
bench-100k:
	@limit=$$(bash -c 'ulimit -n 1048576 2>/dev/null; ulimit -n'); \
	n=100000; max=$$(( (limit - 500) / 2 )); \
	if [ $$max -lt $$n ]; then echo "open-file limit $$limit (hard limit, not raisable here): $$max sessions at most, not $$n"; n=$$max; fi; \
	BENCH_NGINX=0 BENCH_BACKENDS=8 bash scripts/bench.sh -only idle -idle $$n -idle-settle 10s

clean:
	rm -rf bin .tools

# web rebuilds the web console's assets (web/dist, embedded in the binary)
# from the npm packages pinned in web/package-lock.json.
web:
	cd web && npm ci --no-audit --no-fund && node build.mjs

# demo takes a fresh Debian/Ubuntu machine to a working web console (see
# scripts/demo.sh); demo-stop removes what it started.
demo:
	bash scripts/demo.sh

demo-stop:
	bash scripts/demo.sh stop
