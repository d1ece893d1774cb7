package operator

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The ticket and proposal model: what a ticket and a proposal are, their
// statuses, and every move between statuses the operator, a person (the
// CLI) or a test may make, listed once. The store refuses any other move,
// so a bug or a hand edit can never walk a ticket back from resolved or run
// a rejected proposal.

// Ticket statuses.
const (
	StatusOpen              = "open"
	StatusDiagnosing        = "diagnosing" // a model is on it, beside the loop
	StatusDiagnosed         = "diagnosed"
	StatusRemediating       = "remediating"
	StatusResolved          = "resolved"
	StatusHeld              = "held"
	StatusRemediationFailed = "remediation_failed"
)

var ticketStatuses = []string{StatusOpen, StatusDiagnosing, StatusDiagnosed, StatusRemediating, StatusResolved, StatusHeld, StatusRemediationFailed}

// Proposal statuses.
const (
	ProposalPending      = "pending" // waiting for approval
	ProposalApproved     = "approved"
	ProposalRejected     = "rejected"
	ProposalExecuting    = "executing"
	ProposalSucceeded    = "succeeded" // the HTTP call succeeded; verification follows
	ProposalFailed       = "failed"    // the call failed
	ProposalVerified     = "verified"  // the violation cleared
	ProposalVerifyFailed = "verification_failed"
	ProposalSkipped      = "skipped" // not executed: observe mode, limits reached, invalid
)

var proposalStatuses = []string{ProposalPending, ProposalApproved, ProposalRejected, ProposalExecuting,
	ProposalSucceeded, ProposalFailed, ProposalVerified, ProposalVerifyFailed, ProposalSkipped}

// executedStatuses are the proposal statuses at or beyond executing: what
// the safety limits count.
var executedStatuses = []string{ProposalExecuting, ProposalSucceeded, ProposalFailed, ProposalVerified, ProposalVerifyFailed}

// Ticket is one deduplicated problem: an invariant violated for an entity.
type Ticket struct {
	ID          int64           `json:"id"`
	Key         string          `json:"key"` // invariant:entity — the dedup key
	Invariant   string          `json:"invariant"`
	Entity      string          `json:"entity"`
	Severity    string          `json:"severity"`
	Status      string          `json:"status"`
	Message     string          `json:"message"`
	FirstSeen   time.Time       `json:"first_seen"`
	LastSeen    time.Time       `json:"last_seen"`
	Occurrences int64           `json:"occurrences"`
	ResolvedAt  *time.Time      `json:"resolved_at,omitempty"`
	Observation json.RawMessage `json:"observation,omitempty"` // snapshot at last update
	Diagnosis   json.RawMessage `json:"diagnosis,omitempty"`
}

// Violation is what the evaluator reports for one invariant and entity.
type Violation struct {
	Invariant, Entity, Severity, Message string
	Since                                time.Time       // when the condition first held (start of grace)
	Observation                          json.RawMessage // snapshot
}

// Key is the ticket dedup key: Invariant + ":" + Entity (Entity may be "").
func (v Violation) Key() string { return v.Invariant + ":" + v.Entity }

// TicketFilter selects tickets; zero values select everything.
type TicketFilter struct {
	Status     []string
	Unresolved bool
	Limit      int // <= 0: no limit
}

// Proposal is one action proposed for a ticket (or, with TicketID 0, by hand).
type Proposal struct {
	ID               int64          `json:"id"`
	TicketID         int64          `json:"ticket_id"`
	Action           string         `json:"action"`
	Params           map[string]any `json:"params"`
	Reason           string         `json:"reason"`
	Source           string         `json:"source"` // "playbook", "llm", "manual"
	RiskLevel        string         `json:"risk_level"`
	RequiresApproval bool           `json:"requires_approval"`
	Status           string         `json:"status"`
	CreatedAt        time.Time      `json:"created_at"`
	UpdatedAt        time.Time      `json:"updated_at"`
	ExecutedAt       *time.Time     `json:"executed_at,omitempty"`
	Result           string         `json:"result,omitempty"`
	Actor            string         `json:"actor,omitempty"` // who approved/rejected/executed
}

// ProposalFilter selects proposals; zero values select everything.
type ProposalFilter struct {
	TicketID int64
	Status   []string
	Limit    int // <= 0: no limit
}

// ticketMoves lists, for each ticket status, the statuses it may move to.
// Held and remediation_failed wait for a person; resolved is final (a new
// violation of the same invariant and entity opens a new ticket).
var ticketMoves = map[string][]string{
	StatusOpen:              {StatusDiagnosing, StatusDiagnosed, StatusRemediating, StatusHeld, StatusRemediationFailed, StatusResolved},
	StatusDiagnosing:        {StatusDiagnosed, StatusRemediating, StatusHeld, StatusRemediationFailed, StatusResolved},
	StatusDiagnosed:         {StatusRemediating, StatusHeld, StatusRemediationFailed, StatusResolved},
	StatusRemediating:       {StatusHeld, StatusRemediationFailed, StatusResolved},
	StatusHeld:              {StatusOpen, StatusDiagnosed, StatusRemediationFailed, StatusResolved},
	StatusRemediationFailed: {StatusHeld, StatusResolved},
	StatusResolved:          nil,
}

// proposalMoves lists, for each proposal status, the statuses it may move
// to. A proposal runs once: executing is entered only from pending (auto
// mode) or approved, and every outcome is final.
var proposalMoves = map[string][]string{
	ProposalPending:      {ProposalApproved, ProposalRejected, ProposalExecuting, ProposalSkipped},
	ProposalApproved:     {ProposalExecuting, ProposalSkipped},
	ProposalExecuting:    {ProposalSucceeded, ProposalFailed},
	ProposalSucceeded:    {ProposalVerified, ProposalVerifyFailed},
	ProposalRejected:     nil,
	ProposalFailed:       nil,
	ProposalVerified:     nil,
	ProposalVerifyFailed: nil,
	ProposalSkipped:      nil,
}

// ErrIllegalMove is returned (wrapped) for a status move the model does not
// allow.
var ErrIllegalMove = errors.New("illegal status move")

// checkMove reports whether moves allows from → to.
func checkMove(moves map[string][]string, what, from, to string) error {
	next, known := moves[from]
	switch {
	case !known:
		return fmt.Errorf("unknown %s status %q", what, from)
	case !slices.Contains(next, to):
		if _, ok := moves[to]; !ok {
			return fmt.Errorf("unknown %s status %q", what, to)
		}
		return fmt.Errorf("%w: a %s cannot move from %s to %s", ErrIllegalMove, what, from, to)
	}
	return nil
}
