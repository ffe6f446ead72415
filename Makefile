# Equipoise: `make run` serves the embedded default, `make test` runs every test.
CARGO ?= cargo

.PHONY: run test bench lint lint-tools fmt build deps k8s-check web web-check web-test

## Install what a fresh Debian machine lacks: a C toolchain for SQLite, and
## redis-server and PostgreSQL, which the tests start privately.
deps:
	@scripts/ensure-deps.sh

build: deps
	$(CARGO) build --release -p equipoise

## Every service in one process: SQLite files and the in-process lock under ./data.
run: deps
	EQUIPOISE_LOG_FORMAT=$${EQUIPOISE_LOG_FORMAT:-text} $(CARGO) run --release -p equipoise -- serve --target all

## Unit, property, golden, statistical, conformance, end-to-end gRPC and
## cluster fault tests. The cluster tests run the binary as replicas, built
## first with test-only fault injection. Then the page's browser tests
## against that same binary.
test: deps
	$(CARGO) build -p equipoise --features fault-injection
	$(CARGO) test --workspace --lib --bins --tests
	$(MAKE) web-test EQUIPOISE_BIN="$(EQUIPOISE_BIN_DEFAULT)"

## The definition parser under 200 000 generated inputs per property
## (`make test` runs proptest's default 256).
.PHONY: fuzz
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-200000} $(CARGO) test -p equipoise-trial --release --lib fuzz

## Formatting, clippy, then the mechanical guards: the layering rule (gRPC
## types only in each service's gRPC layer), unused dependencies, cargo deny
## (licences, duplicate versions, sources, advisories when reachable), and
## buf lint plus buf breaking against the previous commit's proto/.
lint: lint-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/check-layering.sh
	$(CARGO) machete
	scripts/check-deny.sh
	scripts/check-proto.sh

lint-tools:
	@scripts/ensure-lint-tools.sh

## The Kubernetes manifests, offline: render every k8s/ overlay with kubectl
## kustomize, validate it with kubernetes-validate --strict against a pinned
## Kubernetes release, then check the NetworkPolicy edges (exactly the calls
## between services) and every workload's security settings (k8s/tests).
k8s-check:
	scripts/check-k8s.sh

fmt:
	$(CARGO) fmt --all

## Simulation throughput; Randomise latency and throughput in both modes
## against their floors, measured in the same run, with the servers' CPU
## per allocation; then single-client latency with the trial already full
## (BENCH_TRIAL_SIZE subjects, 100 000 by default).
## BENCH_PROFILE_OUTPUT=<file> also records a perf profile of the
## embedded single-client run.
bench: deps
	$(CARGO) build --release -p equipoise
	$(CARGO) bench -p equipoise-randomisation --bench simulation
	$(CARGO) bench -p equipoise-tests --bench randomise_latency
	$(CARGO) bench -p equipoise-tests --bench allocation_load
	$(CARGO) bench -p equipoise-tests --bench trial_size

## The page (web/): the gRPC-Web client generated from proto/ by buf, type
## checked by tsc and bundled by esbuild into web/dist/, which is committed
## and embedded in the binary at compile time, so building the binary needs
## no Node. Reproducible byte for byte from web/package-lock.json.
web:
	cd web && npm ci --no-audit --no-fund && npm run build

## Fails when web/dist/ (or the generated client) differs from what `make
## web` rebuilds: a page change committed without its build, or the reverse.
web-check: web
	git diff --exit-code -- web/dist web/src/gen
	@untracked=$$(git ls-files --others --exclude-standard -- web/dist web/src/gen); \
	if [ -n "$$untracked" ]; then echo "web-check: not committed: $$untracked" >&2; exit 1; fi
	@echo "web-check: web/dist is what the lockfile builds"

## The page in Debian's headless Chromium (installed when missing) against
## the real server: the desk on a phone screen, the sponsor's live feed, the
## console's charts, bad input and a server killed mid-request. Screenshots
## go to web/test-output/; UPDATE_SCREENSHOTS=1 also refreshes the README's
## in web/screenshots/.
EQUIPOISE_BIN_DEFAULT = $(abspath $(or $(CARGO_TARGET_DIR),target))/debug/equipoise
web-test:
	scripts/ensure-browser.sh
	@if [ -z "$(EQUIPOISE_BIN)" ]; then echo "$(CARGO) build -p equipoise"; $(CARGO) build -p equipoise; fi
	cd web && npm ci --no-audit --no-fund && \
	  EQUIPOISE_BIN="$(or $(EQUIPOISE_BIN),$(EQUIPOISE_BIN_DEFAULT))" node --test tests/
