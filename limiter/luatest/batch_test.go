package luatest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/redis/rueidis"
)

// TestBatchMatchesScripts runs one random trace twice, on two redis-servers:
// through BatchScript, in batches of 1 to 64 keys of all four algorithms (a
// key may come back within a batch), and through the single scripts, one
// call per decision in batch order with the batch's now. Every reply, every
// expiry the scripts set (key and TTL, in order) and the state of every key
// after each batch must be identical.
func TestBatchMatchesScripts(t *testing.T) {
	bt := newBatchTester(t)
	rng := rand.New(rand.NewPCG(42, 7))
	keys := batchKeys("trace")
	now := base + 12345
	for round := range 4 {
		for _, n := range rng.Perm(64) {
			n++
			batch := drawBatch(rng, keys, n)
			now += drawStep(rng, batch, now)
			bt.compare(fmt.Sprintf("round %d, batch of %d", round, n), batch, now)
		}
	}
	if bt.decisions[true] == 0 || bt.decisions[false] == 0 {
		t.Fatalf("the trace admitted %d and denied %d decisions; want both", bt.decisions[true], bt.decisions[false])
	}
}

// TestBatchReadsTimeOnce runs batches with ARGV[1] = "": the batch must read
// TIME exactly once and decide every key on it, as the single scripts do
// when that time is injected.
func TestBatchReadsTimeOnce(t *testing.T) {
	bt := newBatchTester(t)
	rng := rand.New(rand.NewPCG(43, 7))
	keys := batchKeys("time")
	for i := range 20 {
		bt.compare(fmt.Sprintf("batch %d", i), drawBatch(rng, keys, 1+rng.IntN(64)), -1)
	}
}

// batchKey is one key of a trace; a key keeps its algorithm and limit.
type batchKey struct {
	name string
	alg  limiter.Algorithm
	p    limiter.Params
}

// batchItem is one decision of a batch.
type batchItem struct {
	key  batchKey
	cost int64
}

// batchKeys returns two keys for each algorithm and each of its traceParams.
func batchKeys(prefix string) []batchKey {
	var keys []batchKey
	for _, alg := range limiter.Algorithms {
		for ci, p := range traceParams(alg) {
			for k := range 2 {
				keys = append(keys, batchKey{fmt.Sprintf("%s:%s:%d:%d", prefix, alg, ci, k), alg, p})
			}
		}
	}
	return keys
}

// drawBatch draws n decisions on random keys, repeats included, with costs
// from a peek to one above the capacity.
func drawBatch(rng *rand.Rand, keys []batchKey, n int) []batchItem {
	batch := make([]batchItem, n)
	for i := range batch {
		k := keys[rng.IntN(len(keys))]
		capa := k.p.Limit
		if k.alg == limiter.TokenBucket {
			capa = k.p.Burst
		}
		var cost int64
		switch x := rng.IntN(100); {
		case x < 20:
			cost = 0
		case x < 55:
			cost = 1
		case x < 65:
			cost = 1 + rng.Int64N(min(capa, 3))
		case x < 90:
			cost = rng.Int64N(capa + 1)
		case x < 96:
			cost = capa
		default:
			cost = capa + 1
		}
		batch[i] = batchItem{k, cost}
	}
	return batch
}

// drawStep returns how far to move the clock before the next batch: often
// not at all or by a little, sometimes to a window boundary of one of the
// batch's keys (or one µs either side), sometimes past every window.
func drawStep(rng *rand.Rand, batch []batchItem, now int64) int64 {
	switch x := rng.IntN(100); {
	case x < 25:
		return 0
	case x < 45:
		return 1 + rng.Int64N(1000)
	case x < 65:
		return rng.Int64N(1_000_001)
	case x < 80:
		return rng.Int64N(10_000_001)
	case x < 92:
		w := batch[rng.IntN(len(batch))].key.p.Window
		return (now/w+1)*w - now + rng.Int64N(3) - 1
	default:
		return rng.Int64N(2 * 86_400_000_001)
	}
}

// batchTester holds a redis-server for the batch script and one for the
// single scripts, both wrapped by recording.
type batchTester struct {
	t         *testing.T
	batchC    rueidis.Client
	singleC   rueidis.Client
	batch     *rueidis.Lua
	scripts   map[limiter.Algorithm]*rueidis.Lua
	decisions map[bool]int // by Allowed
}

func newBatchTester(t *testing.T) *batchTester {
	bt := &batchTester{
		t:         t,
		batchC:    redistest.Start(t).Client(t),
		singleC:   redistest.Start(t).Client(t),
		batch:     rueidis.NewLuaScript(recording(limiter.BatchScript())),
		scripts:   map[limiter.Algorithm]*rueidis.Lua{},
		decisions: map[bool]int{},
	}
	for _, alg := range limiter.Algorithms {
		bt.scripts[alg] = rueidis.NewLuaScript(recording(limiter.Script(alg)))
	}
	return bt
}

// recording wraps a script so that it replies {reply, expiries, times}:
// expiries lists, in order, each key the script gave a TTL (PEXPIRE or
// SET ... PX) and the TTL in ms; times lists every TIME the script read, in
// µs. Then it persists KEYS, so that Redis' clock, which knows nothing of
// the injected one, expires nothing between two batches.
func recording(src string) string {
	return `local real = redis
local expiries, times = {}, {}
local redis = setmetatable({call = function(...)
  local a = {...}
  local cmd = string.upper(a[1])
  local r = real.call(...)
  if cmd == 'PEXPIRE' then
    expiries[#expiries + 1] = a[2]
    expiries[#expiries + 1] = tonumber(a[3])
  elseif cmd == 'SET' then
    for i = 4, #a - 1 do
      if string.upper(a[i]) == 'PX' then
        expiries[#expiries + 1] = a[2]
        expiries[#expiries + 1] = tonumber(a[i + 1])
      end
    end
  elseif cmd == 'TIME' then
    times[#times + 1] = r[1] * 1000000 + r[2]
  end
  return r
end}, {__index = real})
local function script()
` + src + `
end
local reply = script()
for _, k in ipairs(KEYS) do real.call('PERSIST', k) end
return {reply, expiries, times}
`
}

// keyStateLua describes each key of KEYS: its type, PTTL and value.
const keyStateLua = `local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k).ok
  local v = ''
  if t == 'string' then
    v = redis.call('GET', k)
  elseif t == 'zset' then
    v = table.concat(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'), ' ')
  end
  out[i] = t .. ' ' .. redis.call('PTTL', k) .. ' ' .. v
end
return out
`

var keyState = rueidis.NewLuaScript(keyStateLua)

// recorded is one reply of a script wrapped by recording.
type recorded struct {
	results  []limiter.Result
	expiries []string // key, TTL in ms, key, TTL…
	times    []int64
}

func parseRecorded(resp rueidis.RedisResult, batch bool) (recorded, error) {
	var rec recorded
	parts, err := resp.ToArray()
	if err != nil {
		return rec, err
	}
	if len(parts) != 3 {
		return rec, fmt.Errorf("recorded reply of %d parts; want 3", len(parts))
	}
	replies := []rueidis.RedisMessage{parts[0]}
	if batch {
		if replies, err = parts[0].ToArray(); err != nil {
			return rec, err
		}
	}
	for _, m := range replies {
		v, err := m.AsIntSlice()
		if err != nil {
			return rec, err
		}
		if len(v) != 5 || (v[0] != 0 && v[0] != 1) {
			return rec, fmt.Errorf("malformed reply %v", v)
		}
		rec.results = append(rec.results, limiter.Result{Allowed: v[0] == 1, Remaining: v[1], ResetAfter: v[2], RetryAfter: v[3], NextAfter: v[4]})
	}
	exp, err := parts[1].ToArray()
	if err != nil {
		return rec, err
	}
	for _, m := range exp {
		s, err := m.ToString()
		if err != nil {
			if n, err2 := m.AsInt64(); err2 == nil {
				s, err = strconv.FormatInt(n, 10), nil
			}
		}
		if err != nil {
			return rec, err
		}
		rec.expiries = append(rec.expiries, s)
	}
	if rec.times, err = parts[2].AsIntSlice(); err != nil {
		return rec, err
	}
	return rec, nil
}

// compare decides batch through BatchScript at now (now < 0: ARGV[1] is ""
// and the batch reads TIME), then each item through its single script at
// the same now, and fails on any difference.
func (bt *batchTester) compare(where string, batch []batchItem, now int64) {
	t := bt.t
	t.Helper()
	ctx := context.Background()
	keys := make([]string, len(batch))
	args := []string{""}
	if now >= 0 {
		args[0] = strconv.FormatInt(now, 10)
	}
	for i, it := range batch {
		keys[i] = it.key.name
		p := it.key.p
		args = append(args, strconv.Itoa(slices.Index(limiter.Algorithms, it.key.alg)+1),
			strconv.FormatInt(p.Limit, 10), strconv.FormatInt(p.Window, 10), strconv.FormatInt(p.Burst, 10),
			strconv.FormatInt(it.cost, 10))
	}
	got, err := parseRecorded(bt.batch.Exec(ctx, bt.batchC, keys, args), true)
	if err != nil {
		t.Fatalf("%s: batch script: %v", where, err)
	}
	switch {
	case now < 0 && len(got.times) != 1:
		t.Fatalf("%s: the batch without now read TIME %d times; want once", where, len(got.times))
	case now < 0:
		now = got.times[0]
	case len(got.times) != 0:
		t.Fatalf("%s: the batch with now read TIME %d times; want never", where, len(got.times))
	}
	if len(got.results) != len(batch) {
		t.Fatalf("%s: the batch returned %d results for %d keys", where, len(got.results), len(batch))
	}

	var want recorded
	for i, it := range batch {
		p := it.key.p
		p.Cost = it.cost
		rec, err := parseRecorded(bt.scripts[it.key.alg].Exec(ctx, bt.singleC, keys[i:i+1], scriptArgs(p, now)), false)
		if err != nil {
			t.Fatalf("%s: %s script: %v", where, it.key.alg, err)
		}
		if got.results[i] != rec.results[0] {
			t.Fatalf("%s, item %d: %s(%q, now=%d, %+v): batch = %+v; single script = %+v",
				where, i, it.key.alg, it.key.name, now, p, got.results[i], rec.results[0])
		}
		bt.decisions[rec.results[0].Allowed]++
		want.expiries = append(want.expiries, rec.expiries...)
	}
	if !slices.Equal(got.expiries, want.expiries) {
		t.Fatalf("%s at now=%d: the batch set expiries (key, ms) %q; the single scripts %q", where, now, got.expiries, want.expiries)
	}

	distinct := slices.Compact(slices.Sorted(slices.Values(keys)))
	gotState, err := keyState.Exec(ctx, bt.batchC, distinct, nil).AsStrSlice()
	if err != nil {
		t.Fatalf("%s: key state after the batch: %v", where, err)
	}
	wantState, err := keyState.Exec(ctx, bt.singleC, distinct, nil).AsStrSlice()
	if err != nil {
		t.Fatalf("%s: key state after the single scripts: %v", where, err)
	}
	for i, k := range distinct {
		if gotState[i] != wantState[i] {
			t.Fatalf("%s at now=%d: key %q after the batch = %q; after the single scripts = %q", where, now, k, gotState[i], wantState[i])
		}
	}
}
