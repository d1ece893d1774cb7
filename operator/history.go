package operator

import (
	"fmt"
	"sync"
	"time"
)

// history keeps recent observations so an expression can compare an
// observation with its own past: at(t) is an entity as it was at time t,
// ago("2m") as it was two minutes ago, age(t) how many seconds ago t was.
// A bad limit change shows as a rise against the minutes before it, not
// only as a fixed threshold crossed. It lives in memory: after a restart
// there is no past, and at() answers nil (an expression must then hold
// back, never guess).
type history struct {
	mu      sync.Mutex
	samples []histSample // oldest first
	step    time.Duration
	keep    time.Duration
	// values is the JSON values of the answers behind samples; maxValues
	// bounds it (maxHistoryValues).
	values, maxValues int
}

type histSample struct {
	at     time.Time
	obs    map[string]any
	values int // of the answers the observation was decoded from
}

// One sample per loop interval, at most one a second, over 30 min: it
// reaches back past the 15 min a rollback may look, and has a sample just
// before any change (at the default 5 s interval, 360 samples, a few MB).
const historyKeep = 30 * time.Minute

// maxHistoryValues bounds what the history holds, counted as the JSON
// values of the answers behind its samples: each can be as large as a pass
// allows (maxPassValues), and 360 passes of answers at maxAnswerValues held
// about 12 GiB (33 MiB each). At this count it holds about 550 MiB at worst.
// The oldest samples go first, so a large subject keeps a shorter past: the
// shipped subject decodes about 66,000 values a pass on a cluster of 1,000
// nodes and 1,000 limits, which keeps 21 minutes, past the 15 a rollback
// may look; a cluster of 10 nodes and 50 limits, about 2,500, keeps the
// whole 30.
const maxHistoryValues = 16 << 20

func newHistory(interval time.Duration) *history {
	return &history{step: max(interval, time.Second), keep: historyKeep, maxValues: maxHistoryValues}
}

// add records obs, taken at now and decoded from answers of values JSON
// values, if the last sample is a step old. The latest sample is always
// kept, whatever its size.
func (h *history) add(obs map[string]any, values int, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.samples); n > 0 && now.Sub(h.samples[n-1].at) < h.step {
		return
	}
	h.samples = append(h.samples, histSample{at: now, obs: obs, values: values})
	h.values += values
	cut := 0
	for cut < len(h.samples)-1 && (now.Sub(h.samples[cut].at) > h.keep || h.values > h.maxValues) {
		h.values -= h.samples[cut].values
		cut++
	}
	clear(h.samples[:cut]) // let the dropped observations go
	h.samples = h.samples[cut:]
}

// at returns the latest observation taken at or before t, or nil when the
// history does not reach back that far.
func (h *history) at(t time.Time) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out map[string]any
	for _, s := range h.samples {
		if s.at.After(t) {
			break
		}
		out = s.obs
	}
	return out
}

// funcs are the history functions of one entity of one invariant (over
// and entity field; over "" is the whole observation) as of now.
func (h *history) funcs(over, entityField, entity string, now time.Time) map[string]any {
	at := func(v any) any {
		t, err := toTime(v)
		if err != nil || h == nil {
			return nil
		}
		obs := h.at(t)
		if obs == nil {
			return nil
		}
		if over == "" {
			return obs
		}
		list, _ := obs[over].([]any)
		for _, el := range list {
			if m, ok := el.(map[string]any); ok && fmt.Sprint(m[entityField]) == entity {
				return m
			}
		}
		return nil
	}
	return map[string]any{
		"at": at,
		"ago": func(v any) any {
			d, err := toDuration(v)
			if err != nil {
				return nil
			}
			return at(now.Add(-d))
		},
		"age": func(v any) any {
			t, err := toTime(v)
			if err != nil {
				return nil
			}
			return now.Sub(t).Seconds()
		},
	}
}

// historyNames are the names funcs adds to an expression's scope.
var historyNames = []string{"at", "ago", "age"}

func toTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case string:
		return time.Parse(time.RFC3339Nano, x)
	}
	return time.Time{}, fmt.Errorf("not a time: %v", v)
}

func toDuration(v any) (time.Duration, error) {
	switch x := v.(type) {
	case time.Duration:
		return x, nil
	case string:
		return time.ParseDuration(x)
	case int:
		return time.Duration(x) * time.Second, nil
	case float64:
		return time.Duration(x * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("not a duration: %v", v)
}
