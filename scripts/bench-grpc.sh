#!/usr/bin/env bash
# Measures Envoy's ShouldRateLimit on one node (gRPC, 10,000 descriptors,
# fixed_window on a local Redis) against a no-op gRPC Rate Limit Service,
# and the node's HTTP check path (wrk, POST /api/v1/check over 10,000 keys,
# fixed_window) in the same round: decisions/s, p50 and p99 at 64 and 16
# concurrent streams, and the node's CPU µs per decision on each path, read
# from /proc. Rounds alternate and the script ends with the medians; on a
# shared 2-core machine one round varies by ±30 %.
# The gRPC load comes from rlsload writing HTTP/2 frames by hand, about as
# light as wrk is for HTTP; CLIENT=grpc uses grpc-go's client instead, which
# takes about a core of the two for itself.
# Needs redis-server and wrk. RUNS (default 3), DURATION (default 10s) and
# CLIENT (raw or grpc, default raw).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/ratelimiter" .
go build -o "$tmp/rlsload" ./internal/rlsload
redis-server --port 16398 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$tmp/redis.log" &
mkdir "$tmp/envoy"
{
  echo "domain: bench"
  echo "descriptors:"
  for i in $(seq 0 9999); do
    printf '  - key: user\n    value: u%d\n    rate_limit: {unit: minute, requests_per_unit: 100000000}\n' "$i"
  done
} >"$tmp/envoy/bench.yaml"
cat >"$tmp/bench.toml" <<TOML
[node]
failure_mode = "closed"
[[limits]]
key_pattern = "*"
max_requests = 100000000
window_seconds = 60
algorithm = "fixed_window"
TOML
sleep 0.5
"$tmp/ratelimiter" node --config "$tmp/bench.toml" --listen 127.0.0.1:18096 --grpc-listen 127.0.0.1:18097 \
  --envoy-config "$tmp/envoy" --node-id bench --redis-url redis://127.0.0.1:16398 --log-level error &
node=$!
"$tmp/rlsload" --serve 127.0.0.1:18095 &
noop=$!
sleep 1.5
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# http prints "rps p50_ms p99_ms non2xx cpu_us" for one wrk run on the node.
http() {
  local t0 t1
  t0=$(ticks "$node")
  wrk -t2 -c"$1" -d"${DURATION:-10s}" --latency -s scripts/check.lua http://127.0.0.1:18096 >"$tmp/wrk"
  t1=$(ticks "$node")
  awk -v cpu="$((t1 - t0))" -v d="${DURATION:-10s}" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $NF }
    END { printf "%.0f %.2f %.2f %d %.1f\n", rps, p50, p99, bad, cpu * 10000 / n }' "$tmp/wrk"
}
printf '%-5s %-3s %8s %6s %6s %4s %6s | %8s %6s %6s %6s | %8s %6s %6s %6s %5s\n' \
  round c grpc/s p50ms p99ms err cpuus noop/s p50ms p99ms cpuus http/s p50ms p99ms cpuus ratio
for r in $(seq "${RUNS:-3}"); do
  for c in 64 16; do
    read -r gr g50 g99 gerr gcpu < <("$tmp/rlsload" --client "${CLIENT:-raw}" --target 127.0.0.1:18097 -c "$c" -d "${DURATION:-10s}" --pid "$node")
    read -r nr n50 n99 _ ncpu < <("$tmp/rlsload" --client "${CLIENT:-raw}" --target 127.0.0.1:18095 -c "$c" -d "${DURATION:-10s}" --pid "$noop")
    read -r hr h50 h99 _ hcpu < <(http "$c")
    printf '%-5s %-3s %8s %6s %6s %4s %6s | %8s %6s %6s %6s | %8s %6s %6s %6s %5.2f\n' "$r" "$c" \
      "$gr" "$g50" "$g99" "$gerr" "$gcpu" "$nr" "$n50" "$n99" "$ncpu" "$hr" "$h50" "$h99" "$hcpu" \
      "$(echo "$gcpu/$hcpu" | bc -l)"
  done
done | tee "$tmp/rounds"
# median prints the median of column $2 of the rounds at -c$1.
median() {
  awk -v c="$1" -v k="$2" '$2 == c { gsub(/\|/, ""); print $k }' "$tmp/rounds" | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for c in 64 16; do
  printf '%-5s %-3s' median "$c"
  for k in 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do printf ' %s' "$(median "$c" "$k")"; done
  echo
done
