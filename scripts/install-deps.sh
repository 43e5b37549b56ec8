#!/usr/bin/env bash
# Installs what the tests need and is missing, from Debian packages:
#   protobuf-compiler + libprotobuf-dev (etcd-client builds its gRPC code with protoc),
#   etcd-server etcd-client (etcd 3.4 + etcdctl), zookeeper (3.8, with Java), redis-server,
#   redis-sentinel (the Redis failover tests),
#   chromium + chromium-driver (the console's browser test drives headless Chromium over WebDriver).
# Nothing is started here: the tests start their own servers on loopback ports.
set -euo pipefail

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
# protoc needs the well-known types (google/protobuf/*.proto), which come with libprotobuf-dev
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null || need+=(zookeeper)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v cc >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi

echo "install-deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
