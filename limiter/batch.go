package limiter

import (
	"strconv"
	"strings"
)

// BatchScript decides many keys in one script call, so a node under load
// pays Redis' per-call overhead once per batch instead of once per check.
// It is built from the four scripts themselves: each becomes a function of
// its own KEYS and ARGV, so there is still one source of truth per
// algorithm. Every key is declared in KEYS; on a Redis Cluster all of them
// must share a slot, so callers batch only on a single Redis.
//
// KEYS are the data keys. ARGV[1] is now_us or "" (read TIME once for the
// whole batch); then five values per key: the algorithm's 1-based index in
// Algorithms, limit, window_us, burst, cost. The reply holds one
// {allowed, remaining, reset_after_us, retry_after_us} per key.
func BatchScript() string {
	var b strings.Builder
	b.WriteString("local algs = {}\n")
	for i, a := range Algorithms {
		b.WriteString("algs[" + strconv.Itoa(i+1) + "] = function(KEYS, ARGV)\n")
		b.WriteString(Script(a))
		b.WriteString("\nend\n")
	}
	b.WriteString(`local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 5 + 1
  out[i] = algs[tonumber(ARGV[a + 1])]({KEYS[i]}, {ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], now})
end
return out
`)
	return b.String()
}
