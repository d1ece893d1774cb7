package limiter

import "sort"

// decideSlidingLog is the Go twin of sliding_log.lua: s.Log holds the
// admission time of every unit, oldest first, and a unit admitted at ts
// counts while now < ts + window.
func decideSlidingLog(s *State, now int64, p Params) Result {
	// Dead entries are dropped only on a write, as in Redis.
	dead := sort.Search(len(s.Log), func(i int) bool { return s.Log[i] > now-p.Window })
	count := int64(len(s.Log) - dead)

	want := max(p.Cost, 1) // a peek asks about a cost-1 request
	allowed := want <= p.Limit && count+want <= p.Limit
	if allowed && p.Cost > 0 {
		n := copy(s.Log, s.Log[dead:])
		s.Log = s.Log[:n]
		for range p.Cost {
			s.Log = append(s.Log, now)
		}
		count += p.Cost
		dead = 0
	}
	live := s.Log[dead:]

	r := Result{Allowed: allowed, Remaining: max(p.Limit-count, 0)}
	if count > 0 {
		r.ResetAfter = live[count-1] + p.Window - now // the newest entry expires
	}
	if count > 0 {
		// A unit comes back when the oldest entry expires, or, over a lowered
		// limit, the entry that brings the count below it.
		r.NextAfter = live[max(count-p.Limit, 0)] + p.Window - now
	}
	if !allowed {
		if want > p.Limit {
			r.RetryAfter = r.ResetAfter
		} else {
			// Admitted once the oldest count + want - limit entries have expired.
			r.RetryAfter = live[count+want-p.Limit-1] + p.Window - now
		}
	}
	if allowed && p.Cost > 0 {
		s.expire(now, r.ResetAfter)
	}
	return r
}
