package operator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // pure-Go driver "sqlite": the binary stays CGO-free
)

// The store keeps everything the operator must not forget across a restart
// in one SQLite file: tickets, proposals, the audit log, grace timers, the
// mode and the lease. Times are stored as UTC unix microseconds (INTEGER),
// so they sort and compare in SQL; they come back as UTC time.Time values
// truncated to the microsecond. Write transactions BEGIN IMMEDIATE, so two
// operators (or two processes such as `operator run` and `operator actions
// approve`) on one file serialise on the write lock instead of failing on a
// read-to-write upgrade; busy_timeout makes the loser wait rather than fail.

// ErrNotFound is returned (wrapped) when a ticket or proposal does not exist.
var ErrNotFound = errors.New("not found")

// AuditEntry is one row of the append-only audit log.
type AuditEntry struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	TicketID   int64           `json:"ticket_id,omitempty"`
	ProposalID int64           `json:"proposal_id,omitempty"`
	Actor      string          `json:"actor"`
	Event      string          `json:"event"`
	Detail     json.RawMessage `json:"detail,omitempty"`
}

// Timer is a persisted grace timer, so pending invariants survive a restart.
type Timer struct {
	Key      string
	Since    time.Time
	LastTrue time.Time
	Firing   bool
}

// equal compares the stored fields (microseconds, as SaveTimers keeps them).
func (t Timer) equal(u Timer) bool {
	return t.Firing == u.Firing && micros(t.Since) == micros(u.Since) && micros(t.LastTrue) == micros(u.LastTrue)
}

// Store is the operator's SQLite database. It is safe for concurrent use,
// and several Stores (in one process or several) may share one file.
type Store struct {
	db  *sql.DB
	now func() time.Time // for timestamps the API does not take explicitly
}

// migrations[i] takes the schema from version i to i+1. Append only: a
// released migration is never edited.
var migrations = []string{
	`
CREATE TABLE tickets (
	id          INTEGER PRIMARY KEY,
	key         TEXT    NOT NULL,
	invariant   TEXT    NOT NULL,
	entity      TEXT    NOT NULL,
	severity    TEXT    NOT NULL,
	status      TEXT    NOT NULL,
	message     TEXT    NOT NULL,
	first_seen  INTEGER NOT NULL,
	last_seen   INTEGER NOT NULL,
	occurrences INTEGER NOT NULL,
	resolved_at INTEGER,
	observation TEXT,
	diagnosis   TEXT
);
-- At most one unresolved ticket per key, whatever the callers do.
CREATE UNIQUE INDEX tickets_unresolved_key ON tickets(key) WHERE status <> 'resolved';
CREATE INDEX tickets_status ON tickets(status);

CREATE TABLE proposals (
	id                INTEGER PRIMARY KEY,
	ticket_id         INTEGER REFERENCES tickets(id),
	action            TEXT    NOT NULL,
	params            TEXT    NOT NULL,
	reason            TEXT    NOT NULL,
	source            TEXT    NOT NULL,
	risk_level        TEXT    NOT NULL,
	requires_approval INTEGER NOT NULL,
	status            TEXT    NOT NULL,
	created_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	executed_at       INTEGER,
	result            TEXT    NOT NULL,
	actor             TEXT    NOT NULL
);
CREATE INDEX proposals_ticket ON proposals(ticket_id);
CREATE INDEX proposals_executed ON proposals(executed_at);

CREATE TABLE audit (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	at          INTEGER NOT NULL,
	ticket_id   INTEGER REFERENCES tickets(id),
	proposal_id INTEGER REFERENCES proposals(id),
	actor       TEXT    NOT NULL,
	event       TEXT    NOT NULL,
	detail      TEXT
);
CREATE INDEX audit_ticket ON audit(ticket_id);
-- Append only, at the DB level too: nothing may rewrite history.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;

CREATE TABLE timers (
	key       TEXT    PRIMARY KEY,
	since     INTEGER NOT NULL,
	last_true INTEGER NOT NULL,
	firing    INTEGER NOT NULL
);

CREATE TABLE settings (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE lease (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	owner   TEXT    NOT NULL,
	expires INTEGER NOT NULL
);
`,
	// The LLM diagnoser's hourly budget sums its audited answers.
	`CREATE INDEX audit_event_at ON audit(event, at);`,
	// SLO error budgets: seconds in and out of target per SLO and minute.
	`CREATE TABLE slo_minutes (
	slo    TEXT    NOT NULL,
	minute INTEGER NOT NULL,
	good   REAL    NOT NULL,
	bad    REAL    NOT NULL,
	PRIMARY KEY (slo, minute)
);`,
}

// OpenStore opens (creating if needed) the SQLite file at path and brings
// its schema up to date.
func OpenStore(path string) (*Store, error) {
	return openStore(path, "sqlite")
}

// openStore is OpenStore on a named database/sql driver: tests wrap the
// SQLite driver to count its transactions.
func openStore(path, driver string) (*Store, error) {
	if path == "" {
		return nil, errors.New("cannot open store: empty path")
	}
	// A file: URI, with the characters that would end the path escaped, so
	// any file name works and the driver's parameters are not taken for it.
	name := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	dsn := "file:" + name + "?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("cannot open store %q: %w", path, err)
	}
	s := &Store{db: db, now: time.Now}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot open store %q: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return err
		}
		var version int
		err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
		if errors.Is(err, sql.ErrNoRows) {
			_, err = tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`)
		}
		if err != nil {
			return err
		}
		if version > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this binary knows (%d)", version, len(migrations))
		}
		for i := version; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration to schema version %d: %w", i+1, err)
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations))
		return err
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// tx runs f in a write transaction (BEGIN IMMEDIATE, see the DSN).
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// RecordViolation opens a ticket for v.Key() when no unresolved ticket has
// that key (status open, FirstSeen = v.Since, Occurrences 1), else updates
// the unresolved one (LastSeen = now, Occurrences+1, Message, Observation).
// It returns the ticket and whether it was opened now. Opening is audited;
// updates are not (they happen every loop).
func (s *Store) RecordViolation(ctx context.Context, v Violation, now time.Time) (Ticket, bool, error) {
	key := v.Key()
	obs, err := jsonColumn(v.Observation)
	if err != nil {
		return Ticket{}, false, fmt.Errorf("cannot record violation %q: observation: %w", key, err)
	}
	var (
		t      Ticket
		opened bool
	)
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM tickets WHERE key = ? AND status <> ?`, key, StatusResolved).Scan(&id)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			opened = true
			since := v.Since
			if since.IsZero() {
				since = now
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO tickets
				(key, invariant, entity, severity, status, message, first_seen, last_seen, occurrences, observation)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)`,
				key, v.Invariant, v.Entity, v.Severity, StatusOpen, v.Message, micros(since), micros(now), obs)
			if err != nil {
				return err
			}
			if id, err = res.LastInsertId(); err != nil {
				return err
			}
			if err := insertAudit(ctx, tx, AuditEntry{At: now, TicketID: id, Actor: "monitor", Event: "opened",
				Detail: auditDetail(map[string]any{"key": key, "severity": v.Severity, "message": v.Message, "since": since.UTC()})}); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			if _, err := tx.ExecContext(ctx, `UPDATE tickets SET last_seen = ?, occurrences = occurrences + 1,
				message = ?, observation = ? WHERE id = ?`, micros(now), v.Message, obs, id); err != nil {
				return err
			}
		}
		t, err = getTicket(ctx, tx, id)
		return err
	})
	if err != nil {
		return Ticket{}, false, fmt.Errorf("cannot record violation %q: %w", key, err)
	}
	return t, opened, nil
}

const ticketColumns = `id, key, invariant, entity, severity, status, message, first_seen, last_seen,
	occurrences, resolved_at, observation, diagnosis`

type sqlQueryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

type rowScanner interface{ Scan(dest ...any) error }

func scanTicket(r rowScanner) (Ticket, error) {
	var (
		t              Ticket
		first, last    int64
		resolved       sql.NullInt64
		obs, diagnosis []byte
	)
	if err := r.Scan(&t.ID, &t.Key, &t.Invariant, &t.Entity, &t.Severity, &t.Status, &t.Message,
		&first, &last, &t.Occurrences, &resolved, &obs, &diagnosis); err != nil {
		return Ticket{}, err
	}
	t.FirstSeen, t.LastSeen = fromMicros(first), fromMicros(last)
	t.ResolvedAt = fromNullMicros(resolved)
	t.Observation, t.Diagnosis = rawJSON(obs), rawJSON(diagnosis)
	return t, nil
}

func getTicket(ctx context.Context, q sqlQueryer, id int64) (Ticket, error) {
	t, err := scanTicket(q.QueryRowContext(ctx, `SELECT `+ticketColumns+` FROM tickets WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Ticket{}, ErrNotFound
	}
	return t, err
}

// Ticket returns one ticket; ErrNotFound when absent.
func (s *Store) Ticket(ctx context.Context, id int64) (Ticket, error) {
	t, err := getTicket(ctx, s.db, id)
	if err != nil {
		return Ticket{}, fmt.Errorf("ticket %d: %w", id, err)
	}
	return t, nil
}

// Tickets lists tickets, newest first.
func (s *Store) Tickets(ctx context.Context, f TicketFilter) ([]Ticket, error) {
	return listTickets(ctx, s.db, f)
}

func listTickets(ctx context.Context, db sqlQueryer, f TicketFilter) ([]Ticket, error) {
	var (
		where []string
		args  []any
	)
	where, args = statusIn(where, args, f.Status)
	if f.Unresolved {
		where = append(where, "status <> ?")
		args = append(args, StatusResolved)
	}
	q := `SELECT ` + ticketColumns + ` FROM tickets` + sqlWhere(where) + ` ORDER BY id DESC LIMIT ?`
	args = append(args, sqlLimit(f.Limit))
	return queryAll(ctx, db, "tickets", q, args, scanTicket)
}

// statusIn adds a "status IN (...)" condition when statuses are given.
func statusIn(where []string, args []any, statuses []string) ([]string, []any) {
	if len(statuses) == 0 {
		return where, args
	}
	for _, st := range statuses {
		args = append(args, st)
	}
	return append(where, "status IN ("+sqlPlaceholders(len(statuses))+")"), args
}

// queryAll runs q and scans every row; errors name what was listed.
func queryAll[T any](ctx context.Context, db sqlQueryer, what, q string, args []any, scan func(rowScanner) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", what, err)
	}
	defer rows.Close()
	out := []T{} // a --json list prints [] when empty, never null
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("cannot list %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", what, err)
	}
	return out, nil
}

// SetStatus moves a ticket to status if its current status is one of from
// (empty from = any) and differs from status; it reports whether it moved,
// and audits the move (event "status"). A move the model does not allow
// (ticketMoves) is an ErrIllegalMove and changes nothing. Moving to
// resolved also sets ResolvedAt (prefer Resolve, which takes the time).
func (s *Store) SetStatus(ctx context.Context, id int64, from []string, status, actor, note string) (bool, error) {
	if !inSet(status, ticketStatuses) {
		return false, fmt.Errorf("cannot set status of ticket %d: unknown status %q", id, status)
	}
	var moved bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var old string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM tickets WHERE id = ?`, id).Scan(&old); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if old == status || (len(from) > 0 && !inSet(old, from)) {
			return nil
		}
		if err := checkMove(ticketMoves, "ticket", old, status); err != nil {
			return err
		}
		now := s.now()
		var resolvedAt any
		if status == StatusResolved {
			resolvedAt = micros(now)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tickets SET status = ?, resolved_at = ? WHERE id = ?`, status, resolvedAt, id); err != nil {
			return err
		}
		moved = true
		return insertAudit(ctx, tx, AuditEntry{At: now, TicketID: id, Actor: actor, Event: "status",
			Detail: auditDetail(map[string]any{"from": old, "to": status, "note": note})})
	})
	if err != nil {
		return false, fmt.Errorf("cannot set status of ticket %d: %w", id, err)
	}
	return moved, nil
}

// SetDiagnosis stores a ticket's diagnosis and audits it (event "diagnosis",
// with the diagnosis as detail).
func (s *Store) SetDiagnosis(ctx context.Context, id int64, diagnosis json.RawMessage, actor string) error {
	d, err := jsonColumn(diagnosis)
	if err != nil {
		return fmt.Errorf("cannot set diagnosis of ticket %d: %w", id, err)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tickets SET diagnosis = ? WHERE id = ?`, d, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNotFound
		}
		return insertAudit(ctx, tx, AuditEntry{At: s.now(), TicketID: id, Actor: actor, Event: "diagnosis", Detail: diagnosis})
	})
	if err != nil {
		return fmt.Errorf("cannot set diagnosis of ticket %d: %w", id, err)
	}
	return nil
}

// Resolve sets status resolved and ResolvedAt unless already resolved, and
// audits it (event "resolved"). In the same transaction the ticket's
// proposals still waiting to run (pending or approved) become skipped, so
// no reader ever sees a resolved ticket with an action that may still run.
func (s *Store) Resolve(ctx context.Context, id int64, actor, note string, now time.Time) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var old string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM tickets WHERE id = ?`, id).Scan(&old); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if old == StatusResolved {
			return nil
		}
		if err := checkMove(ticketMoves, "ticket", old, StatusResolved); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tickets SET status = ?, resolved_at = ? WHERE id = ?`,
			StatusResolved, micros(now), id); err != nil {
			return err
		}
		if err := insertAudit(ctx, tx, AuditEntry{At: now, TicketID: id, Actor: actor, Event: "resolved",
			Detail: auditDetail(map[string]any{"from": old, "note": note})}); err != nil {
			return err
		}
		waiting, err := listProposals(ctx, tx, ProposalFilter{TicketID: id, Status: []string{ProposalPending, ProposalApproved}})
		if err != nil {
			return err
		}
		for _, p := range waiting {
			if _, err := transition(ctx, tx, p.ID, p.Status, ProposalSkipped, actor, "the ticket resolved first", now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cannot resolve ticket %d: %w", id, err)
	}
	return nil
}

const proposalColumns = `id, ticket_id, action, params, reason, source, risk_level, requires_approval,
	status, created_at, updated_at, executed_at, result, actor`

func scanProposal(r rowScanner) (Proposal, error) {
	var (
		p                Proposal
		ticket, executed sql.NullInt64
		params           []byte
		created, updated int64
	)
	if err := r.Scan(&p.ID, &ticket, &p.Action, &params, &p.Reason, &p.Source, &p.RiskLevel, &p.RequiresApproval,
		&p.Status, &created, &updated, &executed, &p.Result, &p.Actor); err != nil {
		return Proposal{}, err
	}
	p.TicketID = ticket.Int64
	p.CreatedAt, p.UpdatedAt = fromMicros(created), fromMicros(updated)
	p.ExecutedAt = fromNullMicros(executed)
	// Numbers come back as float64, as from any JSON.
	if err := json.Unmarshal(params, &p.Params); err != nil {
		return Proposal{}, fmt.Errorf("proposal %d: params: %w", p.ID, err)
	}
	if p.Params == nil {
		p.Params = map[string]any{}
	}
	return p, nil
}

func getProposal(ctx context.Context, q sqlQueryer, id int64) (Proposal, error) {
	p, err := scanProposal(q.QueryRowContext(ctx, `SELECT `+proposalColumns+` FROM proposals WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Proposal{}, ErrNotFound
	}
	return p, err
}

// AddProposal stores a new proposal and audits it (event "proposed"). It
// sets ID, CreatedAt (p.CreatedAt when set, else now) and UpdatedAt; Status
// defaults to pending. TicketID 0 means no ticket (a manual `operator act`).
func (s *Store) AddProposal(ctx context.Context, p Proposal) (Proposal, error) {
	if p.Status == "" {
		p.Status = ProposalPending
	}
	if !inSet(p.Status, proposalStatuses) {
		return Proposal{}, fmt.Errorf("cannot add proposal %q: unknown status %q", p.Action, p.Status)
	}
	if p.Params == nil {
		p.Params = map[string]any{}
	}
	params, err := json.Marshal(p.Params)
	if err != nil {
		return Proposal{}, fmt.Errorf("cannot add proposal %q: params: %w", p.Action, err)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = s.now()
	}
	p.CreatedAt = fromMicros(micros(p.CreatedAt))
	p.UpdatedAt = p.CreatedAt
	if p.ExecutedAt == nil && inSet(p.Status, executedStatuses) {
		at := p.CreatedAt
		p.ExecutedAt = &at
	}
	var ticket any
	if p.TicketID != 0 {
		ticket = p.TicketID
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO proposals
			(ticket_id, action, params, reason, source, risk_level, requires_approval, status, created_at, updated_at, executed_at, result, actor)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			ticket, p.Action, string(params), p.Reason, p.Source, p.RiskLevel, p.RequiresApproval, p.Status,
			micros(p.CreatedAt), micros(p.UpdatedAt), nullMicros(p.ExecutedAt), p.Result, p.Actor)
		if err != nil {
			return err
		}
		if p.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		actor := p.Actor
		if actor == "" {
			actor = p.Source
		}
		return insertAudit(ctx, tx, AuditEntry{At: p.CreatedAt, TicketID: p.TicketID, ProposalID: p.ID, Actor: actor,
			Event: "proposed", Detail: auditDetail(map[string]any{"action": p.Action, "params": p.Params, "reason": p.Reason,
				"risk_level": p.RiskLevel, "requires_approval": p.RequiresApproval, "status": p.Status, "result": p.Result})})
	})
	if err != nil {
		return Proposal{}, fmt.Errorf("cannot add proposal %q: %w", p.Action, err)
	}
	if p.ExecutedAt != nil {
		at := fromMicros(micros(*p.ExecutedAt))
		p.ExecutedAt = &at
	}
	return p, nil
}

// Proposal returns one proposal; ErrNotFound when absent.
func (s *Store) Proposal(ctx context.Context, id int64) (Proposal, error) {
	p, err := getProposal(ctx, s.db, id)
	if err != nil {
		return Proposal{}, fmt.Errorf("proposal %d: %w", id, err)
	}
	return p, nil
}

// Proposals lists proposals, newest first.
func (s *Store) Proposals(ctx context.Context, f ProposalFilter) ([]Proposal, error) {
	return listProposals(ctx, s.db, f)
}

func listProposals(ctx context.Context, db sqlQueryer, f ProposalFilter) ([]Proposal, error) {
	var (
		where []string
		args  []any
	)
	if f.TicketID != 0 {
		where = append(where, "ticket_id = ?")
		args = append(args, f.TicketID)
	}
	where, args = statusIn(where, args, f.Status)
	q := `SELECT ` + proposalColumns + ` FROM proposals` + sqlWhere(where) + ` ORDER BY id DESC LIMIT ?`
	args = append(args, sqlLimit(f.Limit))
	return queryAll(ctx, db, "proposals", q, args, scanProposal)
}

// Transition moves a proposal from one status to another atomically (UPDATE
// ... WHERE id=? AND status=?), so two operators on one DB can never both
// execute it. A move the model does not allow (proposalMoves) is an
// ErrIllegalMove. A non-empty actor or result replaces the stored one; entering
// executing sets ExecutedAt. The move is audited (event "proposal_status").
// It reports whether the proposal moved; ErrNotFound when it does not exist.
func (s *Store) Transition(ctx context.Context, id int64, from, to, actor, result string, now time.Time) (bool, error) {
	if err := checkMove(proposalMoves, "proposal", from, to); err != nil {
		return false, fmt.Errorf("cannot move proposal %d: %w", id, err)
	}
	var moved bool
	err := s.tx(ctx, func(tx *sql.Tx) (err error) {
		moved, err = transition(ctx, tx, id, from, to, actor, result, now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("cannot move proposal %d from %s to %s: %w", id, from, to, err)
	}
	return moved, nil
}

// transition is Transition's move inside a transaction; the caller has
// checked the move.
func transition(ctx context.Context, tx *sql.Tx, id int64, from, to, actor, result string, now time.Time) (bool, error) {
	var executedAt any
	if to == ProposalExecuting {
		executedAt = micros(now)
	}
	var ticket sql.NullInt64
	err := tx.QueryRowContext(ctx, `UPDATE proposals SET status = ?, updated_at = ?,
		actor = CASE WHEN ? <> '' THEN ? ELSE actor END,
		result = CASE WHEN ? <> '' THEN ? ELSE result END,
		executed_at = COALESCE(?, executed_at)
		WHERE id = ? AND status = ? RETURNING ticket_id`,
		to, micros(now), actor, actor, result, result, executedAt, id, from).Scan(&ticket)
	if errors.Is(err, sql.ErrNoRows) {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM proposals WHERE id = ?`, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return false, ErrNotFound
		} else if err != nil {
			return false, err
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, insertAudit(ctx, tx, AuditEntry{At: now, TicketID: ticket.Int64, ProposalID: id, Actor: actor,
		Event: "proposal_status", Detail: auditDetail(map[string]any{"from": from, "to": to, "result": result})})
}

// Executed counts proposals that reached executing or beyond: for one
// ticket (when ticketID > 0, else forTicket is 0), and in total with
// ExecutedAt at or after since — for the per-ticket and per-hour limits.
func (s *Store) Executed(ctx context.Context, ticketID int64, since time.Time) (forTicket, sinceTotal int, err error) {
	args := []any{ticketID, micros(since)}
	for _, st := range executedStatuses {
		args = append(args, st)
	}
	err = s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(ticket_id = ?), 0), COALESCE(SUM(executed_at >= ?), 0)
		FROM proposals WHERE status IN (`+sqlPlaceholders(len(executedStatuses))+`)`, args...).Scan(&forTicket, &sinceTotal)
	if err != nil {
		return 0, 0, fmt.Errorf("cannot count executed actions: %w", err)
	}
	if ticketID <= 0 {
		forTicket = 0
	}
	return forTicket, sinceTotal, nil
}

// Audit appends one entry to the audit log; At defaults to now.
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	if err := insertAudit(ctx, s.db, e); err != nil {
		return fmt.Errorf("cannot append %q to the audit log: %w", e.Event, err)
	}
	return nil
}

func insertAudit(ctx context.Context, q sqlQueryer, e AuditEntry) error {
	d, err := jsonColumn(e.Detail)
	if err != nil {
		return fmt.Errorf("detail: %w", err)
	}
	_, err = q.ExecContext(ctx, `INSERT INTO audit (at, ticket_id, proposal_id, actor, event, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		micros(e.At), nullID(e.TicketID), nullID(e.ProposalID), e.Actor, e.Event, d)
	return err
}

// LLMTokens is the sum of the "tokens" of the "llm_response" audit entries
// at or after since: what the LLM diagnoser spent. Counting from the audit
// log means a restarted operator does not get a fresh budget.
func (s *Store) LLMTokens(ctx context.Context, since time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(json_extract(detail, '$.tokens')), 0) FROM audit
		WHERE event = 'llm_response' AND at >= ?`, micros(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("cannot sum the model's tokens: %w", err)
	}
	return n, nil
}

// AuditLog returns the last limit entries (limit <= 0: all) of one ticket's
// log (ticketID 0: the whole log), oldest first, in the order they were
// appended.
func (s *Store) AuditLog(ctx context.Context, ticketID int64, limit int) ([]AuditEntry, error) {
	var (
		where []string
		args  []any
	)
	if ticketID != 0 {
		where = append(where, "ticket_id = ?")
		args = append(args, ticketID)
	}
	args = append(args, sqlLimit(limit))
	rows, err := s.db.QueryContext(ctx, `SELECT id, at, ticket_id, proposal_id, actor, event, detail FROM
		(SELECT * FROM audit`+sqlWhere(where)+` ORDER BY id DESC LIMIT ?) ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot read the audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var (
			e                AuditEntry
			at               int64
			ticket, proposal sql.NullInt64
			d                []byte
		)
		if err := rows.Scan(&e.ID, &at, &ticket, &proposal, &e.Actor, &e.Event, &d); err != nil {
			return nil, fmt.Errorf("cannot read the audit log: %w", err)
		}
		e.At, e.TicketID, e.ProposalID, e.Detail = fromMicros(at), ticket.Int64, proposal.Int64, rawJSON(d)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the audit log: %w", err)
	}
	return out, nil
}

// Timers returns the persisted grace timers by key.
func (s *Store) Timers(ctx context.Context) (map[string]Timer, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, since, last_true, firing FROM timers`)
	if err != nil {
		return nil, fmt.Errorf("cannot load timers: %w", err)
	}
	defer rows.Close()
	out := map[string]Timer{}
	for rows.Next() {
		var (
			t               Timer
			since, lastTrue int64
		)
		if err := rows.Scan(&t.Key, &since, &lastTrue, &t.Firing); err != nil {
			return nil, fmt.Errorf("cannot load timers: %w", err)
		}
		t.Since, t.LastTrue = fromMicros(since), fromMicros(lastTrue)
		out[t.Key] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot load timers: %w", err)
	}
	return out, nil
}

// SaveTimers replaces the whole set of timers in one transaction. The map
// key is the timer's key (Timer.Key is ignored).
func (s *Store) SaveTimers(ctx context.Context, timers map[string]Timer) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return saveTimers(ctx, tx, timers) })
}

func saveTimers(ctx context.Context, tx *sql.Tx, timers map[string]Timer) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM timers`); err != nil {
		return fmt.Errorf("cannot save timers: %w", err)
	}
	st, err := tx.PrepareContext(ctx, `INSERT INTO timers (key, since, last_true, firing) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("cannot save timers: %w", err)
	}
	defer st.Close()
	for k, t := range timers {
		if _, err := st.ExecContext(ctx, k, micros(t.Since), micros(t.LastTrue), t.Firing); err != nil {
			return fmt.Errorf("cannot save timers: %w", err)
		}
	}
	return nil
}

// Mode returns the mode last set; ok is false when it was never set.
func (s *Store) Mode(ctx context.Context) (mode string, ok bool, err error) {
	return readMode(ctx, s.db)
}

func readMode(ctx context.Context, db sqlQueryer) (mode string, ok bool, err error) {
	err = db.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = 'mode'`).Scan(&mode)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("cannot read mode: %w", err)
	}
	return mode, true, nil
}

// SetMode stores the mode and audits the change (event "mode").
func (s *Store) SetMode(ctx context.Context, mode, actor string) error {
	if !validMode(mode) {
		return fmt.Errorf("cannot set mode: must be observe, approve or auto, got %q", mode)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var old string
		if err := tx.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = 'mode'`).Scan(&old); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ('mode', ?)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value`, mode); err != nil {
			return err
		}
		return insertAudit(ctx, tx, AuditEntry{At: s.now(), Actor: actor, Event: "mode",
			Detail: auditDetail(map[string]any{"from": old, "to": mode})})
	})
	if err != nil {
		return fmt.Errorf("cannot set mode %q: %w", mode, err)
	}
	return nil
}

// AcquireLease takes or renews the lease: it succeeds when the lease is
// free, expired, or already held by owner, and then sets its expiry to
// now+ttl. Otherwise it reports the holder. A change of holder is audited
// (event "lease"); renewals are not.
func (s *Store) AcquireLease(ctx context.Context, owner string, ttl time.Duration, now time.Time) (held bool, holder string, err error) {
	if owner == "" || ttl <= 0 {
		return false, "", fmt.Errorf("cannot acquire lease: need an owner and a positive ttl, got %q and %v", owner, ttl)
	}
	err = s.tx(ctx, func(tx *sql.Tx) (err error) {
		held, holder, err = acquireLease(ctx, tx, owner, ttl, now)
		return err
	})
	if err != nil {
		return false, "", fmt.Errorf("cannot acquire lease for %q: %w", owner, err)
	}
	return held, holder, nil
}

func acquireLease(ctx context.Context, tx *sql.Tx, owner string, ttl time.Duration, now time.Time) (held bool, holder string, err error) {
	var (
		cur     string
		expires int64
	)
	err = tx.QueryRowContext(ctx, `SELECT owner, expires FROM lease WHERE id = 1`).Scan(&cur, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		cur = ""
	case err != nil:
		return false, "", err
	case cur != owner && expires > micros(now):
		return false, cur, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO lease (id, owner, expires) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires`, owner, micros(now.Add(ttl))); err != nil {
		return false, "", err
	}
	if cur != owner {
		err = insertAudit(ctx, tx, AuditEntry{At: now, Actor: owner, Event: "lease",
			Detail: auditDetail(map[string]any{"acquired": true, "previous": cur})})
	}
	return err == nil, owner, err
}

// ReleaseLease frees the lease if owner holds it, and audits that.
func (s *Store) ReleaseLease(ctx context.Context, owner string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM lease WHERE id = 1 AND owner = ?`, owner)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		return insertAudit(ctx, tx, AuditEntry{At: s.now(), Actor: owner, Event: "lease",
			Detail: auditDetail(map[string]any{"released": true})})
	})
	if err != nil {
		return fmt.Errorf("cannot release lease for %q: %w", owner, err)
	}
	return nil
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func nullMicros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return micros(*t)
}

func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// jsonColumn turns a raw JSON value into a TEXT column value, NULL when
// empty, and refuses what is not JSON (it would break every later read).
func jsonColumn(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	if !json.Valid(raw) {
		return nil, errors.New("not valid JSON")
	}
	return string(raw), nil
}

func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}

// auditDetail encodes an audit detail the store builds itself.
func auditDetail(v map[string]any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("BUG: audit detail does not encode: %v", err))
	}
	return b
}

func inSet(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

func sqlPlaceholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

func sqlWhere(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// sqlLimit maps "no limit" (<= 0) to SQLite's LIMIT -1.
func sqlLimit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
