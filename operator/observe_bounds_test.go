package operator

// What a hostile subject (a compromised node, a misbehaving proxy in front
// of it or of Prometheus) can make one observation cost. Each test serves
// the hostile answer from a real HTTP server on loopback and measures what
// the operator allocated or did.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node"
	"github.com/ratelimiter/ratelimiter/operator/internal/jsonscan"
)

// serveJSON answers every GET of path with body (a 404 elsewhere) and
// counts the GETs.
func serveJSON(t testing.TB, bodies map[string][]byte) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		body, ok := bodies[r.URL.Path]
		if !ok {
			body, ok = bodies["*"]
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// rawSubject is a subject with these observations on base.
func rawSubject(base string, obs ...Observation) *Subject {
	return &Subject{BaseURLs: []string{base}, Timeout: config.Duration{Duration: 5 * time.Second}, Observations: obs}
}

// emptyObjects is a JSON list of empty objects of about size bytes: the
// answer that costs the most once decoded for its length.
func emptyObjects(size int) []byte {
	return []byte("[" + strings.Repeat("{},", size/3-1) + "{}]")
}

// TestHostileAnswerDecodedCostBounded: an answer within the byte cap that
// would decode into far more memory than its bytes (16 MiB of `{},`) is
// refused before it is decoded, with an error naming the bound.
func TestHostileAnswerDecodedCostBounded(t *testing.T) {
	base, _ := serveJSON(t, map[string][]byte{"/x": emptyObjects(16 << 20)})
	o := newObserver(rawSubject(base, Observation{Name: "x", Path: "/x"}), []string{base}, time.Minute)
	var err error
	n, _ := testkit.Allocated(func() { _, err = o.observe(context.Background()) })
	t.Logf("a 16 MiB answer of empty objects: %d MiB allocated, err %v", n>>20, err)
	if err == nil || !strings.Contains(err.Error(), "observation x") || !strings.Contains(err.Error(), "JSON values") {
		t.Errorf("observe = %v; want it refused, naming the observation and the JSON values bound", err)
	}
	if n > 64<<20 {
		t.Errorf("observe allocated %d MiB; want at most 64 MiB (the body and its reading)", n>>20)
	}
}

// TestLargestLegitimateAnswersFit: the largest answers a rate-limiter node
// gives, in its own encoding, are read and decoded whole: GET
// /api/v1/limits at max_limits (1,000 limits of 512-byte patterns, each
// with its previous version) and GET /api/v1/blocks at max_blocks
// (100,000 blocks of IPv4 keys with the reason the shipped block_key
// action gives).
func TestLargestLegitimateAnswersFit(t *testing.T) {
	at := time.Date(2026, 12, 5, 17, 0, 0, 123456789, time.UTC)
	limits := make([]map[string]any, 1000)
	for i := range limits {
		l := limiter.Limit{KeyPattern: fmt.Sprintf("%04d:%s*", i, strings.Repeat("p", 506)), MaxRequests: 100_000_000, WindowSeconds: 86400,
			Burst: 100_000_000, FailureMode: "closed", MaxCost: 1000}
		l.Normalize()
		rec := func(l limiter.Limit) map[string]any {
			b, _ := json.Marshal(l)
			var m map[string]any
			json.Unmarshal(b, &m)
			m["created_at"], m["updated_at"], m["source"] = at, at, "api"
			return m
		}
		limits[i] = rec(l)
		limits[i]["previous"] = rec(l)
	}
	blocks := make([]node.BlockView, 100_000)
	for i := range blocks {
		blocks[i] = node.BlockView{Key: fmt.Sprintf("ip:10.%d.%d.%d", i>>16, i>>8&255, i&255), ExpiresAt: at.Add(time.Hour), RemainingMs: 3_599_999,
			CreatedAt: at, Reason: "blocked by the operator"}
	}
	docs := map[string]any{"/api/v1/limits": map[string]any{"limits": limits, "unmatched": "allow", "version": 123456, "descriptors": []any{}},
		"/api/v1/blocks": map[string]any{"blocks": blocks}}
	bodies := map[string][]byte{}
	for path, doc := range docs {
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		bodies[path] = b
		n, _ := jsonscan.Values(b, 1<<30)
		t.Logf("%s: %d bytes (%.0f%% of maxAnswerBytes), %d values (%.0f%% of maxAnswerValues)",
			path, len(b), 100*float64(len(b))/maxAnswerBytes, n, 100*float64(n)/maxAnswerValues)
	}
	base, _ := serveJSON(t, bodies)
	o := newObserver(rawSubject(base, Observation{Name: "limits", Path: "/api/v1/limits", Field: "limits"},
		Observation{Name: "blocks", Path: "/api/v1/blocks", Field: "blocks"}), []string{base}, time.Minute)
	obs, err := o.observe(context.Background())
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	if got, _ := obs["limits"].([]any); len(got) != len(limits) {
		t.Errorf("observed %d limits; want %d", len(got), len(limits))
	}
	if got, _ := obs["blocks"].([]any); len(got) != len(blocks) {
		t.Errorf("observed %d blocks; want %d", len(got), len(blocks))
	}
}

// TestWorstAcceptedAnswer measures the costliest answer still accepted:
// empty objects up to maxAnswerValues.
func TestWorstAcceptedAnswer(t *testing.T) {
	base, _ := serveJSON(t, map[string][]byte{"/x": emptyObjects(3 * (maxAnswerValues/2 - 1))})
	o := newObserver(rawSubject(base, Observation{Name: "x", Path: "/x"}), []string{base}, time.Minute)
	var err error
	n, _ := testkit.Allocated(func() { _, err = o.observe(context.Background()) })
	t.Logf("the worst accepted answer: %d MiB allocated", n>>20)
	if err != nil {
		t.Fatalf("observe = %v; want it accepted", err)
	}
	if n > 128<<20 {
		t.Errorf("observe allocated %d MiB; want at most 128 MiB", n>>20)
	}
}

// TestForEachBounded: a list of 100,000 entities (within the answer
// bounds) would make a for_each observation GET each of them, every tick;
// the pass refuses it before the first per-entity GET, naming the
// observation. The old code is stopped after 5,000 GETs so the test stays
// short either way.
func TestForEachBounded(t *testing.T) {
	list := nodeList(100_000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, gets := serveJSON(t, map[string][]byte{"/nodes": list, "*": []byte(`{"rps":1}`)})
	o := newObserver(rawSubject(base, Observation{Name: "nodes", Path: "/nodes", Field: "nodes"},
		Observation{Name: "node_metrics", Path: "/nodes/{id}/metrics", ForEach: "nodes"}), []string{base}, time.Minute)
	done := make(chan struct{})
	go func() { // stop the unbounded code after 5,000 GETs
		defer close(done)
		for ctx.Err() == nil && gets.Load() < 5000 {
			runtime.Gosched()
		}
		cancel()
	}()
	start := time.Now()
	_, err := o.observe(ctx)
	took := time.Since(start)
	cancel()
	<-done
	t.Logf("100,000 entities: %d GETs in %s, err %v", gets.Load(), took, err)
	if n := gets.Load(); n != 1 {
		t.Errorf("the pass made %d GETs; want 1 (the list), the for_each refused before its first", n)
	}
	if err == nil || !strings.Contains(err.Error(), "observation node_metrics") || !strings.Contains(err.Error(), "maxGetsPerPass") {
		t.Errorf("observe = %v; want an error naming node_metrics and maxGetsPerPass", err)
	}
}

// TestPassValuesBounded: each answer within maxAnswerValues, but one per
// entity of a for_each, would add up; the pass stops at maxPassValues.
func TestPassValuesBounded(t *testing.T) {
	base, gets := serveJSON(t, map[string][]byte{"/nodes": []byte(`[{"id":1},{"id":2},{"id":3},{"id":4},{"id":5},{"id":6},{"id":7},{"id":8},{"id":9},{"id":10}]`),
		"*": emptyObjects(3 * (maxAnswerValues/2 - 10_000))})
	o := newObserver(rawSubject(base, Observation{Name: "nodes", Path: "/nodes"},
		Observation{Name: "node_metrics", Path: "/nodes/{id}/metrics", ForEach: "nodes"}), []string{base}, time.Minute)
	var err error
	n, _ := testkit.Allocated(func() { _, err = o.observe(context.Background()) })
	t.Logf("10 answers of %d values each: %d GETs, %d MiB allocated, err %v", maxAnswerValues-20_000, gets.Load(), n>>20, err)
	if err == nil || !strings.Contains(err.Error(), "observation node_metrics") || !strings.Contains(err.Error(), "maxPassValues") {
		t.Errorf("observe = %v; want an error naming node_metrics and maxPassValues", err)
	}
	if n > 192<<20 {
		t.Errorf("observe allocated %d MiB; want at most 192 MiB", n>>20)
	}
}

// TestHistoryBounded: the history keeps an observation per interval for
// 30 minutes (360 at 5 s), each as large as a pass allows; it keeps at most
// maxHistoryValues of them, dropping the oldest, and always the latest.
// Here with answers just within maxAnswerValues: 12 passes, of which the
// history keeps the last 4.
func TestHistoryBounded(t *testing.T) {
	base, _ := serveJSON(t, map[string][]byte{"/x": emptyObjects(3 * (maxAnswerValues/2 - 1))})
	o := newObserver(rawSubject(base, Observation{Name: "x", Path: "/x"}), []string{base}, time.Minute)
	h := newHistory(time.Second)
	h.maxValues = 4 * maxAnswerValues // the constant is 16 of them: the test keeps to 4 to stay light
	t0 := time.Date(2026, 12, 5, 17, 0, 0, 0, time.UTC)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	for i := range 12 {
		obs, n, err := o.observeCounted(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		h.add(obs, n, t0.Add(time.Duration(i)*time.Second))
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("12 passes of %d values: %d kept (%d values), live heap %d MiB", maxAnswerValues, len(h.samples), h.values, int64(ms.HeapAlloc-before)>>20)
	if len(h.samples) != 4 || h.values > h.maxValues {
		t.Errorf("the history kept %d samples, %d values; want 4, at most %d", len(h.samples), h.values, h.maxValues)
	}
	if h.at(t0.Add(7*time.Second)) != nil || h.at(t0.Add(8*time.Second)) == nil {
		t.Errorf("at(7s) found %v, at(8s) %v; want nothing (dropped), then the oldest kept", h.at(t0.Add(7*time.Second)) != nil, h.at(t0.Add(8*time.Second)) != nil)
	}
	// One pass larger than the whole budget is still kept, alone: an
	// expression compares the present with the past, never with nothing.
	h.add(map[string]any{"x": 1}, h.maxValues+1, t0.Add(20*time.Second))
	if len(h.samples) != 1 {
		t.Errorf("after a pass over the budget the history kept %d samples; want 1, the latest", len(h.samples))
	}
}

// TestRecordsPerTickBounded: a list of 1,500 violating entities would open
// (then update) 1,500 tickets a tick, each a SQLite transaction and a
// diagnosis; one tick records at most maxRecordsPerTick, and the others,
// still firing, are neither opened nor resolved.
func TestRecordsPerTickBounded(t *testing.T) {
	workers := map[string]bool{}
	for i := range 1500 {
		workers[fmt.Sprintf("w%04d", i)] = true
	}
	q := startQueue(t, workers)
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeObserve
	e := newOp(t, cfg, subj, []string{q.URL}, time.Now)
	start := time.Now()
	e.tick(t)
	took := time.Since(start)
	tk := e.tickets(t)
	t.Logf("1,500 violating entities: first tick %s, %d tickets", took, len(tk))
	if len(tk) != 1000 {
		t.Errorf("%d tickets after the first tick; want 1000 (maxRecordsPerTick)", len(tk))
	}
	if !strings.Contains(e.logs.String(), "1500 violations fire, more than the 1000 one tick records (maxRecordsPerTick)") {
		t.Errorf("logs lack the error naming maxRecordsPerTick:\n%.2000s", e.logs.String())
	}
	// The second tick records the next 1,000, wrapping: the 500 left out
	// by the first get their tickets, so none starves behind the others.
	e.tick(t)
	tk = e.tickets(t)
	if len(tk) != 1500 {
		t.Errorf("%d tickets after the second tick; want 1500: the entities past the first 1000 wait one tick, not forever", len(tk))
	}
	for _, k := range tk {
		if k.Status == StatusResolved {
			t.Errorf("ticket %s resolved while its violation fires", k.Key)
		}
	}
}

// TestTicketTextsBounded: what a ticket stores from an entity (its name,
// its message, its snapshot) is bounded whatever the subject answers: a
// 1 MiB worker name is refused as an entity, a 1 MiB field is cut from
// the message and left out of the snapshot.
func TestTicketTextsBounded(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	q := startQueue(t, map[string]bool{"w1": true, huge: true})
	q.set(func(q *queueService) { q.extra = map[string]any{"note": huge} })
	cfg, subj := queueSubject(t)
	cfg.Mode = ModeObserve
	for i := range subj.Invariants {
		if subj.Invariants[i].Name == "worker_stuck" {
			subj.Invariants[i].Message = "Worker {{.name}} is stuck: {{.note}}"
		}
	}
	e := newOp(t, cfg, subj, []string{q.URL}, time.Now)
	e.tick(t)
	tk := e.tickets(t)
	total := 0
	for _, k := range tk {
		total += len(k.Key) + len(k.Message) + len(k.Observation)
	}
	t.Logf("%d tickets, %d bytes of key, message and snapshot", len(tk), total)
	if len(tk) != 1 || tk[0].Key != "worker_stuck:w1" {
		t.Fatalf("tickets %v; want only worker_stuck:w1", keys(tk))
	}
	if n := len(tk[0].Message); n > maxMessageBytes+len("…") || !strings.HasPrefix(tk[0].Message, "Worker w1 is stuck: xxx") {
		t.Errorf("message of %d bytes; want it cut at maxMessageBytes (%d)", n, maxMessageBytes)
	}
	if n := len(tk[0].Observation); n > 200 || !strings.Contains(string(tk[0].Observation), "maxSnapshotBytes") {
		t.Errorf("snapshot of %d bytes (%.200s); want it replaced by a note naming maxSnapshotBytes", n, tk[0].Observation)
	}
	if !strings.Contains(e.logs.String(), "more than maxEntityBytes (512)") {
		t.Errorf("logs lack the error naming maxEntityBytes")
	}
}

// TestPassEndsAtItsDeadline: a subject that answers every GET slowly, each
// within the subject's timeout, cannot hold a pass past its deadline.
// Before, a for_each over 20 entities answering in 200 ms each held the
// pass 4 s; up to maxGetsPerPass GETs of 2 s each would have held one
// tick, and the lease it renews, for over half an hour.
func TestPassEndsAtItsDeadline(t *testing.T) {
	list := nodeList(20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/nodes" {
			w.Write(list)
			return
		}
		select { // slow, yet within the subject's 5 s timeout
		case <-time.After(200 * time.Millisecond):
		case <-r.Context().Done():
		}
		w.Write([]byte(`{"rps":1}`))
	}))
	t.Cleanup(srv.Close)
	subj := rawSubject(srv.URL, Observation{Name: "nodes", Path: "/nodes", Field: "nodes"},
		Observation{Name: "node_metrics", Path: "/nodes/{id}/metrics", ForEach: "nodes"})
	const deadline = 500 * time.Millisecond
	for _, pass := range []struct {
		name string
		run  func(o *observer) error
	}{
		{"observe", func(o *observer) error { _, err := o.observe(context.Background()); return err }},
		{"read", func(o *observer) error { _, err := o.read(context.Background(), "node_metrics"); return err }},
	} {
		o := newObserver(subj, []string{srv.URL}, deadline)
		start := time.Now()
		err := pass.run(o)
		took := time.Since(start)
		t.Logf("%s: %v, err %v", pass.name, took, err)
		if err == nil || !strings.Contains(err.Error(), "observation node_metrics") || !strings.Contains(err.Error(), "half the operator's lease") {
			t.Errorf("%s = %v; want an error naming node_metrics and the pass's deadline", pass.name, err)
		}
		if took > deadline+time.Second {
			t.Errorf("%s took %v; want it ended at its %v deadline", pass.name, took, deadline)
		}
	}
}

// nodeList is a subject's answer listing n nodes, n0 to n(n-1).
func nodeList(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"nodes":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"n%d"}`, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}
