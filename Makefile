# Targets carry a "## text" comment: `make help` (the default) lists them.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
.DEFAULT_GOAL := help

GO      ?= go
PKG     := github.com/tasksweeper/sweeper
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)

# Two modules: the product (the root go.mod) and its tooling (tools/go.mod:
# benchmarks, stress suite, image builder, deploy and monitoring tests, and
# the tools gotestsum, nfpm and staticcheck as tool directives). Each is built
# and tested on its own go.mod; go.work is for editors and local work.
export GOWORK := off

# tool runs a tool of tools/go.mod from the current directory: $(call tool,gotestsum)
tool = "$$(cd tools && $(GO) tool -n $(1))"

# Packages and extra flags of `make test`: PKGS of the product module and
# TOOLS_PKGS of the tools module (none when only PKGS is given), e.g.
# make test PKGS=./ledger/... TESTFLAGS=-v
PKGS       ?= ./...
TOOLS_PKGS ?= $(if $(filter command line,$(origin PKGS)),,./...)
TESTFLAGS  ?=
GOTEST     := $(GO) test -json -race -count=1 -timeout 30m $(TESTFLAGS)

.PHONY: setup
setup: ## Install what the tests need on a Debian machine (as root; otherwise print the apt-get command); a no-op when nothing is missing
	.ci/setup

.PHONY: help
help: ## Show this list of targets
	@echo "Usage: make <target>"
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_.-]+:.*## / { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/sweeper with version and commit stamped in
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sweeper ./cmd/sweeper

.PHONY: test
test: setup ## Install what is missing (.ci/setup), run the tests of both modules with the race detector against a real PostgreSQL (gotestsum), print counts
	SWEEPER_REQUIRE_DB=1 $(call tool,gotestsum) --format pkgname-and-test-fails --format-hide-empty-pkg \
		--post-run-command "bash -c 'p=\$$((TESTS_TOTAL - TESTS_FAILED - TESTS_SKIPPED)); \
			echo \"tests: \$$((p < 0 ? 0 : p)) passed, \$$TESTS_FAILED failed, \$$TESTS_SKIPPED skipped\"'" \
		--raw-command -- $(MAKE) --no-print-directory -s test-json

# test-json: the `go test -json` stream of both modules that `make test` reads.
# The two modules run at the same time (most tests wait on PostgreSQL, not on
# the CPU); the tools module's stream follows the product's when both end.
.PHONY: test-json
test-json:
	@rc=0; out=$$(mktemp); \
	$(if $(TOOLS_PKGS),(cd tools && $(GOTEST) $(TOOLS_PKGS) >$$out && echo 0 >$$out.rc || echo 1 >$$out.rc) & ) \
	$(GOTEST) $(PKGS) || rc=$$?; \
	$(if $(TOOLS_PKGS),wait; cat $$out; [ "$$(cat $$out.rc 2>/dev/null)" = 0 ] || rc=1;) rm -f $$out $$out.rc; exit $$rc

# `make stress`: the storm's duration and each fuzz target's time, e.g. make stress STRESS_DURATION=5m
STRESS_DURATION ?= 60s
FUZZTIME        ?= 10s

.PHONY: stress
stress: ## Race storms (STRESS_DURATION: direct, PgBouncer, failover sync/async), faults, security, hostile input, fuzzing (FUZZTIME each); prints a summary
	cd tools && $(GO) build -o ../bin/stressrun ./stress/cmd/stressrun
	bin/stressrun -duration $(STRESS_DURATION) -fuzztime $(FUZZTIME)

# `make bench`: ledger sizes and extra flags of bench/cmd/sweeperbench, e.g.
# make bench BENCH_SIZES=100000,1000000 (shorter), BENCH_FLAGS="-ingest 10s"
# (BENCH_FLAGS=-hotpath=false leaves out the hot path against schema 5)
BENCH_SIZES ?= 100000,1000000,5000000
BENCH_FLAGS ?=

.PHONY: bench
bench: build bin/sweeperbench ## Benchmarks at BENCH_SIZES rows, the plan test at 1M and the hot path against schema 5; rewrites docs/benchmarks.md and its charts
	BENCH_COMMAND="make bench$(if $(filter command line,$(origin BENCH_SIZES)), BENCH_SIZES=$(BENCH_SIZES))" \
		bin/sweeperbench -sizes $(BENCH_SIZES) -binary bin/sweeper $(BENCH_FLAGS)

.PHONY: bench-quick
bench-quick: build bin/sweeperbench ## A few-minute benchmark run (100k and 1M rows, no steady state: make bench-steady) into bin/bench-quick/, docs untouched
	BENCH_COMMAND="make bench-quick" bin/sweeperbench -sizes 100000,1000000 -binary bin/sweeper \
		-ingest 3s -cron-window 30s -adaptive-window 15s -api-duration 5s -feed-events 100 -plan-rows 200000 \
		-out bin/bench-quick/benchmarks.md -img bin/bench-quick -steady-days 0 $(BENCH_FLAGS)

# `make bench-steady`: only the retention steady state, a simulated month
# (PostgreSQL under libfaketime: apt-get install libfaketime), e.g.
# make bench-steady BENCH_FLAGS="-steady-days 60 -steady-per-day 50000"
.PHONY: bench-steady
bench-steady: bin/sweeperbench ## The retention steady state alone (a simulated month, needs libfaketime) into bin/bench-steady/, docs untouched
	mkdir -p bin/bench-steady
	BENCH_COMMAND="make bench-steady" bin/sweeperbench -steady-only -binary "" \
		-out bin/bench-steady/benchmarks.md -img bin/bench-steady $(BENCH_FLAGS)

# The benchmark command, built from the tools module, runs from the
# repository root (docs/, bin/sweeper, ./sweep/ are relative to it).
.PHONY: bin/sweeperbench
bin/sweeperbench:
	cd tools && $(GO) build -o ../bin/sweeperbench ./bench/cmd/sweeperbench

.PHONY: lint
lint: ## Check both modules: formatting (gofmt), go vet, staticcheck, and go.mod/go.sum tidy
	@files=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi
	staticcheck=$(call tool,staticcheck); \
	for mod in . tools; do \
		echo "== $$mod"; \
		(cd $$mod && $(GO) mod tidy -diff && $(GO) vet ./... && "$$staticcheck" ./...) || exit 1; \
	done

.PHONY: deploy-check
deploy-check: ## Check systemd units (verify, exposure <= 2.0), shipped configs and Kubernetes manifests
	GO=$(GO) deploy/check.sh

.PHONY: monitoring-check
monitoring-check: ## promtool check/test of the alert rules, dashboard and metric names (installs promtool)
	GO=$(GO) monitoring/check.sh

.PHONY: image
image: ## Build the container image without Docker (dist/sweeper-image-amd64.tar) and inspect it
	GO=$(GO) VERSION=$(VERSION) COMMIT=$(COMMIT) ARCHES=amd64 STEPS="binaries images" deploy/dist.sh

.PHONY: dist
dist: ## Static binaries (linux/amd64, arm64), .debs and image tarballs in dist/, listed
	GO=$(GO) VERSION=$(VERSION) COMMIT=$(COMMIT) deploy/dist.sh

.PHONY: demo
demo: ## Run `sweeper dev`: throwaway PostgreSQL, demo ledger, fast sweeps (Ctrl-C stops)
	$(GO) run ./cmd/sweeper dev

.PHONY: clean
clean: ## Remove build output (bin/, dist/)
	rm -rf bin dist

# --- console browser tests (owned with console/) ---
.PHONY: test-browser
test-browser: ## Console browser tests: headless chromium + playwright-core vs a dev server and PostgreSQL; rewrites docs/console/*.png
	GO=$(GO) console/browser/run.sh
