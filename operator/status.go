package operator

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratelimiter/ratelimiter/internal/promtext"
)

// Status is what the status page and GET /api/v1/status show.
type Status struct {
	Subject      string         `json:"subject"`
	Mode         string         `json:"mode"`
	Diagnoser    string         `json:"diagnoser"`
	ObservedAt   *time.Time     `json:"observed_at,omitempty"`
	ObserveError string         `json:"observe_error,omitempty"`
	SLOs         []SLOStatus    `json:"slos"`
	Tables       []Table        `json:"tables"` // observations that are lists of objects (nodes, hot keys…)
	Tickets      []Ticket       `json:"tickets"`
	Actions      []Proposal     `json:"actions"`
	Counts       map[string]int `json:"ticket_counts"`
}

// Table is one list-of-objects observation, flattened for display.
type Table struct {
	Name    string     `json:"name"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
}

const recentActions = 20

// Status gathers the page's content: the last observation and SLOs, the
// unresolved tickets and the most recent actions.
func (o *Operator) Status(ctx context.Context) (Status, error) {
	// Lists are [] when empty, never null, for whoever reads the JSON.
	st := Status{Subject: o.cfg.Subject, Mode: o.mode(ctx), Counts: map[string]int{}, SLOs: []SLOStatus{}, Tables: []Table{}}
	st.Diagnoser, _ = o.Diagnoser()
	obs, at, obsErr := o.lastObservation()
	if !at.IsZero() {
		st.ObservedAt = &at
	}
	if obsErr != nil {
		st.ObserveError = obsErr.Error()
	}
	if obs != nil {
		st.SLOs = o.SLOs(obs)
		o.addBudgets(ctx, st.SLOs)
		st.Tables = tables(obs)
	}
	var err error
	if st.Tickets, err = o.store.Tickets(ctx, TicketFilter{Unresolved: true}); err != nil {
		return st, err
	}
	if st.Actions, err = o.store.Proposals(ctx, ProposalFilter{Limit: recentActions}); err != nil {
		return st, err
	}
	if st.Counts, err = o.store.CountTickets(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// tables picks the observations that are lists of JSON objects. Columns
// are the union of keys, identifying ones first; nested values are shown
// as JSON.
func tables(obs map[string]any) []Table {
	out := []Table{}
	for name, v := range obs {
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			continue
		}
		keys := map[string]bool{}
		objects := true
		for _, el := range list {
			m, ok := el.(map[string]any)
			if !ok {
				objects = false
				break
			}
			for k := range m {
				keys[k] = true
			}
		}
		if !objects {
			continue
		}
		t := Table{Name: name}
		for k := range keys {
			t.Columns = append(t.Columns, k)
		}
		sort.Slice(t.Columns, func(i, j int) bool {
			ri, rj := columnRank(t.Columns[i]), columnRank(t.Columns[j])
			if ri != rj {
				return ri < rj
			}
			return t.Columns[i] < t.Columns[j]
		})
		for _, el := range list {
			m := el.(map[string]any)
			row := make([]string, len(t.Columns))
			for i, c := range t.Columns {
				row[i] = cell(m[c])
			}
			t.Rows = append(t.Rows, row)
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// columnRank puts the columns that name an entity first.
func columnRank(c string) int {
	switch c {
	case "id", "node_id", "key", "name":
		return 0
	case "state", "status":
		return 1
	}
	return 2
}

func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

//go:embed status.html
var statusHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago": func(t time.Time) string { return time.Since(t).Round(time.Second).String() + " ago" },
	"summary": func(raw json.RawMessage) string {
		var d struct {
			Summary string `json:"summary"`
		}
		json.Unmarshal(raw, &d)
		return d.Summary
	},
	"params": func(p map[string]any) string { b, _ := json.Marshal(p); return string(b) },
	"num":    func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) },
}).Parse(statusHTML))

// StatusHandler serves the read-only status page (GET /), the same as
// JSON (GET /api/v1/status), one ticket (GET /api/v1/tickets/{id}, with
// its proposals and audit log) and the operator's metrics (GET /metrics).
// Nothing it serves changes anything.
func (o *Operator) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		st, err := o.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, st); err != nil {
			o.log.Warn("status page", "err", err)
		}
	})
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := o.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeStatusJSON(w, st)
	})
	mux.HandleFunc("GET /api/v1/tickets/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "want a numeric ticket id", http.StatusBadRequest)
			return
		}
		t, err := o.store.Ticket(r.Context(), id)
		if errors.Is(err, ErrNotFound) {
			http.Error(w, fmt.Sprintf("no ticket %d", id), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		props, _ := o.store.Proposals(r.Context(), ProposalFilter{TicketID: id})
		audit, _ := o.store.AuditLog(r.Context(), id, 100)
		writeStatusJSON(w, map[string]any{"ticket": t, "proposals": props, "audit": audit})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		o.writeMetrics(r.Context(), w)
	})
	return mux
}

func writeStatusJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// CountTickets counts tickets by status.
func (s *Store) CountTickets(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT status, COUNT(*) FROM tickets GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("cannot count tickets: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("cannot count tickets: %w", err)
		}
		counts[st] = n
	}
	return counts, rows.Err()
}

// opMetrics are the operator's own metrics: what the loop costs and what
// its actions did. Ticket counts are read from the store at scrape time,
// so they are right even for tickets another process changed.
type opMetrics struct {
	set  *metrics.Set
	loop *metrics.PrometheusHistogram
}

func newOpMetrics() *opMetrics {
	s := metrics.NewSet()
	return &opMetrics{set: s, loop: s.NewPrometheusHistogram(`ratelimiter_operator_loop_duration_seconds`)}
}

// action counts one executed action by its outcome.
func (m *opMetrics) action(result string) {
	m.set.GetOrCreateCounter(`ratelimiter_operator_actions_total{result="` + result + `"}`).Inc()
}

// writeMetrics writes the metrics with their HELP and TYPE (metricsMeta).
func (o *Operator) writeMetrics(ctx context.Context, w io.Writer) {
	var b bytes.Buffer
	o.writeMetricsText(ctx, &b)
	_ = promtext.Annotate(w, b.Bytes(), metricsMeta) // a client gone mid-scrape is no error of ours
}

func (o *Operator) writeMetricsText(ctx context.Context, w io.Writer) {
	o.metrics.set.WritePrometheus(w)
	counts, err := o.store.CountTickets(ctx)
	if err != nil {
		o.log.Warn("cannot count tickets for /metrics", "err", err)
		return
	}
	fmt.Fprintln(w, "# TYPE ratelimiter_operator_tickets gauge")
	for _, st := range ticketStatuses {
		fmt.Fprintf(w, "ratelimiter_operator_tickets{state=%q} %d\n", st, counts[st])
	}
	o.writeSLOMetrics(ctx, w)
	mode := o.mode(ctx)
	fmt.Fprintln(w, "# TYPE ratelimiter_operator_mode gauge")
	for _, m := range []string{ModeObserve, ModeApprove, ModeAuto} {
		v := 0
		if m == mode {
			v = 1
		}
		fmt.Fprintf(w, "ratelimiter_operator_mode{mode=%q} %d\n", m, v)
	}
}
