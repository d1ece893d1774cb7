package limiter

// decideSlidingWindow is the Go twin of sliding_window.lua, which documents
// the estimate. s.Window, s.Count and s.Prev are the value's w, c and p.
func decideSlidingWindow(s *State, now int64, p Params) Result {
	idx := floorDiv(now, p.Window)
	elapsed := now - idx*p.Window
	c, prev := s.Count, s.Prev
	switch s.Window {
	case idx:
	case idx - 1:
		prev, c = c, 0
	default:
		prev, c = 0, 0
	}
	used := c + mulDivCeil(prev, p.Window-elapsed, p.Window)

	want := max(p.Cost, 1) // a peek asks about a cost-1 request
	allowed := want <= p.Limit && used+want <= p.Limit
	if allowed && p.Cost > 0 {
		c += p.Cost
		used += p.Cost
	}

	r := Result{Allowed: allowed, Remaining: max(p.Limit-used, 0)}
	switch {
	case c > 0:
		r.ResetAfter = 2*p.Window - elapsed
	case prev > 0:
		r.ResetAfter = p.Window - elapsed
	}
	if used > 0 {
		// The estimate must drop to target: within this window while prev
		// decays, if that is enough, else in the next one as c decays.
		target := min(used, p.Limit) - 1
		if target >= c {
			q, _ := mulDiv(target-c, p.Window, prev)
			r.NextAfter = p.Window - q - elapsed
		} else {
			q, _ := mulDiv(target, p.Window, c)
			r.NextAfter = 2*p.Window - q - elapsed
		}
	}
	if !allowed {
		switch {
		case want > p.Limit:
			r.RetryAfter = r.ResetAfter
		case c+want <= p.Limit:
			// Later in this window, once prev has decayed enough.
			q, _ := mulDiv(p.Limit-c-want, p.Window, prev)
			r.RetryAfter = p.Window - q - elapsed
		case c <= p.Limit-want:
			// At the start of the next window, where c weighs fully.
			r.RetryAfter = p.Window - elapsed
		default:
			// Later in the next window, once c has decayed enough.
			q, _ := mulDiv(p.Limit-want, p.Window, c)
			r.RetryAfter = 2*p.Window - q - elapsed
		}
	}
	if allowed && p.Cost > 0 {
		s.Window, s.Count, s.Prev = idx, c, prev
		s.expire(now, r.ResetAfter)
	}
	return r
}
