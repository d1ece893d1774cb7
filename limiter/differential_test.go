package limiter

import (
	"context"
	"fmt"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/redis/rueidis"
)

// TestLuaMatchesGo runs random traces through the Go twins and the Lua
// scripts on a real redis-server: every Result, and every expiry the scripts
// set, must be identical (twinHarness.decide fails on the first difference).
func TestLuaMatchesGo(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			h := newTwinHarness(t)
			for ci, p := range traceParams(alg) {
				tr := newTracer(uint64(ci)+1000, alg, p)
				for range 3000 {
					key, now, q := tr.next()
					tr.record(key, h.decide(alg, fmt.Sprintf("diff:%d:%s", ci, key), now, q))
				}
			}
		})
	}
}

// TestScriptsUseRedisTime calls each script without now_us and checks that
// the time it decided on lies between two TIME readings taken around it.
func TestScriptsUseRedisTime(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	redisTime := func() int64 {
		t.Helper()
		v, err := c.Do(ctx, c.B().Time().Build()).AsIntSlice()
		if err != nil || len(v) != 2 {
			t.Fatalf("TIME = %v, %v", v, err)
		}
		return v[0]*1_000_000 + v[1]
	}
	hget := func(key, field string) int64 {
		t.Helper()
		v, err := c.Do(ctx, c.B().Hget().Key(key).Field(field).Build()).AsInt64()
		if err != nil {
			t.Fatalf("HGET %s %s: %v", key, field, err)
		}
		return v
	}

	const W = 3_600_000_000 // long enough that no test run crosses two windows
	for i, alg := range Algorithms {
		p := Params{Limit: 5, Window: W, Cost: 2}
		if alg == TokenBucket {
			p.Burst = 5
		}
		key := "time:" + string(alg)
		args := scriptArgs(p, -1)
		if i%2 == 1 {
			args = args[:4] // an absent ARGV[5] is as good as an empty one
		}
		before := redisTime()
		r, _, err := parseReply(rueidis.NewLuaScript(Script(alg)).Exec(ctx, c, []string{key}, args))
		after := redisTime()
		if err != nil {
			t.Fatalf("%s script without now: %v", alg, err)
		}

		// Recover the time the script decided on from what it stored.
		var now int64
		switch alg {
		case SlidingLog:
			v, err := c.Do(ctx, c.B().Zrange().Key(key).Min("0").Max("0").Withscores().Build()).AsZScores()
			if err != nil || len(v) != 1 {
				t.Fatalf("ZRANGE %s = %v, %v", key, v, err)
			}
			now = int64(v[0].Score)
		case SlidingWindow:
			now = hget(key, "w")*W + 2*W - r.ResetAfter
		case TokenBucket:
			tat, err := c.Do(ctx, c.B().Get().Key(key).Build()).AsInt64()
			if err != nil {
				t.Fatalf("GET %s: %v", key, err)
			}
			now = tat - r.ResetAfter
		case FixedWindow:
			now = (hget(key, "w")+1)*W - r.ResetAfter
		}
		if now < before || now > after {
			t.Errorf("%s without now decided at %d; want Redis TIME, between %d and %d", alg, now, before, after)
		}
		if want := Decide(alg, &State{}, now, p); r != want {
			t.Errorf("%s without now = %+v; the Go twin at the same time gives %+v", alg, r, want)
		}
		pttl, err := c.Do(ctx, c.B().Pttl().Key(key).Build()).AsInt64()
		if err != nil {
			t.Fatalf("PTTL %s: %v", key, err)
		}
		if want := pexpireMS(r.ResetAfter); pttl <= 0 || pttl > want {
			t.Errorf("%s: PTTL = %d ms; want at most %d and positive", alg, pttl, want)
		}
	}
}

// TestSlidingLogSameMicrosecond checks that units admitted in one µs, by one
// request or several, are separate members.
func TestSlidingLogSameMicrosecond(t *testing.T) {
	h := newTwinHarness(t)
	p := Params{Limit: 2000, Window: 1_000_000}
	for _, cost := range []int64{1, 3, 1500, 1} {
		p.Cost = cost
		h.decide(SlidingLog, "same", base, p)
	}
	n, err := h.client.Do(context.Background(), h.client.B().Zcard().Key("same").Build()).AsInt64()
	if err != nil {
		t.Fatalf("ZCARD: %v", err)
	}
	if n != 1505 {
		t.Fatalf("ZCARD after 1505 units in one µs = %d; want 1505", n)
	}
	p.Cost = 0
	if r := h.decide(SlidingLog, "same", base, p); r.Remaining != 2000-1505 {
		t.Fatalf("remaining = %d; want %d", r.Remaining, 2000-1505)
	}
}
