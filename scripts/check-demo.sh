#!/usr/bin/env bash
# `make demo` must build with nothing but rustup: no protoc, no apt package, no server.
# 1. The demo's dependency graph holds no crate that needs protoc (etcd-client and the
#    protobuf/gRPC code generators).
# 2. The demo really builds with PROTOC pointing at a missing file, in its own target dir (so
#    nothing built earlier with protoc is reused).
set -euo pipefail
cd "$(dirname "$0")/.."

demo_pkg=$(sed -n 's/^demo:.*//;/cargo run/s/.* -p \([^ ]*\).*/\1/p' Makefile | head -n 1)
[ -n "$demo_pkg" ] || { echo "check-demo: cannot find the demo package in the Makefile" >&2; exit 1; }

offenders=$(cargo tree -q -p "$demo_pkg" -e normal,build --prefix none \
  | grep -E '^(etcd-client|prost-build|tonic-build|tonic-prost-build|protoc-bin-vendored|protobuf-src) ' \
  | sort -u || true)
if [ -n "$offenders" ]; then
  echo "check-demo: the demo ($demo_pkg) needs protoc through:" >&2
  echo "$offenders" >&2
  echo "check-demo: inverse tree:" >&2
  cargo tree -q -p "$demo_pkg" -e normal,build -i "$(echo "$offenders" | head -n 1 | cut -d' ' -f1)" >&2 || true
  exit 1
fi

PROTOC=/nonexistent/protoc CARGO_TARGET_DIR=target/demo-check cargo build --quiet -p "$demo_pkg"
echo "check-demo: $demo_pkg builds without protoc"
