package limiter

import (
	"strconv"
	"strings"
)

// BatchScript decides many keys in one script call, so a node under load
// pays Redis' per-call overhead once per batch instead of once per check.
// It is built from the four scripts themselves, so there is still one source
// of truth per algorithm: each script defines its helpers and a function
// decide(key, limit, window, burst, cost, now), then an entry point for a
// single call after a marker line; the batch keeps what precedes the marker,
// so helpers are made once per batch, not once per key. Every key is
// declared in KEYS; on a Redis Cluster all of them must share a slot, so
// callers batch only on a single Redis.
//
// KEYS are the data keys. ARGV[1] is now_us or "" (read TIME once for the
// whole batch); then five values per key: the algorithm's 1-based index in
// Algorithms, limit, window_us, burst, cost. The reply holds one
// {allowed, remaining, reset_after_us, retry_after_us, next_after_us} per key.
//
// Reference: redis-server CPU per decision behind one node under wrk
// (sliding_window, 10,000 keys, 2-vCPU AMD EPYC VM, Redis 7.0.15,
// 2026-11-27, two runs each, one session): 16.3–17.1 µs with the first
// scripts (a hash read and write per value, a closure and a table per key,
// string.format per number), 12.9–13.6 µs with these.
//
// Redis cost per decision of this script alone, µs, before and after the
// same change (a read and a SET ... PX per counter decision instead of
// HMGET, HSET and PEXPIRE; no ZCARD and no ZRANGE on sliding_log's admit
// path; helpers made once per batch; numbers formatted once per batch and
// policy), on the same VM, shared with other builds, Redis 7.0.15,
// 2026-11-27, in one session: 9 rounds alternating the two scripts,
// redis-server and redis-benchmark pinned to a core each, FLUSHALL before
// each run, medians. "in script" is cmdstat_evalsha usec_per_call / 16;
// "CPU" is redis-server's used_cpu_user+sys per decision, network I/O
// included. A `return 1` EVALSHA took 1.9 µs in script per call. Measured
// apart, a counter's GET and SET ... PX with constant arguments and a
// constant reply take about 7 µs per decision: what is left is mostly
// Redis' own.
//
//	redis-benchmark -p PORT -q -n 20000 -c 4 -P 4 -r 10000 evalsha SHA 16 \
//	  <16 keys rl:XX:__rand_int__N> '' <16 × "ALGIDX 100000000 60000000 BURST 1">
//
//	                 in script            CPU
//	algorithm        before  after        before  after
//	sliding_log        26.5   13.7 -48 %    27.8   14.0 -50 %
//	sliding_window     15.1    8.8 -41 %    16.2    9.9 -39 %
//	token_bucket        9.8    7.5 -23 %    11.2    8.9 -21 %
//	fixed_window       13.3    8.8 -34 %    14.1   10.0 -29 %
func BatchScript() string {
	var b strings.Builder
	b.WriteString("local algs = {}\n")
	for i, a := range Algorithms {
		src := Script(a)
		cut := strings.Index(src, batchCut)
		if cut < 0 {
			panic("BUG: limiter.BatchScript: " + string(a) + ".lua has no line " + strconv.Quote(batchCut))
		}
		b.WriteString("do\n")
		b.WriteString(src[:cut])
		b.WriteString("\nalgs['" + strconv.Itoa(i+1) + "'] = decide\nend\n")
	}
	// tonumber costs as much as a cheap redis.call: the parameters of the
	// previous key are reused when their strings are the same, which Lua
	// compares by pointer.
	b.WriteString(`local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local out = {}
local ls, lw, lb, lc
local limit, window, burst, cost
for i = 1, #KEYS do
  local a = i * 5 - 3
  local s = ARGV[a + 1]
  if s ~= ls then ls, limit = s, tonumber(s) end
  s = ARGV[a + 2]
  if s ~= lw then lw, window = s, tonumber(s) end
  s = ARGV[a + 3]
  if s ~= lb then lb, burst = s, tonumber(s) end
  s = ARGV[a + 4]
  if s ~= lc then lc, cost = s, tonumber(s) end
  out[i] = algs[ARGV[a]](KEYS[i], limit, window, burst, cost, now)
end
return out
`)
	return b.String()
}

// batchCut starts the line of every script after which only its entry point
// for a single call follows.
const batchCut = "\n-- BatchScript cuts here:"
