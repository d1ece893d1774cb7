package node

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
)

// A drain says who drained the node, why and, optionally, until when: an
// operator must tell a forgotten deploy drain from an engineer's planned
// maintenance before it undoes either.

// drainRequest is the optional JSON body of POST /api/v1/nodes/{id}/drain.
type drainRequest struct {
	By              string     `json:"by"`
	Reason          string     `json:"reason"`
	Until           *time.Time `json:"until"`            // RFC 3339
	DurationSeconds int64      `json:"duration_seconds"` // or until now + this
}

// drainRecord is a drain as stored in the shared drain hash.
type drainRecord struct {
	Since  time.Time  `json:"since"`
	By     string     `json:"by,omitempty"`
	Reason string     `json:"reason,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
}

const maxDrainText = 256

// parseDrain reads the drain request of ctx (an empty body is a drain by
// "unknown" with no reason and no end) as of now.
func parseDrain(ctx *fasthttp.RequestCtx, now time.Time) (drainRecord, *problemError) {
	var req drainRequest
	if len(ctx.PostBody()) > 0 {
		if p := decodeBody(ctx, &req); p != nil {
			return drainRecord{}, p
		}
	}
	switch {
	case len(req.By) > maxDrainText || len(req.Reason) > maxDrainText:
		return drainRecord{}, badRequest(fmt.Sprintf("by and reason are at most %d bytes", maxDrainText))
	case req.Until != nil && req.DurationSeconds != 0:
		return drainRecord{}, badRequest("give until or duration_seconds, not both")
	case req.DurationSeconds < 0 || req.DurationSeconds > 30*86400:
		return drainRecord{}, badRequest("duration_seconds must be between 1 and 2592000 (30 days)")
	}
	rec := drainRecord{By: req.By, Reason: req.Reason, Until: req.Until}
	if rec.By == "" {
		rec.By = "unknown"
	}
	if req.DurationSeconds > 0 {
		u := now.Add(time.Duration(req.DurationSeconds) * time.Second)
		rec.Until = &u
	}
	if rec.Until != nil {
		if !rec.Until.After(now) {
			return drainRecord{}, badRequest("until must be in the future")
		}
		u := rec.Until.UTC()
		rec.Until = &u
	}
	return rec, nil
}

// merge is the stored value after this drain: a node already draining
// keeps its original start, and takes the new who, why and until.
func (rec drainRecord) merge(raw string, now time.Time) string {
	rec.Since = now.UTC()
	var old drainRecord
	if raw != "" && json.Unmarshal([]byte(raw), &old) == nil && !old.Since.IsZero() {
		rec.Since = old.Since
	}
	enc, _ := json.Marshal(rec)
	return string(enc)
}

// setDrain fills the drain fields of info from its stored drain; storeNow
// is the store's clock in µs. The fields are always present (null or 0 when
// not draining), so an expression over them never names a missing field.
func (info *Member) setDrain(raw string, storeNow int64) {
	info.Draining = raw != ""
	if raw == "" {
		return
	}
	var rec drainRecord
	_ = json.Unmarshal([]byte(raw), &rec) // an old record: draining, details unknown
	if !rec.Since.IsZero() {
		since := rec.Since
		info.DrainedAt = &since
		info.DrainAgeMs = max(0, (storeNow-since.UnixMicro())/1000)
	}
	info.DrainBy, info.DrainReason, info.DrainUntil = rec.By, rec.Reason, rec.Until
	if rec.Until != nil {
		info.DrainOverdueMs = (storeNow - rec.Until.UnixMicro()) / 1000
	}
}
