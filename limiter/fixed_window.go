package limiter

// decideFixedWindow is the Go twin of fixed_window.lua, which documents the
// algorithm. s.Window and s.Count are the value's w and c.
func decideFixedWindow(s *State, now int64, p Params) Result {
	idx := floorDiv(now, p.Window)
	var c int64
	if s.Window == idx {
		c = s.Count
	}

	want := max(p.Cost, 1) // a peek asks about a cost-1 request
	allowed := want <= p.Limit && c+want <= p.Limit
	if allowed && p.Cost > 0 {
		c += p.Cost
	}

	r := Result{Allowed: allowed, Remaining: max(p.Limit-c, 0)}
	if c > 0 {
		r.ResetAfter = (idx+1)*p.Window - now
	}
	r.NextAfter = r.ResetAfter // every unit comes back at the window's end
	if !allowed {
		r.RetryAfter = r.ResetAfter
	}
	if allowed && p.Cost > 0 {
		s.Window, s.Count = idx, c
		s.expire(now, r.ResetAfter)
	}
	return r
}
