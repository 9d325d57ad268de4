# Targets carry a "## text" comment: `make help` (the default) lists them.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
.DEFAULT_GOAL := help

GO      ?= go
PKG     := github.com/tasksweeper/sweeper
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)

# Packages and extra flags of `make test`, e.g. make test PKGS=./ledger/... TESTFLAGS=-v
PKGS      ?= ./...
TESTFLAGS ?=

STATICCHECK_VERSION := v0.8.2
GOBIN       := $(or $(shell $(GO) env GOBIN),$(shell $(GO) env GOPATH)/bin)
STATICCHECK := $(GOBIN)/staticcheck

.PHONY: help
help: ## Show this list of targets
	@echo "Usage: make <target>"
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_.-]+:.*## / { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/sweeper with version and commit stamped in
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sweeper ./cmd/sweeper

.PHONY: test
test: ## Run all tests with the race detector against a real PostgreSQL, then print counts
	$(GO) build -o bin/testsummary ./internal/tools/testsummary
	SWEEPER_REQUIRE_DB=1 $(GO) test -race -count=1 -json $(TESTFLAGS) $(PKGS) | bin/testsummary

# `make stress`: the storm's duration and each fuzz target's time, e.g. make stress STRESS_DURATION=5m
STRESS_DURATION ?= 60s
FUZZTIME        ?= 10s

.PHONY: stress
stress: ## Race storm (STRESS_DURATION), faults, security, hostile input, fuzzing (FUZZTIME each); prints a summary
	$(GO) run ./stress/cmd/stressrun -duration $(STRESS_DURATION) -fuzztime $(FUZZTIME)

# `make bench`: ledger sizes and extra flags of bench/cmd/sweeperbench, e.g.
# make bench BENCH_SIZES=100000,1000000 (shorter), BENCH_FLAGS="-ingest 10s"
BENCH_SIZES ?= 100000,1000000,5000000
BENCH_FLAGS ?=

.PHONY: bench
bench: build ## Benchmarks at BENCH_SIZES rows and the plan test at 1M; rewrites docs/benchmarks.md and its charts
	BENCH_COMMAND="make bench$(if $(filter command line,$(origin BENCH_SIZES)), BENCH_SIZES=$(BENCH_SIZES))" \
		$(GO) run ./bench/cmd/sweeperbench -sizes $(BENCH_SIZES) -binary bin/sweeper $(BENCH_FLAGS)

.PHONY: bench-quick
bench-quick: build ## A few-minute benchmark run (100k and 1M rows) into bin/bench-quick/, docs untouched
	BENCH_COMMAND="make bench-quick" $(GO) run ./bench/cmd/sweeperbench -sizes 100000,1000000 -binary bin/sweeper \
		-ingest 3s -cron-window 30s -adaptive-window 15s -plan-rows 200000 \
		-out bin/bench-quick/benchmarks.md -img bin/bench-quick $(BENCH_FLAGS)

.PHONY: lint
lint: | $(STATICCHECK) ## Check formatting (gofmt), go vet and staticcheck
	@files=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

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
