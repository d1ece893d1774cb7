package node

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
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
	if scripts > expired/1000+2 {
		t.Errorf("the sync ran %d scripts to remove %d expired blocks; want at most %d (1,000 a script)", scripts, expired, expired/1000+2)
	}
	if d := version() - v0; d != 0 {
		t.Errorf("removing expired blocks moved the version by %d; want 0 (no node's state changed)", d)
	}

	for _, method := range []string{"POST", "DELETE"} {
		calls0 = redisCalls(t, srv)
		req, _ := http.NewRequest(method, n.URL+"/api/v1/blocks/k1", strings.NewReader(`{"duration_seconds":60}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s block: %d; want 200", method, resp.StatusCode)
		}
		// The sync after the write reads the blocks once; the write itself
		// must not.
		if got := redisCalls(t, srv)["hgetall"] - calls0["hgetall"]; got != 3 {
			t.Errorf("%s block: %d HGETALLs; want 3 (limits, blocks and drain, once, by the sync after it)", method, got)
		}
	}
}
