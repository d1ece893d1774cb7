package limiter

import "sort"

// LogEntry is one admitted request of a sliding_log key: its admission
// time and the units it holds, Start+1..End, numbered since the key was
// last empty. It is the Go form of one sorted-set member of sliding_log.lua.
type LogEntry struct {
	At, Start, End int64
}

// decideSlidingLog is the Go twin of sliding_log.lua: s.Log holds one entry
// per admitted request, oldest first, and a request admitted at At counts
// its units while now < At + window.
func decideSlidingLog(s *State, now int64, p Params) Result {
	// Dead entries are skipped here and dropped by writes (below).
	dead := sort.Search(len(s.Log), func(i int) bool { return s.Log[i].At > now-p.Window })
	live := s.Log[dead:]
	var count int64
	if len(live) > 0 {
		count = live[len(live)-1].End - live[0].Start
	}

	want := max(p.Cost, 1) // a peek asks about a cost-1 request
	allowed := want <= p.Limit && count+want <= p.Limit
	if allowed && p.Cost > 0 {
		e := LogEntry{At: now}
		if len(live) > 0 {
			// A clock that went back scores the entry like the newest.
			e.At, e.Start = max(now, live[len(live)-1].At), live[len(live)-1].End
		}
		e.End = e.Start + p.Cost
		// Redis drops the dead entries at every write; here they go once
		// they are half the log, so a write costs O(1) amortized instead
		// of a copy of the live entries. Only memory can tell.
		if dead > 0 && 2*dead >= len(s.Log) {
			s.Log = s.Log[:copy(s.Log, live)]
			dead = 0
		}
		s.Log = append(s.Log, e)
		live = s.Log[dead:]
		count += p.Cost
	}

	r := Result{Allowed: allowed, Remaining: max(p.Limit-count, 0)}
	if count > 0 {
		r.ResetAfter = live[len(live)-1].At + p.Window - now // the newest entry expires
	}
	// A unit comes back when the oldest live entry expires or, over a
	// lowered limit, the entry that brings the count below the limit.
	if count > p.Limit {
		r.NextAfter = live[holding(live, live[len(live)-1].End-p.Limit+1)].At + p.Window - now
	} else if count > 0 {
		r.NextAfter = live[0].At + p.Window - now
	}
	if !allowed {
		if want > p.Limit {
			r.RetryAfter = r.ResetAfter
		} else {
			// Admitted once the live units up to target have expired.
			target := live[len(live)-1].End + want - p.Limit
			r.RetryAfter = live[holding(live, target)].At + p.Window - now
		}
	}
	if allowed && p.Cost > 0 {
		s.expire(now, r.ResetAfter)
	}
	return r
}

// holding returns the index of the live entry that holds unit u. Each entry
// holds at least one unit, so that entry is at most (newest End - u) places
// below the newest, exactly there when every cost is 1: that place is
// tried first, then the entries above it are searched. The script first
// tries the oldest live entry, which it has read already (it holds u at the
// limit when every cost is 1); here that would be a branch for nothing.
func holding(live []LogEntry, u int64) int {
	i := max(len(live)-1-int(live[len(live)-1].End-u), 0)
	if live[i].End < u {
		i += 1 + sort.Search(len(live)-i-1, func(k int) bool { return live[i+1+k].End >= u })
	}
	return i
}
