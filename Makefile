# Two commands do all set-up on a fresh Debian/Ubuntu machine with Rust installed:
#   make demo   the quickstart on the embedded in-memory registry (no server needed)
#   make console-demo  the web console on the same kind of registry, with nodes coming and going
#   make test   every test; installs the server packages it needs through apt first
#   make bench  every benchmark quoted in BENCHMARKS.md: cache_hit, etcd, rpc_vs_tonic, backends,
#               tonic_registry, scale, console
#   make chaos  the fault scenarios of RELIABILITY.md on real clusters
.PHONY: demo console-demo test lint bench chaos deps

demo:
	cargo run --quiet -p quickstart

console-demo:
	cargo run --quiet -p quickstart --bin console_demo

test:
	scripts/test.sh

lint:
	scripts/lint.sh

bench:
	cargo bench -p registry-core --bench cache_hit
	cargo bench -p registry-etcd --bench etcd
	cargo bench -p rpc-bench --bench rpc_vs_tonic
	cargo bench -p rpc-bench --bench rpc_tls
	cargo bench -p rpc-bench --bench backends
	cargo bench -p rpc-bench --bench tonic_registry
	cargo bench -p rpc-bench --bench scale
	cargo bench -p registry-console --bench console

chaos:
	scripts/install-deps.sh
	cargo bench -p rpc-bench --bench chaos

deps:
	scripts/install-deps.sh
