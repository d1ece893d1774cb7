package chaos

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteScorecard prints one row per scenario and a line of totals.
func WriteScorecard(w io.Writer, results []Result, took time.Duration) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tDETECTED\tINVARIANT\tENTITY\tDIAGNOSIS\tACTION\tRECOVERED\tDETECT\tRECOVER\tRESULT")
	var passed, detected, inv, ent, diag, act, rec, faults, skipped int
	for _, r := range results {
		if r.Skipped != "" {
			skipped++
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\tSKIPPED\n", r.Scenario)
			continue
		}
		if r.Passed {
			passed++
		}
		if r.Recovered {
			rec++
		}
		if r.control {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\t-\t-\t%s\n", r.Scenario, alarm(r.Detected), yes(r.Recovered), result(r))
			continue
		}
		faults++
		for _, c := range []struct {
			ok bool
			n  *int
		}{{r.Detected, &detected}, {r.RightInvariant, &inv}, {r.RightEntity, &ent}, {r.RightDiagnosis, &diag}, {r.RightAction, &act}} {
			if c.ok {
				*c.n++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, yes(r.Detected), yes(r.RightInvariant),
			yes(r.RightEntity), yes(r.RightDiagnosis), yes(r.RightAction), yes(r.Recovered),
			secs(r.Detected, r.DetectSeconds), secs(r.Recovered && r.RecoverSeconds > 0, r.RecoverSeconds), result(r))
	}
	tw.Flush()
	// Why each failure failed: the deadline it missed, or the error.
	for _, r := range results {
		if r.Passed || r.Skipped != "" {
			continue
		}
		for _, m := range r.Missed {
			fmt.Fprintf(w, "%s: missed %s\n", r.Scenario, m)
		}
		if r.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", r.Scenario, r.Error)
		}
	}
	ran := len(results) - skipped
	fmt.Fprintf(w, "TOTAL %d/%d passed", passed, ran)
	if skipped > 0 {
		fmt.Fprintf(w, " (%d skipped)", skipped)
	}
	fmt.Fprintf(w, "; of %d faults: detected %d, right invariant %d, entity %d, diagnosis %d, action %d; recovered %d/%d; %s\n",
		faults, detected, inv, ent, diag, act, rec, ran, took.Round(time.Second))
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// alarm is the control's DETECTED column: a detection there is a false
// alarm.
func alarm(b bool) string {
	if b {
		return "FALSE ALARM"
	}
	return "none (ok)"
}

func secs(ok bool, s float64) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1fs", s)
}

func result(r Result) string {
	if r.Passed {
		return "PASS"
	}
	return "FAIL"
}
