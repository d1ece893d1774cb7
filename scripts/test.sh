#!/usr/bin/env bash
# Runs every test. The tests start real redis-server processes, so this
# installs Debian's redis-server first when it is missing. Nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing ${need[*]} from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
go vet ./...
CGO_ENABLED=0 go build -o /dev/null .
# One package at a time: several tests assert timing (p99, propagation),
# and two packages racing for 2 cores would measure each other.
go test -p 1 -count=1 -timeout 20m "$@" ./...
