package operator

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// TickWrites is what a loop writes every pass whatever it observed. Each
// part is optional.
type TickWrites struct {
	// LeaseOwner renews the lease for LeaseTTL (Run's loop), or takes
	// nothing when "".
	LeaseOwner string
	LeaseTTL   time.Duration
	// SLOTimes are added as AddSLOTimes does, keeping SLOKeep, and the bad
	// seconds since each of SLOSince are read back as SLOBad does.
	SLOTimes []SLOTime
	SLOKeep  time.Duration
	SLOSince []time.Time
	// Timers replace the stored ones when not nil (the caller passes them
	// only when they changed).
	Timers map[string]Timer
}

// TickState is what a loop reads every pass: enough for a quiet pass to
// decide that nothing is to be done.
type TickState struct {
	LeaseHeld   bool             // false: nothing was written or read
	LeaseHolder string           // the lease's holder when not LeaseHeld
	Mode        string           // "" when never set
	Tickets     []Ticket         // unresolved
	Unresolved  map[int64]Ticket // Tickets by id
	Proposals   []Proposal       // pending, approved and succeeded, newest first
	SLOBad      map[string][]float64
}

// Tick writes w and reads the loop's state in one transaction, so a quiet
// pass of the loop costs one SQLite transaction. When w asks for the lease
// and another operator holds it, Tick writes and reads nothing else.
func (s *Store) Tick(ctx context.Context, now time.Time, w TickWrites) (TickState, error) {
	var st TickState
	err := s.tx(ctx, func(tx *sql.Tx) (err error) {
		st.LeaseHeld = true
		if w.LeaseOwner != "" {
			if st.LeaseHeld, st.LeaseHolder, err = acquireLease(ctx, tx, w.LeaseOwner, w.LeaseTTL, now); err != nil || !st.LeaseHeld {
				return err
			}
		}
		if len(w.SLOTimes) > 0 {
			if err := addSLOTimes(ctx, tx, now, w.SLOTimes, w.SLOKeep); err != nil {
				return err
			}
		}
		if len(w.SLOSince) > 0 {
			if st.SLOBad, err = sloBad(ctx, tx, w.SLOSince); err != nil {
				return err
			}
		}
		if w.Timers != nil {
			if err := saveTimers(ctx, tx, w.Timers); err != nil {
				return err
			}
		}
		if st.Mode, _, err = readMode(ctx, tx); err != nil {
			return err
		}
		if st.Tickets, err = listTickets(ctx, tx, TicketFilter{Unresolved: true}); err != nil {
			return err
		}
		st.Unresolved = make(map[int64]Ticket, len(st.Tickets))
		for _, t := range st.Tickets {
			st.Unresolved[t.ID] = t
		}
		st.Proposals, err = listProposals(ctx, tx, ProposalFilter{Status: []string{ProposalPending, ProposalApproved, ProposalSucceeded}})
		return err
	})
	if err != nil {
		return TickState{}, fmt.Errorf("cannot run the loop's transaction: %w", err)
	}
	return st, nil
}
