# Portcullis developer entry points. `make test` is what CI runs (after e2e/setup.sh).
CARGO  ?= cargo
PYTEST ?= e2e/.venv/bin/pytest
E2E_ARGS ?= -v

.PHONY: build test e2e e2e-setup demo bench fmt lint

## build: every binary of the workspace (the e2e suite runs target/debug/portcullis-proxy)
build:
	$(CARGO) build --workspace --bins

## test: Rust unit/integration tests, then the local end-to-end suite
test:
	$(CARGO) test --workspace
	$(MAKE) e2e

## e2e: local end-to-end tests against real third-party MCP peers (needs `make e2e-setup` once)
e2e: build
	$(PYTEST) e2e $(E2E_ARGS)

## e2e-setup: install nginx/prometheus/wrk, the npm peers and the Python venv (idempotent)
e2e-setup:
	e2e/setup.sh

## demo: a public portal over the bundled demo servers on http://127.0.0.1:8080/mcp
demo:
	$(CARGO) build -p portcullis-proxy --bins
	$(CARGO) run -p portcullis-proxy --bin portcullis-proxy -- --manifests examples/demo/portal.yaml --portal demo --listen 127.0.0.1:8080

## bench: benchmarks (each prints its figures)
bench:
	$(CARGO) bench -p portcullis-proxy --bench auth

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
