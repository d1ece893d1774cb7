package node

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/node/store"
)

// TestIdempotencyKeyAcrossNodes: a mutating call repeated with its
// Idempotency-Key, to the same node or another, gets the first answer and
// changes nothing; the key is honoured for ten minutes; reusing it for
// another request is a 422.
func TestIdempotencyKeyAcrossNodes(t *testing.T) {
	clock := testkit.NewClock()
	shared := store.NewMemoryStore(clock.Now)
	a := startNode(t, testConfig("a", nil), shared, clock.Now)
	b := startNode(t, testConfig("b", nil), shared, clock.Now)
	send := func(base, method, path, body, key string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out), resp.Header
	}
	// A rollback is not idempotent by nature: applied twice, it undoes
	// itself. log:* goes 10 -> 3, then one rollback must leave 10.
	if st, body, _ := send(a.URL, "POST", "/api/v1/limits", `{"key_pattern":"log:*","max_requests":3,"window_seconds":10}`, ""); st != 200 {
		t.Fatalf("set log:*: %d %s", st, body)
	}
	st1, body1, h1 := send(a.URL, "POST", "/api/v1/limits/log:%2A/rollback", "", "k-1")
	if st1 != 200 || h1.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first rollback: %d %s (replayed %q); want 200, applied", st1, body1, h1.Get("Idempotent-Replayed"))
	}
	st2, body2, h2 := send(b.URL, "POST", "/api/v1/limits/log:%2A/rollback", "", "k-1")
	if st2 != st1 || body2 != body1 || h2.Get("Idempotent-Replayed") != "true" {
		t.Errorf("repeat on b: %d %s (replayed %q); want a's answer, replayed", st2, body2, h2.Get("Idempotent-Replayed"))
	}
	maxOf := func() string {
		_, body, _ := send(b.URL, "GET", "/api/v1/limits", "", "")
		i := strings.Index(body, `"key_pattern":"log:*","max_requests":`)
		if i < 0 {
			return body
		}
		rest := body[i+len(`"key_pattern":"log:*","max_requests":`):]
		return rest[:strings.IndexByte(rest, ',')]
	}
	if got := maxOf(); got != "10" {
		t.Errorf("log:* max_requests after one rollback and a repeat = %s; want 10 (rolled back once)", got)
	}
	// The same key for another request: refused, nothing changed.
	if st, body, _ := send(b.URL, "POST", "/api/v1/blocks/x", `{"duration_seconds":60}`, "k-1"); st != 422 || !strings.Contains(body, "idempotency-key-reused") {
		t.Errorf("k-1 reused for a block: %d %s; want 422 idempotency-key-reused", st, body)
	}
	if st, body, _ := send(a.URL, "POST", "/api/v1/blocks/x", `{"duration_seconds":60}`, strings.Repeat("k", 300)); st != 400 {
		t.Errorf("a 300-byte key: %d %s; want 400", st, body)
	}
	// A key of 255 bytes outside ASCII (the most allowed, binary) is a key
	// like any other: applied once, replayed on the other node.
	bin := strings.Repeat("\xff\x80", 127) + "\xfe"
	stB, bodyB, hB := send(a.URL, "POST", "/api/v1/blocks/y", `{"duration_seconds":60}`, bin)
	if stB >= 300 || hB.Get("Idempotent-Replayed") != "" {
		t.Errorf("a binary 255-byte key: %d %s (replayed %q); want 2xx, applied", stB, bodyB, hB.Get("Idempotent-Replayed"))
	}
	if st, body, h := send(b.URL, "POST", "/api/v1/blocks/y", `{"duration_seconds":60}`, bin); st != stB || body != bodyB || h.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the binary key repeated on b: %d %s (replayed %q); want a's answer, replayed", st, body, h.Get("Idempotent-Replayed"))
	}
	// Ten minutes on, the key is forgotten: the same call applies again.
	clock.Add(10*time.Minute + time.Second)
	st3, _, h3 := send(b.URL, "POST", "/api/v1/limits/log:%2A/rollback", "", "k-1")
	if st3 != 200 || h3.Get("Idempotent-Replayed") != "" {
		t.Errorf("k-1 after 10 min: %d (replayed %q); want applied", st3, h3.Get("Idempotent-Replayed"))
	}
	if got := maxOf(); got != "3" {
		t.Errorf("log:* after a second rollback = %s; want 3", got)
	}
}

// TestIdempotencyKeysExpire: keys older than ten minutes leave the shared
// hash as later keyed calls come, so it holds the recent calls only.
func TestIdempotencyKeysExpire(t *testing.T) {
	clock := testkit.NewClock()
	shared := store.NewMemoryStore(clock.Now)
	a := startNode(t, testConfig("a", nil), shared, clock.Now)
	block := func(key, idem string) {
		t.Helper()
		req, _ := http.NewRequest("POST", a.URL+"/api/v1/blocks/"+key, strings.NewReader(`{"duration_seconds":60}`))
		req.Header.Set("Idempotency-Key", idem)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("block %s: %d", key, resp.StatusCode)
		}
	}
	held := func() int {
		snap, err := shared.Read(context.Background(), hashIdempotency)
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Hashes[0])
	}
	for i := range 20 {
		block("old"+strconv.Itoa(i), "old-"+strconv.Itoa(i))
	}
	if got := held(); got != 20 {
		t.Fatalf("after 20 keyed calls the hash holds %d keys; want 20", got)
	}
	clock.Add(idempotencyTTL + time.Second)
	block("new1", "new-1") // drops 16 expired keys
	block("new2", "new-2") // and the other 4
	if got := held(); got != 2 {
		t.Errorf("after ten minutes and two keyed calls the hash holds %d keys; want the 2 new ones", got)
	}
}
