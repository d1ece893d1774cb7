package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// redisCalls is how many times srv ran each command so far (INFO
// commandstats), scripts counted as one call each.
func redisCalls(t *testing.T, srv *redistest.Server) map[string]int {
	t.Helper()
	info, err := srv.DoString("INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range regexp.MustCompile(`cmdstat_(\w+):calls=(\d+)`).FindAllStringSubmatch(info, -1) {
		out[m[1]], _ = strconv.Atoi(m[2])
	}
	out["scripts"] = out["evalsha"] + out["eval"]
	return out
}

// TestBlocksStayCheapToSync: expired blocks are removed in one round trip
// without a new version, and a block's create or delete reads that block
// only. Before, a sync that found 20,000 expired blocks ran 20,000 scripts
// one after the other (1.1 to 1.7 s), each bumping the version so that
// every node read every block again; and a block's POST read the whole
// blocks hash twice (100,000 blocks: 530 ms).
func TestBlocksStayCheapToSync(t *testing.T) {
	srv := redistest.Start(t)
	cfg := exactConfig("blocks", srv)
	cfg.SyncInterval.Duration = time.Hour // only the syncs this test makes
	n := startNode(t, cfg, nil, nil)
	ctx := context.Background()
	c := srv.Client(t)
	const expired = 20_000
	now := time.Now().UTC()
	for i := 0; i < expired; i += 1000 {
		cmd := c.B().Hset().Key("{rl}:blocks").FieldValue()
		for j := i; j < i+1000; j++ {
			b, _ := json.Marshal(block{ExpiresAt: now.Add(-time.Second), CreatedAt: now.Add(-time.Minute), Reason: "r"})
			cmd = cmd.FieldValue("old:"+strconv.Itoa(j), string(b))
		}
		if err := c.Do(ctx, cmd.Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	live, _ := json.Marshal(block{ExpiresAt: now.Add(time.Hour), CreatedAt: now})
	if err := c.Do(ctx, c.B().Hset().Key("{rl}:blocks").FieldValue().FieldValue("live", string(live)).Build()).Error(); err != nil {
		t.Fatal(err)
	}

	version := func() int64 {
		v, err := srv.DoInt("GET", "{rl}:version")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v0, calls0, start := version(), redisCalls(t, srv), time.Now()
	if err := n.sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	took, calls := time.Since(start), redisCalls(t, srv)
	left, err := srv.DoInt("HLEN", "{rl}:blocks")
	if err != nil {
		t.Fatal(err)
	}
	scripts := calls["scripts"] - calls0["scripts"]
	t.Logf("sync with %d expired blocks: %v, %d scripts, version +%d", expired, took, scripts, version()-v0)
	if left != 1 || len(n.state.Load().blocks) != 1 {
		t.Errorf("after the sync: %d blocks in Redis, %d on the node; want the live one", left, len(n.state.Load().blocks))
	}
	// 1,000 blocks a script, each maybe sent twice (EVALSHA, then EVAL
	// when Redis did not know it yet), and the read.
	if most := 2*(expired/1000) + 4; scripts > most {
		t.Errorf("the sync ran %d scripts to remove %d expired blocks; want at most %d (1,000 a script)", scripts, expired, most)
	}
	if d := version() - v0; d != 0 {
		t.Errorf("removing expired blocks moved the version by %d; want 0 (no node's state changed)", d)
	}

	// A second node on the same store, to see the changes made through n.
	cfg2 := exactConfig("blocks2", srv)
	cfg2.SyncInterval.Duration = time.Hour
	n2 := startNode(t, cfg2, nil, nil)
	if err := n2.sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	fill := func(count int) {
		for i := 0; i < count; i += 1000 {
			cmd := c.B().Hset().Key("{rl}:blocks").FieldValue()
			for j := i; j < i+1000; j++ {
				cmd = cmd.FieldValue("live:"+strconv.Itoa(j), string(live))
			}
			if err := c.Do(ctx, cmd.Build()).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	const many = 50_000
	fill(many)
	for _, m := range []*testNode{n, n2} {
		if err := m.sync(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	// The first block change begins the store's log of changes: the sync
	// after it reads every block once more. After that a change reads only
	// what changed, on every node.
	for i, step := range []struct {
		method  string
		hgetall int
	}{{"POST", 3}, {"DELETE", 2}, {"POST", 2}} {
		calls0 = redisCalls(t, srv)
		req, _ := http.NewRequest(step.method, n.URL+"/api/v1/blocks/k1", strings.NewReader(`{"duration_seconds":60}`))
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 200 {
			t.Fatalf("%s block: %d; want 200", step.method, resp.StatusCode)
		}
		// The write itself reads the one block; the sync after it reads
		// limits and drain whole, and the blocks whole only the first time.
		if got := redisCalls(t, srv)["hgetall"] - calls0["hgetall"]; got != step.hgetall {
			t.Errorf("%s block (step %d): %d HGETALLs; want %d", step.method, i, got, step.hgetall)
		}
		start = time.Now()
		if err := n2.sync(ctx, false); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s block with %d live blocks: %v; another node's sync: %v", step.method, many+1, took, time.Since(start))
		_, blocked := n2.state.Load().blocks["k1"]
		if want := step.method == "POST"; blocked != want || len(n2.state.Load().blocks) != many+1+btoi(want) {
			t.Errorf("after %s: the other node has k1 %v and %d blocks; want %v and %d", step.method, blocked, len(n2.state.Load().blocks), want, many+1+btoi(want))
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestIdempotencyPruneKeepsTheVersion: expired Idempotency-Key records are
// removed in one round trip and without a new version (no node's state
// holds them). Before, a write removed at most 16 of them, one
// compare-and-swap each, each bumping the version so that every node read
// the shared hashes again: 50 expired records cost 18 version bumps on
// one write, and 34 were left.
func TestIdempotencyPruneKeepsTheVersion(t *testing.T) {
	srv := redistest.Start(t)
	cfg := exactConfig("idem", srv)
	cfg.SyncInterval.Duration = time.Hour
	n := startNode(t, cfg, nil, nil)
	ctx := context.Background()
	c := srv.Client(t)
	old, _ := json.Marshal(idemRecord{Fingerprint: "x", At: time.Now().Add(-time.Hour).UnixMicro(), Node: "gone", Done: true})
	cmd := c.B().Hset().Key("{rl}:" + hashIdempotency).FieldValue()
	for i := range 50 {
		cmd = cmd.FieldValue("old"+strconv.Itoa(i), string(old))
	}
	if err := c.Do(ctx, cmd.Build()).Error(); err != nil {
		t.Fatal(err)
	}
	v0, err := srv.DoInt("GET", "{rl}:version")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", n.URL+"/api/v1/blocks/k1", strings.NewReader(`{"duration_seconds":60}`))
	req.Header.Set("Idempotency-Key", "new")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST block with Idempotency-Key: %d", resp.StatusCode)
	}
	v1, _ := srv.DoInt("GET", "{rl}:version")
	left, _ := srv.DoInt("HLEN", "{rl}:"+hashIdempotency)
	t.Logf("one write with 50 expired records: version +%d, %d records left", v1-v0, left)
	// The claim, the block and the answer: three changes.
	if v1-v0 != 3 || left != 1 {
		t.Errorf("one write with 50 expired records: version +%d, %d records left; want +3 and only the new one", v1-v0, left)
	}
}

// TestSyncAfterAStoreFailureReadsEveryBlock: once the store failed a call,
// the next sync reads every block, not only those its log lists. A
// failover to a stale replica fails calls on the way, and the new master
// may hold blocks under log versions this node has already seen; here a
// block written without a log entry stands for one. Without the rule the
// other node never sees it until its minutely full read.
func TestSyncAfterAStoreFailureReadsEveryBlock(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	var nodes [2]*testNode
	for i := range nodes {
		cfg := exactConfig("failover"+strconv.Itoa(i), srv)
		cfg.SyncInterval.Duration = time.Hour // only the syncs this test makes
		nodes[i] = startNode(t, cfg, nil, nil)
	}
	n, n2 := nodes[0], nodes[1]
	put := func(key string) {
		t.Helper()
		if resp := testkit.Call(t, "POST", n.URL+"/api/v1/blocks/"+key, `{"duration_seconds":60}`, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("POST block %s: %d", key, resp.StatusCode)
		}
	}
	has := func(key string) bool {
		_, ok := n2.state.Load().blocks[key]
		return ok
	}
	// Two changes, so that n2's state comes from the log, not a full read.
	for _, key := range []string{"k1", "k2"} {
		put(key)
		if err := n2.sync(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	ghost, _ := json.Marshal(block{ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()})
	if _, err := srv.DoInt("HSET", "{rl}:blocks", "ghost", string(ghost)); err != nil {
		t.Fatal(err)
	}
	put("k3")
	if err := n2.sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !has("k3") || has("ghost") {
		t.Fatalf("a sync without a failure: k3 %v, ghost %v; want the log's change only (the test relies on it)", has("k3"), has("ghost"))
	}
	n2.storeFailed("sync", errors.New("injected: the store went away"))
	put("k4")
	if err := n2.sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !has("k4") || !has("ghost") {
		t.Errorf("the sync after a store failure: k4 %v, ghost %v; want every block read", has("k4"), has("ghost"))
	}
}
