# churnstream — the two commands: `make run` and `make test`. `make help` lists the rest.
SHELL := /bin/bash
CARGO ?= cargo
RUN_DIR ?= .run

.PHONY: help setup run test lint unit bench fuzz fuzz-cargo broker-install broker-start broker-stop build clean-run

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## install what is missing (Debian packages via apt-get as root, rustfmt, clippy); run first by run, test, bench, build
	@scripts/setup.sh

run: setup ## local broker + generated events + trained model + the pipeline; prints alerts and the metrics URL (Ctrl-C stops all)
	@scripts/run.sh

test: lint unit ## everything CI runs: fmt check, clippy -D warnings, unit + integration tests on a real local broker

lint: setup ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: setup ## all tests; starts (and stops) a local tansu broker for the integration tests
	@scripts/test.sh

bench: setup ## benchmarks (release); prints one JSON line each and writes target/bench/<name>.json
	@scripts/bench.sh

fuzz: ## randomized decoder mutation test for 60 s (cargo-fuzz stand-in; no broker needed)
	CHURN_FUZZ_SECONDS=$${CHURN_FUZZ_SECONDS:-60} $(CARGO) test -p churnstream --test hostile randomized -- --nocapture

fuzz-cargo: ## cargo fuzz (libFuzzer, coverage-guided) on the decoder/validator for FUZZ_SECONDS (60); installs cargo-fuzz once
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode corpus/decode -- -max_total_time=$${FUZZ_SECONDS:-60}

broker-install: setup ## build tansu 0.6.0 into the cache prefix (once)
	@scripts/broker.sh install

broker-start: ## start a local broker in $(RUN_DIR)/broker
	@scripts/broker.sh start $(RUN_DIR)/broker

broker-stop: ## stop it
	@scripts/broker.sh stop $(RUN_DIR)/broker

build: setup ## debug build of the CLI
	$(CARGO) build -p churnstream

clean-run: ## forget generated data, model and broker state of `make run`
	rm -rf $(RUN_DIR)
