#!/usr/bin/env bash
# Runs every test. The tests start real redis-server and prometheus
# processes, nginx and caddy, and a headless chromium, and the compose file is checked with
# docker-compose, so this installs the Debian packages that are missing
# first (about a minute for all of them on a fresh machine). Nothing is
# skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v prometheus >/dev/null || need+=(prometheus)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v caddy >/dev/null || need+=(caddy)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing ${need[*]} from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
go vet ./...
CGO_ENABLED=0 go build -o /dev/null .
# No container engine runs here: the compose stack is validated, not started.
promtool check config --syntax-only deploy/prometheus.yml >/dev/null
ADMIN_TOKEN=ci docker-compose -f compose.yaml config -q
# One package at a time: several tests assert timing (p99, propagation),
# and two packages racing for 2 cores would measure each other.
go test -p 1 -count=1 -timeout 20m "$@" ./...
# Fuzz every hostile-input target (the seeds already ran above as ordinary
# tests) for a bounded number of inputs, about 20 s each on a quiet 2-core
# machine. A count, not a duration: go1.26's coordinator can report
# "context deadline exceeded" when -fuzztime runs out while a loaded worker
# is busy (golang/go#75804), which CI saw once with no failing input. The
# -timeout still fails a run that hangs.
fuzz() { go test -run '^$' -fuzz "^$2\$" -fuzztime "$3" -fuzzminimizetime 10s -timeout 5m "./$1"; }
fuzz node FuzzHTTP 10000x
fuzz node FuzzNodeConfig 30000x
fuzz node FuzzCheckDecoding 50000x
fuzz node FuzzClientAddr 20000x
fuzz node/descriptors FuzzParse 100000x
fuzz config FuzzDecode 40000x
fuzz operator FuzzSubject 20000x
fuzz chaos FuzzScenarios 20000x
fuzz limiter FuzzMatch 100000x
