# fw: two entry points for people (see README.md), the rest for developers.
#   make demo   run the demo (STEP=1: one step per Enter)
#   make test   install what is missing, build, run every test
SHELL := /bin/bash
CARGO ?= cargo
FUZZ_SECONDS ?= 600
SMOKE_FUZZ_SECONDS ?= 15
BIN := target/debug

.PHONY: demo test deps build lint unit e2e fuzz-smoke fuzz bench image clean

deps:
	@bash vagrant/provision.sh

build: deps
	$(CARGO) build --workspace --all-targets

lint: build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 tests/import-cycles.py fw-daemon/src fw-tui/src fw-proto/src bench/src tests/attack/src

# Tests that need root are #[ignore = "needs root"]: a plain `cargo test` reports them as
# ignored, never as passed; here (as root, CI=true) they run too.
unit: build
	$(CARGO) test --workspace --no-fail-fast -- --include-ignored

e2e: build
	bash tests/e2e-offline.sh $(BIN)
	bash tests/e2e-console.sh $(BIN)
	bash tests/e2e-tui.sh $(BIN)
	bash tests/image.sh $(BIN)
	@# The demo, unattended (no pauses when piped): every step must still run.
	bash tests/demo.sh $(BIN) > target/demo.log 2>&1 || { tail -40 target/demo.log; exit 1; }

fuzz-smoke: deps
	bash fuzz/smoke.sh $(SMOKE_FUZZ_SECONDS)

test: lint unit e2e fuzz-smoke
	@echo "make test: all suites passed"

# The demo needs less than the tests: only what building and the lab use is installed.
demo:
	@bash vagrant/provision.sh --demo
	$(CARGO) build -p fw-daemon -p fw-tui
	bash tests/demo.sh $(BIN) $(if $(STEP),--step)

fuzz: deps
	bash fuzz/smoke.sh $(FUZZ_SECONDS)

bench: deps
	bash bench/run.sh

# The container image, built offline (no registry): the release binaries and their libraries.
image: deps
	$(CARGO) build --release -p fw-daemon -p fw-tui
	bash deploy/image.sh target/release

clean:
	$(CARGO) clean
