# Equipoise: `make run` serves the embedded default, `make test` runs every test.
CARGO ?= cargo

.PHONY: run test bench lint fmt build deps

## Install what a fresh Debian machine lacks (C toolchain for SQLite).
deps:
	@scripts/ensure-deps.sh

build: deps
	$(CARGO) build --release -p equipoise

## Every service in one process: SQLite files and the in-process lock under ./data.
run: deps
	EQUIPOISE_LOG_FORMAT=$${EQUIPOISE_LOG_FORMAT:-text} $(CARGO) run --release -p equipoise -- serve --target all

## Unit, property, golden, statistical, conformance and end-to-end gRPC tests.
test: deps
	$(CARGO) test --workspace --lib --bins --tests

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Simulation throughput and Randomise latency against its floors, in one run each.
bench: deps
	$(CARGO) bench -p equipoise-randomisation --bench simulation
	$(CARGO) bench -p equipoise-tests --bench randomise_latency
