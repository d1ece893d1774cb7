package node

import "github.com/ratelimiter/ratelimiter/limiter"

// rateLimitFields are the r and t of the RateLimit field
// (draft-ietf-httpapi-ratelimit-headers-10): the units left of the policy's
// quota q, and the seconds until more are available (0 at full quota).
// q is max_requests for every algorithm, so a token bucket whose burst is
// larger advertises at most q units: the rest is burst, named in the
// policy's ratelimiter-burst parameter, not sustained quota.
func rateLimitFields(p *Policy, res *limiter.Result) (r, t int64) {
	r = min(res.Remaining, p.MaxRequests)
	if r == p.MaxRequests {
		return r, 0
	}
	return r, ceilSeconds(res.NextAfter)
}
