package limiter

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/redis/rueidis"
)

// twinHarness runs every decision through the Go twin and through the Lua
// script on a real redis-server, and fails the test on any difference: in
// the Result, or in whether and for how long the script set the key to
// expire.
//
// The scripts run wrapped: after the algorithm, the same atomic call reads
// the key's PTTL and then PERSISTs it. The tests inject now, which the real
// clock Redis expires keys by knows nothing about; persisting keeps a short
// PEXPIRE from firing between two steps that are, in injected time, at the
// same µs. It also checks that expiry is only garbage collection: a stale key
// that Redis never expired must decide like the empty state the twin resets
// to at ExpiresAt.
type twinHarness struct {
	t       testing.TB
	client  rueidis.Client
	scripts map[Algorithm]*rueidis.Lua
	states  map[string]*State
	written map[string]bool
}

func newTwinHarness(t testing.TB) *twinHarness {
	t.Helper()
	h := &twinHarness{
		t:       t,
		client:  redistest.Start(t).Client(t),
		scripts: make(map[Algorithm]*rueidis.Lua),
		states:  make(map[string]*State),
		written: make(map[string]bool),
	}
	for _, alg := range Algorithms {
		h.scripts[alg] = rueidis.NewLuaScript(persisting(Script(alg)))
	}
	return h
}

// persisting wraps an algorithm's script so that it returns the key's PTTL
// right after the decision as a fifth value, then persists the key.
func persisting(src string) string {
	return "local function decide()\n" + src + "\nend\n" +
		"local r = decide()\n" +
		"r[5] = redis.call('PTTL', KEYS[1])\n" +
		"if r[5] >= 0 then redis.call('PERSIST', KEYS[1]) end\n" +
		"return r\n"
}

// scriptArgs is ARGV for one call; now < 0 leaves now_us empty.
func scriptArgs(p Params, now int64) []string {
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
func parseReply(resp rueidis.RedisResult) (Result, []int64, error) {
	vals, err := resp.AsIntSlice()
	if err != nil {
		return Result{}, nil, err
	}
	if len(vals) < 4 || (vals[0] != 0 && vals[0] != 1) {
		return Result{}, nil, fmt.Errorf("malformed reply %v", vals)
	}
	return Result{Allowed: vals[0] == 1, Remaining: vals[1], ResetAfter: vals[2], RetryAfter: vals[3]}, vals[4:], nil
}

// decide runs one decision on both forms and returns the twin's Result.
func (h *twinHarness) decide(alg Algorithm, key string, now int64, p Params) Result {
	h.t.Helper()
	s := h.states[key]
	if s == nil {
		s = &State{}
		h.states[key] = s
	}
	got := Decide(alg, s, now, p)
	wrote := got.Allowed && p.Cost > 0

	resp := h.scripts[alg].Exec(context.Background(), h.client, []string{key}, scriptArgs(p, now))
	lua, extra, err := parseReply(resp)
	if err != nil {
		h.t.Fatalf("%s script(%q, now=%d, %+v): %v", alg, key, now, p, err)
	}
	if lua != got {
		h.t.Fatalf("%s(%q, now=%d, %+v): Lua = %+v; Go = %+v", alg, key, now, p, lua, got)
	}
	pttl := extra[0]
	switch {
	case wrote:
		want := (s.ExpiresAt - now) / 1000
		// Redis counts the PTTL down on its own clock, at most a ms or two
		// within one script.
		if pttl < want-2 || pttl > want {
			h.t.Fatalf("%s(%q, now=%d, %+v): PTTL after the write = %d ms; want %d (ExpiresAt %d)", alg, key, now, p, pttl, want, s.ExpiresAt)
		}
		h.written[key] = true
	case !h.written[key] && pttl != -2:
		h.t.Fatalf("%s(%q, now=%d, %+v) = %+v created the key (PTTL %d); want no key", alg, key, now, p, got, pttl)
	case h.written[key] && pttl != -1:
		h.t.Fatalf("%s(%q, now=%d, %+v) = %+v set an expiry (PTTL %d) without a write", alg, key, now, p, got, pttl)
	}
	return got
}
