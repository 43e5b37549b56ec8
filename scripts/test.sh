#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (real etcd / ZooKeeper / Redis servers
# started by the tests themselves on loopback), conformance suites and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs) first" >&2
  exit 2
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast
else
  echo "cargo-nextest not found: using cargo test"
  cargo test --workspace --all-features --no-fail-fast --lib --bins --tests
fi
cargo test --workspace --all-features --doc
