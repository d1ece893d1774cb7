package operator

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync/atomic"
	"testing"
)

// countingDriver is the SQLite driver, counting transactions: every BEGIN,
// and every statement run outside one (SQLite runs it in its own).
type countingDriver struct {
	driver.Driver
	n atomic.Int64
}

// countingDrivers numbers the drivers registered, one per store.
var countingDrivers atomic.Int64

// countingStore opens path through a counting driver of its own and
// returns the count of its transactions so far.
func countingStore(t testing.TB, path string) (*Store, *atomic.Int64) {
	t.Helper()
	db, err := sql.Open("sqlite", "")
	if err != nil {
		t.Fatal(err)
	}
	d := &countingDriver{Driver: db.Driver()}
	db.Close()
	name := fmt.Sprintf("sqlite-counting-%d", countingDrivers.Add(1))
	sql.Register(name, d)
	st, err := openStore(path, name)
	if err != nil {
		t.Fatalf("openStore(%q): %v", path, err)
	}
	t.Cleanup(func() { st.Close() })
	return st, &d.n
}

func (d *countingDriver) Open(name string) (driver.Conn, error) {
	c, err := d.Driver.Open(name)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &d.n}, nil
}

type countingConn struct {
	driver.Conn
	n    *atomic.Int64
	inTx bool
}

func (c *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	c.n.Add(1)
	c.inTx = true
	return countingTx{tx, c}, nil
}

func (c *countingConn) statement() {
	if !c.inTx {
		c.n.Add(1)
	}
}

func (c *countingConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	c.statement()
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

func (c *countingConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	c.statement()
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

// PrepareContext counts a prepared statement run outside a transaction
// when it is prepared; the store prepares only inside them.
func (c *countingConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	c.statement()
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
}

type countingTx struct {
	driver.Tx
	c *countingConn
}

func (t countingTx) Commit() error   { t.c.inTx = false; return t.Tx.Commit() }
func (t countingTx) Rollback() error { t.c.inTx = false; return t.Tx.Rollback() }

// TestCountingDriverCounts checks the counter on known calls, so a quiet
// tick's "one transaction" is measured by something that can see more.
func TestCountingDriverCounts(t *testing.T) {
	st, n := countingStore(t, t.TempDir()+"/ops.db")
	ctx := context.Background()
	count := func(what string, want int64, f func() error) {
		t.Helper()
		before := n.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := n.Load() - before; got != want {
			t.Errorf("%s: %d transactions; want %d", what, got, want)
		}
	}
	count("Mode", 1, func() error { _, _, err := st.Mode(ctx); return err })
	count("Tickets then Proposals", 2, func() error {
		if _, err := st.Tickets(ctx, TicketFilter{}); err != nil {
			return err
		}
		_, err := st.Proposals(ctx, ProposalFilter{})
		return err
	})
	count("SaveTimers", 1, func() error { return st.SaveTimers(ctx, map[string]Timer{"a": {}, "b": {}}) })
	count("Tick", 1, func() error {
		_, err := st.Tick(ctx, storeT0, TickWrites{LeaseOwner: "me", LeaseTTL: 1e9, Timers: map[string]Timer{}})
		return err
	})
}
