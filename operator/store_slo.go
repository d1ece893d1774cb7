package operator

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SLOTime is one SLO's seconds in (Good) and out of (Bad) target.
type SLOTime struct {
	SLO       string
	Good, Bad float64
}

// AddSLOTimes adds each SLO's seconds to its minute at at, in one
// transaction, and forgets the minutes older than keep.
func (s *Store) AddSLOTimes(ctx context.Context, at time.Time, times []SLOTime, keep time.Duration) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return addSLOTimes(ctx, tx, at, times, keep) })
}

func addSLOTimes(ctx context.Context, tx *sql.Tx, at time.Time, times []SLOTime, keep time.Duration) error {
	minute := at.Unix() / 60
	for _, t := range times {
		if _, err := tx.ExecContext(ctx, `INSERT INTO slo_minutes (slo, minute, good, bad) VALUES (?, ?, ?, ?)
			ON CONFLICT (slo, minute) DO UPDATE SET good = good + excluded.good, bad = bad + excluded.bad`,
			t.SLO, minute, t.Good, t.Bad); err != nil {
			return fmt.Errorf("cannot record SLO time: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM slo_minutes WHERE minute < ?`, minute-int64(keep/time.Minute)); err != nil {
		return fmt.Errorf("cannot record SLO time: %w", err)
	}
	return nil
}

// SLOBad sums each SLO's bad seconds from the minute of each of since on,
// in one query: out[slo][i] is the sum since since[i].
func (s *Store) SLOBad(ctx context.Context, since []time.Time) (map[string][]float64, error) {
	return sloBad(ctx, s.db, since)
}

func sloBad(ctx context.Context, db sqlQueryer, since []time.Time) (map[string][]float64, error) {
	q := `SELECT slo`
	args := make([]any, 0, len(since))
	for _, t := range since {
		q += `, COALESCE(SUM(CASE WHEN minute >= ? THEN bad END), 0)`
		args = append(args, t.Unix()/60)
	}
	q += ` FROM slo_minutes GROUP BY slo`
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot read SLO time: %w", err)
	}
	defer rows.Close()
	out := map[string][]float64{}
	for rows.Next() {
		var name string
		vals := make([]float64, len(since))
		dst := []any{&name}
		for i := range vals {
			dst = append(dst, &vals[i])
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, fmt.Errorf("cannot read SLO time: %w", err)
		}
		out[name] = vals
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read SLO time: %w", err)
	}
	return out, nil
}
