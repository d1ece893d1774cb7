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
# Fuzz every hostile-input target for a bounded time (the seeds already ran
# above as ordinary tests): about 20 s each.
go test -run '^$' -fuzz '^FuzzHTTP$' -fuzztime 20s ./node
go test -run '^$' -fuzz '^FuzzNodeConfig$' -fuzztime 20s ./node
go test -run '^$' -fuzz '^FuzzCheckDecoding$' -fuzztime 20s ./node
go test -run '^$' -fuzz '^FuzzClientAddr$' -fuzztime 20s ./node
go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 20s ./config
go test -run '^$' -fuzz '^FuzzSubject$' -fuzztime 20s ./operator
go test -run '^$' -fuzz '^FuzzScenarios$' -fuzztime 20s ./chaos
