package operator

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AddSLOTime adds seconds in (good) and out of (bad) target to slo's
// minute at at, and forgets that SLO's minutes older than keep.
func (s *Store) AddSLOTime(ctx context.Context, slo string, at time.Time, good, bad float64, keep time.Duration) error {
	minute := at.Unix() / 60
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO slo_minutes (slo, minute, good, bad) VALUES (?, ?, ?, ?)
			ON CONFLICT (slo, minute) DO UPDATE SET good = good + excluded.good, bad = bad + excluded.bad`,
			slo, minute, good, bad); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM slo_minutes WHERE slo = ? AND minute < ?`, slo, minute-int64(keep/time.Minute))
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot record SLO %s: %w", slo, err)
	}
	return nil
}

// SLOTime sums slo's good and bad seconds from the minute of since on.
func (s *Store) SLOTime(ctx context.Context, slo string, since time.Time) (good, bad float64, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(good), 0), COALESCE(SUM(bad), 0) FROM slo_minutes WHERE slo = ? AND minute >= ?`,
		slo, since.Unix()/60).Scan(&good, &bad)
	if err != nil {
		return 0, 0, fmt.Errorf("cannot read SLO %s: %w", slo, err)
	}
	return good, bad, nil
}
