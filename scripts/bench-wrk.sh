#!/usr/bin/env bash
# Measures one node on a local Redis against a no-op fasthttp handler, with
# wrk, in one run: decisions/s, p50 and p99 at -c64 and -c16.
# Needs redis-server and wrk (apt-get install -y redis-server wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/ratelimiter" . && go build -o "$tmp/noop" ./internal/noop
redis-server --port 16399 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$tmp/redis.log" &
cat >"$tmp/bench.toml" <<TOML
[node]
failure_mode = "closed"
[[limits]]
key_pattern = "*"
max_requests = 100000000
window_seconds = 60
algorithm = "${ALGORITHM:-sliding_window}"
TOML
sleep 0.5
"$tmp/ratelimiter" node --config "$tmp/bench.toml" --listen 127.0.0.1:18098 --node-id bench --redis-url redis://127.0.0.1:16399 --log-level warn &
"$tmp/noop" --listen 127.0.0.1:18099 &
sleep 1
for c in 64 16; do
  echo "== node, -c$c"; wrk -t2 -c$c -d${DURATION:-10s} --latency -s scripts/check.lua http://127.0.0.1:18098 | grep -E "Requests/sec|  50%|  99%|Non-2xx|errors"
  echo "== no-op, -c$c"; wrk -t2 -c$c -d${DURATION:-10s} --latency -s scripts/check.lua http://127.0.0.1:18099 | grep -E "Requests/sec|  50%|  99%|Non-2xx|errors"
done
