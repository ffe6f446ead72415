# Equipoise: `make run` serves the embedded default, `make test` runs every test.
CARGO ?= cargo

.PHONY: run test bench lint lint-tools fmt build deps k8s-check

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
## first with test-only fault injection.
test: deps
	$(CARGO) build -p equipoise --features fault-injection
	$(CARGO) test --workspace --lib --bins --tests

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
## against their floors, measured in the same run.
bench: deps
	$(CARGO) build --release -p equipoise
	$(CARGO) bench -p equipoise-randomisation --bench simulation
	$(CARGO) bench -p equipoise-tests --bench randomise_latency
	$(CARGO) bench -p equipoise-tests --bench allocation_load
