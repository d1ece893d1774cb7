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
	if !allowed {
		if want > p.Limit {
			r.RetryAfter = r.ResetAfter
		} else {
			// Admitted once the live units up to target have expired. Each
			// entry holds at least one unit, so the entry holding target is
			// at most limit - want places below the newest, exactly there
			// when every cost is 1: try that first (as the script does).
			target := live[len(live)-1].End + want - p.Limit
			i := max(len(live)-1-int(p.Limit-want), 0)
			if live[i].End < target {
				i += 1 + sort.Search(len(live)-i-1, func(k int) bool { return live[i+1+k].End >= target })
			}
			r.RetryAfter = live[i].At + p.Window - now
		}
	}
	if allowed && p.Cost > 0 {
		s.expire(now, r.ResetAfter)
	}
	return r
}
