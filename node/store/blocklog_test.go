package store

import (
	"context"
	"strconv"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
)

// TestBlockLog: ReadShared answers only the blocks changed after a version
// while its log reaches back that far and is the log the caller names;
// otherwise every block.
func TestBlockLog(t *testing.T) {
	srv := redistest.Start(t)
	s, err := NewRedisStore(srv.URL(), "rl", TimeoutsFor(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	swap := func(hash, field, old, new string) {
		t.Helper()
		if ok, err := s.Swap(ctx, hash, field, old, new); err != nil || !ok {
			t.Fatalf("Swap(%s, %s) = %v, %v", hash, field, ok, err)
		}
	}
	read := func(since int64, log string) Shared {
		t.Helper()
		sh, err := s.ReadShared(ctx, since, log, HashLimits, HashDrain)
		if err != nil {
			t.Fatal(err)
		}
		return sh
	}
	swap(HashLimits, "p", "", "limit") // not a block: no log
	sh := read(0, "")
	if sh.Partial || sh.Log != "" || len(sh.Blocks) != 0 || sh.Hashes[0]["p"] != "limit" || sh.Version != 1 {
		t.Fatalf("before any block change: %+v; want a full read, no log, version 1", sh)
	}
	swap(HashBlocks, "a", "", "A")
	swap(HashBlocks, "b", "", "B")
	sh = read(1, "")
	if sh.Partial || sh.Log == "" || len(sh.Blocks) != 2 {
		t.Fatalf("a caller that knows no log: %+v; want every block and the log's name", sh)
	}
	log := sh.Log
	swap(HashBlocks, "a", "A", "")
	swap(HashLimits, "p", "limit", "limit2")
	sh = read(3, log)
	if !sh.Partial || len(sh.Blocks) != 1 || sh.Blocks["a"] != "" || sh.Hashes[0]["p"] != "limit2" || sh.Version != 5 {
		t.Fatalf("since 3: %+v; want only a, deleted, at version 5", sh)
	}
	if sh = read(3, log+"x"); sh.Partial {
		t.Fatalf("another log's name: %+v; want a full read", sh)
	}
	// Past MaxBlockChanges the oldest changes go, and a caller from before
	// them reads everything.
	for i := range MaxBlockChanges {
		swap(HashBlocks, "k"+strconv.Itoa(i), "", "v")
	}
	if sh = read(3, log); sh.Partial || len(sh.Blocks) != MaxBlockChanges+1 {
		t.Fatalf("since 3, after %d changes: partial %v, %d blocks; want all %d", MaxBlockChanges, sh.Partial, len(sh.Blocks), MaxBlockChanges+1)
	}
	if sh = read(5, log); !sh.Partial || len(sh.Blocks) != MaxBlockChanges {
		t.Fatalf("since 5: partial %v, %d blocks; want the %d changed after it", sh.Partial, len(sh.Blocks), MaxBlockChanges)
	}
	if sh = read(7, log); !sh.Partial || len(sh.Blocks) != MaxBlockChanges-2 {
		t.Fatalf("since 7: partial %v, %d blocks; want the %d changed after it", sh.Partial, len(sh.Blocks), MaxBlockChanges-2)
	}
	if n, _ := srv.DoInt("ZCARD", "{rl}:blocklog"); n != MaxBlockChanges {
		t.Errorf("the log holds %d changes; want %d", n, MaxBlockChanges)
	}
}
