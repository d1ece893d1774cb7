package operator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestLeaseOfDeadOperatorTakenOver: an operator killed on this host leaves
// its lease; the next one takes it over at once instead of waiting for it to
// expire, while a live holder is still refused.
func TestLeaseOfDeadOperatorTakenOver(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	dead := fmt.Sprintf("%s/%d/deadbeef", host, cmd.Process.Pid) // exited and reaped
	live := fmt.Sprintf("%s/%d/cafebabe", host, os.Getppid())    // our parent is alive
	if !holderDead(dead) || holderDead(live) || holderDead("otherhost/1/x") {
		t.Fatalf("holderDead: dead %v live %v other host %v; want true false false", holderDead(dead), holderDead(live), holderDead("otherhost/1/x"))
	}

	cfg, subj := shipped(t)
	cfg.Lease.Duration = time.Hour
	cfg.DB = filepath.Join(t.TempDir(), "op.db")
	store, err := OpenStore(cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	run := func(holder string) error {
		if _, err := store.db.ExecContext(ctx, `DELETE FROM lease`); err != nil {
			t.Fatal(err)
		}
		if held, _, err := store.AcquireLease(ctx, holder, time.Hour, time.Now()); err != nil || !held {
			t.Fatalf("seeding the lease for %s: %v %v", holder, held, err)
		}
		op, err := New(cfg, subj, []string{"http://" + nodetest.FreeAddr(t)}, store, Secrets{}, testkit.Logger(t, 0), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		// Run until it holds the lease (or refuses at once), not for a
		// fixed 300 ms a slow fsync on a loaded machine can use up.
		return runUntil(t, op, "the lease taken", func() bool { return leaseOwner(store) == op.owner })
	}
	if err := run(dead); err != nil {
		t.Fatalf("Run with a dead holder's lease: %v; want it taken over", err)
	}
	if err := run(live); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("Run with a live holder's lease: %v; want ErrLeaseHeld", err)
	}
}
