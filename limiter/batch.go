package limiter

import (
	"strconv"
	"strings"
)

// BatchScript decides many keys in one script call, so a node under load
// pays Redis' per-call overhead once per batch instead of once per check.
// It is built from the algorithms' scripts themselves, so there is still one source
// of truth per algorithm: each script defines its helpers and a function
// decide(key, limit, window, burst, cost, now), then an entry point for a
// single call after a marker line; the batch keeps what precedes the marker,
// so helpers are made once per batch, not once per key. Every key is
// declared in KEYS; on a Redis Cluster all of them must share a slot, so
// callers batch only on a single Redis.
//
// KEYS are the data keys. ARGV[1] is now_us or "" (read TIME once for the
// whole batch); then five values per key: the algorithm's 1-based index in
// AlgorithmTable, limit, window_us, burst, cost. The reply holds one
// {allowed, remaining, reset_after_us, retry_after_us, next_after_us} per key.
//
// What batching saves in Redis CPU per decision, and how that was measured,
// is in docs/redis.md ("Throughput"); the before/after table of the script
// rewrite is in commits 0cdf649 and 8ef7a1d.
func BatchScript() string {
	var b strings.Builder
	b.WriteString("local algs = {}\n")
	for i, row := range AlgorithmTable {
		src := row.Lua
		cut := strings.Index(src, batchCut)
		if cut < 0 {
			panic("BUG: limiter.BatchScript: " + string(row.Name) + ".lua has no line " + strconv.Quote(batchCut))
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
