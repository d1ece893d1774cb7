#!/usr/bin/env bash
# Measures one node on a local Redis against a no-op fasthttp handler, with
# wrk: decisions/s, p50 and p99 at -c64 and -c16, the node and the no-op
# measured back to back in each round, and their ratio. On a shared 2-core
# machine one round varies by ±30 %, so it runs RUNS rounds (default 3) and
# ends with the medians of each figure and of the per-round ratios. "steal"
# is the share of CPU time the hypervisor gave to other guests in the round.
# Needs redis-server and wrk (apt-get install -y redis-server wrk).
# NODE_BIN measures a prebuilt binary instead (to compare two commits).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
if [ -n "${NODE_BIN:-}" ]; then cp "$NODE_BIN" "$tmp/ratelimiter"; else go build -o "$tmp/ratelimiter" .; fi
go build -o "$tmp/noop" ./internal/noop
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
"$tmp/ratelimiter" node --config "$tmp/bench.toml" --listen 127.0.0.1:18098 --node-id bench --redis-url redis://127.0.0.1:16399 --log-level error &
"$tmp/noop" --listen 127.0.0.1:18099 &
sleep 1
# one prints "rps p50_ms p99_ms non2xx" for one wrk run.
one() {
  wrk -t2 -c"$1" -d"${DURATION:-10s}" --latency -s scripts/check.lua "http://127.0.0.1:$2" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $NF }
    END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, bad }'
}
# ticks prints the CPU time stolen by the hypervisor and the total, from
# /proc/stat: on a shared VM, a round with much stolen time is not comparable.
ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t }' /proc/stat; }
printf '%-5s %-4s %9s %8s %8s %7s %9s %8s %8s %6s %6s\n' round c node/s p50ms p99ms non2xx noop/s p50ms p99ms ratio steal
for r in $(seq "${RUNS:-3}"); do
  for c in 64 16; do
    read -r s1 t1 < <(ticks)
    read -r nr n50 n99 nbad < <(one "$c" 18098)
    read -r or o50 o99 _ < <(one "$c" 18099)
    read -r s2 t2 < <(ticks)
    printf '%-5s %-4s %9s %8s %8s %7s %9s %8s %8s %5.0f%% %5.0f%%\n' "$r" "$c" "$nr" "$n50" "$n99" "$nbad" "$or" "$o50" "$o99" \
      "$(echo "100*$nr/$or" | bc -l)" "$(echo "100*($s2-$s1)/($t2-$t1)" | bc -l)"
  done
done | tee "$tmp/rounds"
# median prints the median of column $2 of the rounds at -c$1.
median() {
  awk -v c="$1" -v k="$2" '$2 == c { sub("%", "", $k); print $k }' "$tmp/rounds" | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for c in 64 16; do
  printf '%-5s %-4s %9s %8s %8s %7s %9s %8s %8s %5s%% %5s%%\n' median "$c" $(for k in 3 4 5 6 7 8 9 10 11; do median "$c" "$k"; done)
done
