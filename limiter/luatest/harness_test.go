package luatest

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/redis/rueidis"
)

// twinHarness runs every decision through the Go twin and through the Lua
// script on a real redis-server, and fails the test on any difference: in
// the Result, or in whether and for how long the script set the key to
// expire.
//
// The scripts run wrapped (see persisting): the same atomic call records the
// TTL the script asked for, reads the key's PEXPIRETIME and then PERSISTs
// the key. The tests inject now, which the real
// clock Redis expires keys by knows nothing about; persisting keeps a short
// PEXPIRE from firing between two steps that are, in injected time, at the
// same µs. It also checks that expiry is only garbage collection: a stale key
// that Redis never expired must decide like the empty state the twin resets
// to at ExpiresAt.
type twinHarness struct {
	t       testing.TB
	client  rueidis.Client
	scripts map[limiter.Algorithm]*rueidis.Lua
	states  map[string]*limiter.State
	written map[string]bool
}

func newTwinHarness(t testing.TB) *twinHarness {
	t.Helper()
	h := &twinHarness{
		t:       t,
		client:  redistest.Start(t).Client(t),
		scripts: make(map[limiter.Algorithm]*rueidis.Lua),
		states:  make(map[string]*limiter.State),
		written: make(map[string]bool),
	}
	for _, alg := range limiter.Algorithms {
		h.scripts[alg] = rueidis.NewLuaScript(persisting(limiter.Script(alg)))
	}
	return h
}

// persisting wraps an algorithm's script. After the decision it returns,
// as extra values, the TTL in ms that the script asked for (-1 for none;
// a local redis table shadows the global to see PEXPIRE and SET ... PX),
// the key's PEXPIRETIME (-1 without expiry, -2 without key) and the Redis
// TIME in µs before and after the decision; then it persists the key.
func persisting(src string) string {
	return `local real = redis
local ttl = -1
local redis = setmetatable({call = function(...)
  local a = {...}
  local cmd = string.upper(a[1])
  if cmd == 'PEXPIRE' then ttl = tonumber(a[3]) end
  if cmd == 'SET' then
    for i = 4, #a - 1 do
      if string.upper(a[i]) == 'PX' then ttl = tonumber(a[i + 1]) end
    end
  end
  return real.call(...)
end}, {__index = real})
local function now() local t = real.call('TIME') return tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local function decide()
` + src + `
end
local t0 = now()
local r = decide()
r[6] = ttl
r[7] = real.call('PEXPIRETIME', KEYS[1])
r[8] = t0
r[9] = now()
if r[7] >= 0 then real.call('PERSIST', KEYS[1]) end
return r
`
}

// scriptArgs is ARGV for one call; now < 0 leaves now_us empty.
func scriptArgs(p limiter.Params, now int64) []string {
	argNow := ""
	if now >= 0 {
		argNow = strconv.FormatInt(now, 10)
	}
	return []string{
		strconv.FormatInt(p.Limit, 10), strconv.FormatInt(p.Window, 10),
		strconv.FormatInt(p.Burst, 10), strconv.FormatInt(p.Cost, 10), argNow,
	}
}

// parseReply turns a script's array reply into a Result and the extra values.
func parseReply(resp rueidis.RedisResult) (limiter.Result, []int64, error) {
	vals, err := resp.AsIntSlice()
	if err != nil {
		return limiter.Result{}, nil, err
	}
	if len(vals) < 5 || (vals[0] != 0 && vals[0] != 1) {
		return limiter.Result{}, nil, fmt.Errorf("malformed reply %v", vals)
	}
	return limiter.Result{Allowed: vals[0] == 1, Remaining: vals[1], ResetAfter: vals[2], RetryAfter: vals[3], NextAfter: vals[4]}, vals[5:], nil
}

// decide runs one decision on both forms and returns the twin's Result.
func (h *twinHarness) decide(alg limiter.Algorithm, key string, now int64, p limiter.Params) limiter.Result {
	h.t.Helper()
	s := h.states[key]
	if s == nil {
		s = &limiter.State{}
		h.states[key] = s
	}
	got := limiter.Decide(alg, s, now, p)
	wrote := got.Allowed && p.Cost > 0

	resp := h.scripts[alg].Exec(context.Background(), h.client, []string{key}, scriptArgs(p, now))
	lua, extra, err := parseReply(resp)
	if err != nil {
		h.t.Fatalf("%s script(%q, now=%d, %+v): %v", alg, key, now, p, err)
	}
	if lua != got {
		h.t.Fatalf("%s(%q, now=%d, %+v): Lua = %+v; Go = %+v", alg, key, now, p, lua, got)
	}
	ttl, expireAt, t0, t1 := extra[0], extra[1], extra[2]/1000, extra[3]/1000
	switch {
	case wrote:
		want := (s.ExpiresAt - now) / 1000
		if ttl != want {
			h.t.Fatalf("%s(%q, now=%d, %+v): the script set a TTL of %d ms; want %d (ExpiresAt %d)", alg, key, now, p, ttl, want, s.ExpiresAt)
		}
		// Redis expires at its own clock's ms at the write plus the TTL;
		// that ms lies between the readings around the script (the first
		// may trail a script-start snapshot by one ms).
		if expireAt < t0+ttl-1 || expireAt > t1+ttl {
			h.t.Fatalf("%s(%q, now=%d, %+v): PEXPIRETIME = %d; want between %d and %d", alg, key, now, p, expireAt, t0+ttl-1, t1+ttl)
		}
		h.written[key] = true
	case ttl != -1:
		h.t.Fatalf("%s(%q, now=%d, %+v) = %+v set a TTL of %d ms without a write", alg, key, now, p, got, ttl)
	case !h.written[key] && expireAt != -2:
		h.t.Fatalf("%s(%q, now=%d, %+v) = %+v created the key (PEXPIRETIME %d); want no key", alg, key, now, p, got, expireAt)
	case h.written[key] && expireAt != -1:
		h.t.Fatalf("%s(%q, now=%d, %+v) = %+v set an expiry (PEXPIRETIME %d) without a write", alg, key, now, p, got, expireAt)
	}
	return got
}
