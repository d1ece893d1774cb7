package limiter

import (
	_ "embed"
	"math/bits"
)

// The four algorithms share one contract, in Lua and in Go.
//
// Lua: KEYS[1] is the only key a script touches (Cluster-safe). ARGV is
// limit, window_us, burst, cost, now_us. An empty or absent now_us makes the
// script read the store's clock (TIME): in production every node decides on
// Redis time, so node clocks never matter; tests inject now_us. The reply is
// {allowed 1|0, remaining, reset_after_us, retry_after_us, next_after_us}. The scripts need
// Redis 5 or newer, where scripts replicate their effects, so a script may
// write after reading TIME.
//
// Both forms:
//   - Cost 0 peeks: allowed reports whether a cost-1 request would pass
//     (remaining > 0), retry_after is that request's wait, nothing is written
//     and no key is created.
//   - A denied request consumes and writes nothing.
//   - reset_after is the time until the key is back to its full quota with no
//     further traffic: 0 for an empty key, in all four algorithms.
//   - retry_after is the smallest wait after which the same request would be
//     admitted if nothing else arrived; 0 when allowed.
//   - A cost above the capacity (Limit.Capacity: the burst for a token
//     bucket, the limit otherwise) can never be admitted: it is denied with
//     retry_after = reset_after. Callers should reject such costs up front.
//   - remaining never goes below 0, even for a key filled under a larger
//     limit that has since been lowered.
//   - Every write sets the key's TTL (PEXPIRE, or SET ... PX) to
//     ceil(reset_after/1 ms) + 1 ms: the key lives exactly as long as it
//     matters. The extra millisecond covers Redis keeping expiry times in
//     whole milliseconds of its own clock. Expiry is only garbage
//     collection: a stale key that has not expired yet decides exactly like
//     an absent one, which limiter/luatest checks by persisting keys.
//
// Layout: each script defines its helpers and
// decide(key, limit, window, burst, cost, now) over Lua numbers, then, after
// a line starting "-- BatchScript cuts here:", the entry point of a single
// call, which parses ARGV and reads TIME. BatchScript keeps what precedes the
// line. A redis.call costs about as much as all the Lua arithmetic of a
// decision, so each script makes as few as it can: one read and one write
// per decision for the counters, whose state is one string value written
// with SET ... PX; a sorted set cannot carry its expiry, so sliding_log also
// needs PEXPIRE.
//
// Values: sliding_log is a sorted set (see sliding_log.lua); the others are
// little-endian doubles, cheaper to read and write in Lua than decimal
// text: struct.pack('<ddd', w, c, p) for sliding_window, ('<dd', w, c) for
// fixed_window, ('<d', tat) for token_bucket.
//
// Exactness: Lua numbers are doubles, so every value the scripts compute is
// an integer below 2^53, and every division is a floor or ceil of integers
// below 2^53, which a double computes exactly. Limit.Validate keeps the inputs
// small enough: limit <= 1e8 (< 2^27), window <= 8.64e10 µs (< 2^37), the
// token bucket's burst*T <= 2^50, and now_us < 2^52 (until the year 2112).
// Products that could exceed 2^53 (count * window in sliding_window) are
// never formed: mulDiv splits them. Numbers go to Redis as strings from
// string.format('%d'): exact, and cheaper than handing redis.call a Lua
// number, which Redis formats with %.17g (about 0.5 µs a number on the
// 2-vCPU test VM); never through Lua's tostring or concatenation, which
// keep 14 digits. The Go twins use int64 and give the same numbers, which
// limiter/luatest checks against a real redis-server.

var (
	//go:embed sliding_log.lua
	slidingLogLua string
	//go:embed sliding_window.lua
	slidingWindowLua string
	//go:embed token_bucket.lua
	tokenBucketLua string
	//go:embed fixed_window.lua
	fixedWindowLua string
)

// AlgorithmRow is one algorithm in AlgorithmTable: everything the stores need to
// know per algorithm.
type AlgorithmRow struct {
	Name Algorithm
	// Short names the algorithm in Redis data keys (PREFIX:Short:KEY), so a
	// limit that changes its algorithm never meets the other one's data type.
	Short string
	// Lua is its script, run with EVALSHA under the contract above.
	Lua string
	// decide is its Go twin.
	decide func(s *State, now int64, p Params) Result
}

// AlgorithmTable is the one list of algorithms that everything else ranges over:
// scripts loaded, data keys, the batch script's numbering (index+1), the
// in-process store's maps, validation. Its order is the documentation's.
var AlgorithmTable = [...]AlgorithmRow{
	{Name: SlidingLog, Short: "sl", Lua: slidingLogLua, decide: decideSlidingLog},
	{Name: SlidingWindow, Short: "sw", Lua: slidingWindowLua, decide: decideSlidingWindow},
	{Name: TokenBucket, Short: "tb", Lua: tokenBucketLua, decide: decideTokenBucket},
	{Name: FixedWindow, Short: "fw", Lua: fixedWindowLua, decide: decideFixedWindow},
}

// NumAlgorithms is the number of rows in AlgorithmTable, for arrays indexed by
// Algorithm.Index.
const NumAlgorithms = len(AlgorithmTable)

// Script returns the Lua source of alg, to be run with EVALSHA (rueidis'
// NewLuaScript) under the contract above.
func Script(alg Algorithm) string {
	i := alg.Index()
	if i < 0 {
		panic("BUG: limiter.Script: unknown algorithm " + string(alg))
	}
	return AlgorithmTable[i].Lua
}

// State is the in-process twin of one Redis key; the zero value is an empty
// key. Each algorithm uses only its own fields.
type State struct {
	Log       []LogEntry // sliding_log: one entry per admitted request, oldest first
	Window    int64      // sliding_window, fixed_window: index of the window Count belongs to (the value's w)
	Count     int64      // sliding_window, fixed_window: units admitted in Window (c)
	Prev      int64      // sliding_window: units admitted in Window-1 (p)
	TAT       int64      // token_bucket: theoretical arrival time (µs), the key's value
	ExpiresAt int64      // µs; mirrors the Redis key's PEXPIRE: at or after it the state is empty
}

// Decide is the Go twin of Script(alg): it decides one request at now (µs)
// against s and updates s exactly as the script updates its key. p must come
// from a validated Limit and p.Cost must not be negative.
func Decide(alg Algorithm, s *State, now int64, p Params) Result {
	if now >= s.ExpiresAt {
		s.reset()
	}
	i := alg.Index()
	if i < 0 {
		panic("BUG: limiter.Decide: unknown algorithm " + string(alg))
	}
	return AlgorithmTable[i].decide(s, now, p)
}

// reset empties s, keeping the log's memory for reuse.
func (s *State) reset() {
	*s = State{Log: s.Log[:0]}
}

// expire records the PEXPIRE a script sets after a write that leaves the key
// full again after resetAfter µs.
func (s *State) expire(now, resetAfter int64) {
	s.ExpiresAt = now + pexpireMS(resetAfter)*1000
}

// pexpireMS is the PEXPIRE, in milliseconds, of a key that matters for
// resetAfter more µs: see the contract above.
func pexpireMS(resetAfter int64) int64 {
	return ceilDiv(resetAfter, 1000) + 1
}

// floorDiv is Lua's math.floor(a / b) for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// ceilDiv is Lua's math.ceil(a / b) for b > 0.
func ceilDiv(a, b int64) int64 {
	return -floorDiv(-a, b)
}

// mulDiv returns floor(a*x/m) and a*x mod m for non-negative a, x and
// positive m, with a*x/m below 2^63. a*x itself may exceed 2^63: the Lua
// scripts split it to stay below 2^53, here the 128-bit product does.
func mulDiv(a, x, m int64) (q, r int64) {
	hi, lo := bits.Mul64(uint64(a), uint64(x))
	uq, ur := bits.Div64(hi, lo, uint64(m))
	return int64(uq), int64(ur)
}

// mulDivCeil returns ceil(a*x/m) under mulDiv's conditions.
func mulDivCeil(a, x, m int64) int64 {
	q, r := mulDiv(a, x, m)
	if r > 0 {
		q++
	}
	return q
}
