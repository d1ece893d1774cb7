package operator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratelimiter/ratelimiter/config"
)

// WebhookConfig is [operator.webhook]: where ticket notifications go. The
// body is Alertmanager's webhook JSON (version 4), so a receiver written
// for Alertmanager (a chat bridge, a pager integration) takes it as is.
type WebhookConfig struct {
	URL string `toml:"url"` // "" sends nothing
	// TokenEnv names the environment variable with a bearer token for the
	// receiver, if it wants one.
	TokenEnv string          `toml:"token_env"`
	Timeout  config.Duration `toml:"timeout"`
	// MaxAttempts bounds the tries of one notification (network errors,
	// 5xx and 429 are retried with backoff; other 4xx are not).
	MaxAttempts int `toml:"max_attempts"`
	// QueueSize bounds the notifications waiting to be sent; when full, a
	// new one is dropped and counted, so a dead receiver never holds the
	// loop or grows memory.
	QueueSize int `toml:"queue_size"`
	// ExternalURL is the operator's status page, linked from each alert.
	ExternalURL string `toml:"external_url"`
}

// DefaultWebhookConfig is [operator.webhook]'s defaults (no URL: off).
func DefaultWebhookConfig() WebhookConfig {
	return WebhookConfig{Timeout: config.Duration{Duration: 5 * time.Second}, MaxAttempts: 5, QueueSize: 100}
}

func (w *WebhookConfig) validate(p *config.Problems) {
	if w.URL == "" {
		return
	}
	if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.Add("url", "%q is not an http(s) URL", w.URL)
	}
	if w.TokenEnv != "" && !envNameRE.MatchString(w.TokenEnv) {
		p.Add("token_env", "must be the name of an environment variable, not the token itself")
	}
	if w.Timeout.Duration <= 0 {
		p.Add("timeout", "must be positive")
	}
	if w.MaxAttempts < 1 {
		p.Add("max_attempts", "must be at least 1")
	}
	if w.QueueSize < 1 {
		p.Add("queue_size", "must be at least 1")
	}
}

// Ticket events that are notified.
const (
	EventOpened    = "opened"
	EventEscalated = "escalated" // remediation_failed
	EventResolved  = "resolved"
)

// amMessage is Alertmanager's webhook payload (version 4).
type amMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"` // firing, resolved
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []amAlert         `json:"alerts"`
}

type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// notifier posts ticket events to the webhook, one at a time, from a
// bounded queue, beside the loop.
type notifier struct {
	cfg     WebhookConfig
	subject string
	token   string
	client  *http.Client
	queue   chan amMessage
	log     *slog.Logger
	sent    *metrics.Counter
	failed  *metrics.Counter
	dropped *metrics.Counter
}

func newNotifier(cfg WebhookConfig, token, subject string, set *metrics.Set, log *slog.Logger) *notifier {
	if cfg.URL == "" {
		return nil
	}
	n := &notifier{cfg: cfg, subject: subject, client: &http.Client{Timeout: cfg.Timeout.Duration},
		queue: make(chan amMessage, cfg.QueueSize), log: log,
		sent:    set.NewCounter(`ratelimiter_operator_notifications_total{result="sent"}`),
		failed:  set.NewCounter(`ratelimiter_operator_notifications_total{result="failed"}`),
		dropped: set.NewCounter(`ratelimiter_operator_notifications_total{result="dropped"}`)}
	n.token = token
	return n
}

// notify queues the event of t; it never blocks.
func (n *notifier) notify(event string, t Ticket, detail string, now time.Time) {
	if n == nil {
		return
	}
	msg := n.message(event, t, detail, now)
	select {
	case n.queue <- msg:
	default:
		n.dropped.Inc()
		n.log.Warn("notification queue full: dropped", "ticket", t.ID, "event", event, "queue_size", n.cfg.QueueSize)
	}
}

func (n *notifier) message(event string, t Ticket, detail string, now time.Time) amMessage {
	labels := map[string]string{"alertname": t.Invariant, "subject": n.subject, "severity": t.Severity,
		"ticket": strconv.FormatInt(t.ID, 10), "event": event}
	if t.Entity != "" {
		labels["entity"] = t.Entity
	}
	ann := map[string]string{"summary": t.Message}
	if summary, cause := diagnosisSummary(t.Diagnosis); summary != "" {
		ann["diagnosis"], ann["root_cause"] = summary, cause
	}
	if detail != "" {
		ann["description"] = detail
	}
	status := "firing"
	a := amAlert{Status: status, Labels: labels, Annotations: ann, StartsAt: t.FirstSeen}
	if event == EventResolved {
		status, a.Status, a.EndsAt = "resolved", "resolved", now.UTC()
	}
	if n.cfg.ExternalURL != "" {
		a.GeneratorURL = n.cfg.ExternalURL + "/api/v1/tickets/" + strconv.FormatInt(t.ID, 10)
	}
	sum := sha256.Sum256([]byte(n.subject + "\x00" + t.Key))
	a.Fingerprint = hex.EncodeToString(sum[:8])
	group := map[string]string{"alertname": t.Invariant}
	return amMessage{Version: "4", GroupKey: fmt.Sprintf(`{}:{alertname=%q}`, t.Invariant), Status: status,
		Receiver: "ratelimiter-operator", GroupLabels: group, CommonLabels: labels, CommonAnnotations: ann,
		ExternalURL: n.cfg.ExternalURL, Alerts: []amAlert{a}}
}

func diagnosisSummary(raw json.RawMessage) (string, string) {
	var d struct {
		Summary   string `json:"summary"`
		RootCause string `json:"root_cause"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &d) != nil {
		return "", ""
	}
	return d.Summary, d.RootCause
}

// run sends queued notifications until ctx ends, then gives what is left
// a short grace to go out.
func (n *notifier) run(ctx context.Context) {
	if n == nil {
		return
	}
	for {
		select {
		case msg := <-n.queue:
			n.send(ctx, msg)
		case <-ctx.Done():
			flush, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			for {
				select {
				case msg := <-n.queue:
					n.send(flush, msg)
				default:
					return
				}
			}
		}
	}
}

// send posts one message, retrying with backoff.
func (n *notifier) send(ctx context.Context, msg amMessage) {
	body, _ := json.Marshal(msg)
	backoff := 250 * time.Millisecond
	var lastErr error
	for attempt := 1; attempt <= n.cfg.MaxAttempts; attempt++ {
		retry, err := n.post(ctx, body)
		if err == nil {
			n.sent.Inc()
			return
		}
		lastErr = err
		if !retry || attempt == n.cfg.MaxAttempts {
			break
		}
		select {
		case <-ctx.Done():
			n.failed.Inc()
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	n.failed.Inc()
	n.log.Warn("notification not delivered", "ticket", msg.CommonLabels["ticket"], "event", msg.CommonLabels["event"], "err", lastErr)
}

func (n *notifier) post(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ratelimiter-operator")
	if n.token != "" {
		req.Header.Set("Authorization", "Bearer "+n.token)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return false, fmt.Errorf("HTTP %d (not retried)", resp.StatusCode)
}
