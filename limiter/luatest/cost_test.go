package luatest

import (
	"context"
	"testing"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
)

// TestSlidingLogCostIsNotAnAmplifier admits one request of cost 1,000,000
// on a limit of 1,000,000 per hour: the key holds one member and stays
// under 1 KB (one member per unit took 121 MB and held Redis for 1.6 s),
// and its units all count.
func TestSlidingLogCostIsNotAnAmplifier(t *testing.T) {
	c, lua := slidingLog(t)
	ctx := context.Background()
	p := limiter.Params{Limit: 1_000_000, Window: 3_600_000_000, Cost: 1_000_000}
	r, _, err := parseReply(lua.Exec(ctx, c, []string{"big"}, scriptArgs(p, -1)))
	if err != nil || !r.Allowed || r.Remaining != 0 {
		t.Fatalf("cost 1,000,000 on an empty key = %+v, %v; want admitted with 0 remaining", r, err)
	}
	n, err := c.Do(ctx, c.B().Zcard().Key("big").Build()).AsInt64()
	if err != nil || n != 1 {
		t.Fatalf("ZCARD = %d, %v; want 1", n, err)
	}
	mem, err := c.Do(ctx, c.B().MemoryUsage().Key("big").Samples(0).Build()).AsInt64()
	if err != nil || mem >= 1024 {
		t.Fatalf("MEMORY USAGE = %d, %v; want under 1 KB", mem, err)
	}
	p.Cost = 1
	if r, _, err = parseReply(lua.Exec(ctx, c, []string{"big"}, scriptArgs(p, -1))); err != nil || r.Allowed || r.RetryAfter <= 0 {
		t.Fatalf("cost 1 after the big one = %+v, %v; want denied with a wait", r, err)
	}
	t.Logf("MEMORY USAGE after one check of cost 1,000,000: %d bytes", mem)
}

// slidingLog starts a redis-server and returns a client of it and the
// sliding_log script as the node runs it.
func slidingLog(tb testing.TB) (rueidis.Client, *rueidis.Lua) {
	return redistest.Start(tb).Client(tb), rueidis.NewLuaScript(limiter.Script(limiter.SlidingLog))
}
