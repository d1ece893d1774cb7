package limiter

// maxBucketSpan bounds burst*T, the time an empty token bucket takes to
// fill: with now_us < 2^52 the script's largest value, now + 2*burst*T,
// stays below 2^53. 2^50 µs is about 35 years.
const maxBucketSpan = 1 << 50

// bucketPeriod is T, the µs one unit costs: rounded up, so a token bucket
// never admits more than limit units per window in the long run.
func bucketPeriod(limit, window int64) int64 { return ceilDiv(window, limit) }

// bucketSpanProblem returns why a token bucket limit cannot be computed
// exactly, or "" when it can (or when other checks already reject it).
func bucketSpanProblem(l *Limit) string {
	if l.Algorithm != TokenBucket || l.MaxRequests <= 0 || l.MaxRequests > MaxRequestsLimit ||
		l.WindowSeconds <= 0 || l.WindowSeconds > MaxWindowSeconds || l.Burst <= 0 || l.Burst > MaxRequestsLimit {
		return ""
	}
	period := bucketPeriod(l.MaxRequests, l.WindowSeconds*1e6)
	if l.Burst*period > maxBucketSpan {
		return "burst is too large for the rate: an empty bucket would take more than 35 years to fill " +
			"(burst * window_seconds / max_requests must be at most 1125899906 seconds)"
	}
	return ""
}

// decideTokenBucket is the Go twin of token_bucket.lua, which documents the
// algorithm. s.TAT is the key's value.
func decideTokenBucket(s *State, now int64, p Params) Result {
	period := bucketPeriod(p.Limit, p.Window)
	span := p.Burst * period
	debt := max(s.TAT, now) - now // time until full

	want := max(p.Cost, 1) // a peek asks about a cost-1 request
	var need int64
	allowed := false
	if want <= p.Burst {
		need = debt + want*period
		allowed = need <= span
	}
	if allowed && p.Cost > 0 {
		debt = need
		s.TAT = now + debt
		s.expire(now, debt)
	}

	r := Result{Allowed: allowed, Remaining: max(p.Burst-ceilDiv(debt, period), 0), ResetAfter: debt}
	if debt > 0 {
		// The next unit is whole when the debt falls to a multiple of T (or,
		// over a lowered burst, to burst-1 units).
		r.NextAfter = debt - (min(ceilDiv(debt, period), p.Burst)-1)*period
	}
	if !allowed {
		if want > p.Burst {
			r.RetryAfter = debt
		} else {
			r.RetryAfter = need - span
		}
	}
	return r
}
