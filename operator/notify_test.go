package operator

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// receiver is a real HTTP webhook receiver: it keeps every body, and
// answers the first fail requests with 503.
type receiver struct {
	mu    sync.Mutex
	posts []amMessage
	tries int
	fail  int
	hold  chan struct{} // when set, a request waits for it
	seen  chan struct{}
}

func startReceiver(t *testing.T, fail int) (*receiver, *httptest.Server) {
	r := &receiver{fail: fail, seen: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.seen <- struct{}{}
		if r.hold != nil {
			<-r.hold
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.tries++
		if req.Header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type %q", req.Header.Get("Content-Type"))
		}
		if r.tries <= r.fail {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var m amMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		r.posts = append(r.posts, m)
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) got() []amMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]amMessage(nil), r.posts...)
}

// TestWebhookNotifiesTicketLife: a ticket's opening, its escalation
// (remediation_failed) and its resolution reach a real receiver in
// Alertmanager's webhook shape, the first despite a 503.
func TestWebhookNotifiesTicketLife(t *testing.T) {
	t.Parallel()
	rcv, srv := startReceiver(t, 1)
	q := startQueue(t, map[string]bool{"w1": true})
	q.set(func(q *queueService) { q.keepStuck = true }) // the restart does not help
	cfg, subj := queueSubject(t)
	cfg.Interval.Duration = 50 * time.Millisecond
	cfg.VerifyWithin.Duration = 300 * time.Millisecond
	cfg.MaxActionsPerTicket = 1
	cfg.Webhook = DefaultWebhookConfig()
	cfg.Webhook.URL, cfg.Webhook.ExternalURL = srv.URL+"/hook", "http://operator.example:8090"
	e := newOp(t, cfg, subj, []string{q.URL}, time.Now)
	err := runUntil(t, e.op, "opened, escalated and resolved notified", func() bool {
		got := rcv.got()
		if len(got) == 2 {
			q.set(func(q *queueService) { q.stuck["w1"] = false }) // fixed by hand
		}
		return len(got) >= 3
	})
	if err != nil {
		t.Fatal(err)
	}
	got := rcv.got()
	events := []string{got[0].CommonLabels["event"], got[1].CommonLabels["event"], got[2].CommonLabels["event"]}
	if events[0] != EventOpened || events[1] != EventEscalated || events[2] != EventResolved {
		t.Fatalf("events %v; want opened, escalated, resolved", events)
	}
	for i, m := range got[:3] {
		a := m.Alerts[0]
		wantStatus := "firing"
		if i == 2 {
			wantStatus = "resolved"
		}
		if m.Version != "4" || m.Status != wantStatus || a.Status != wantStatus || m.GroupKey == "" || m.Receiver == "" ||
			len(m.Alerts) != 1 || a.Labels["alertname"] != "worker_stuck" || a.Labels["entity"] != "w1" || a.Labels["severity"] != "warning" ||
			a.StartsAt.IsZero() || a.Fingerprint != got[0].Alerts[0].Fingerprint || a.GeneratorURL == "" {
			t.Errorf("message %d: %+v; want Alertmanager's shape, %s, worker_stuck w1, one fingerprint", i, m, wantStatus)
		}
		if (i == 2) == a.EndsAt.IsZero() {
			t.Errorf("message %d endsAt %v; want set only when resolved", i, a.EndsAt)
		}
	}
	if got[0].Alerts[0].Annotations["diagnosis"] != "Worker w1 stopped taking jobs" {
		t.Errorf("opened annotations %v; want the diagnosis", got[0].Alerts[0].Annotations)
	}
	if d := got[1].Alerts[0].Annotations["description"]; d == "" {
		t.Errorf("escalation annotations %v; want why", got[1].Alerts[0].Annotations)
	}
	rcv.mu.Lock()
	tries := rcv.tries
	rcv.mu.Unlock()
	if tries != len(got)+1 {
		t.Errorf("receiver saw %d tries for %d messages; want one retry after the 503", tries, len(got))
	}
}

// TestWebhookQueueBounded: with the receiver stuck, notifications beyond
// queue_size are dropped and counted; none blocks the caller.
func TestWebhookQueueBounded(t *testing.T) {
	rcv, srv := startReceiver(t, 0)
	rcv.hold = make(chan struct{})
	cfg := WebhookConfig{URL: srv.URL, Timeout: config.Duration{Duration: 5 * time.Second}, MaxAttempts: 1, QueueSize: 2}
	set := metrics.NewSet()
	n := newNotifier(cfg, "", "s", set, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.run(ctx) }()
	tk := Ticket{ID: 1, Key: "x:y", Invariant: "x", Entity: "y", Severity: "warning", FirstSeen: time.Now()}
	n.notify(EventOpened, tk, "", time.Now())
	<-rcv.seen // the first is being sent, and held
	start := time.Now()
	for range 4 {
		n.notify(EventOpened, tk, "", time.Now())
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("notify blocked for %v with the receiver stuck", d)
	}
	if got := n.dropped.Get(); got != 2 {
		t.Errorf("dropped %d; want 2 (queue_size 2, 4 queued behind one in flight)", got)
	}
	close(rcv.hold)
	testkit.WaitFor(t, 5*time.Second, "the queued notifications sent", func() bool { return n.sent.Get() == 3 })
	cancel()
	<-done
}
