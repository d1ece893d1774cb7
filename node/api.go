package node

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// handle routes a request. Paths are split on the raw (still escaped) path,
// so a key or pattern containing "/" must arrive as %2F and a stray "/" is
// reported instead of silently addressing something else.
func (n *Node) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.URI().PathOriginal()
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch string(path) { // the hot paths, without splitting
	case "/api/v1/check":
		if ctx.IsPost() || ctx.IsGet() || ctx.IsHead() {
			n.handleCheck(ctx)
			return
		}
		n.methodNotAllowed(ctx, "GET, POST")
		return
	case "/api/v1/check/batch":
		if !ctx.IsPost() {
			n.methodNotAllowed(ctx, "POST")
			return
		}
		n.handleBatch(ctx)
		return
	case "/json": // envoyproxy/ratelimit's HTTP form of ShouldRateLimit
		if !ctx.IsPost() {
			n.methodNotAllowed(ctx, "POST")
			return
		}
		n.handleEnvoyJSON(ctx)
		return
	case "/health":
		n.handleHealth(ctx)
		return
	case "/metrics":
		ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
		n.metrics.write(ctx)
		return
	}
	if !bytes.HasPrefix(path, []byte("/api/v1/")) {
		n.notFound(ctx)
		return
	}
	raw := strings.Split(string(path[len("/api/v1/"):]), "/")
	seg := make([]string, len(raw))
	for i, r := range raw {
		s, err := url.PathUnescape(r)
		if err != nil {
			n.problem(ctx, badRequest("bad escape in path segment "+strconvQuote(r)))
			return
		}
		seg[i] = s
	}
	method := string(ctx.Method())
	mutating := method == "POST" || method == "DELETE" || method == "PUT" || method == "PATCH"
	if (mutating || n.cfg.AdminReads) && !n.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="ratelimiter"`)
		detail := "this call changes the cluster: send Authorization: Bearer <admin token>"
		if !mutating {
			detail = "admin_reads is on: management reads need Authorization: Bearer <admin token>"
		}
		n.problem(ctx, &problemError{status: fasthttp.StatusUnauthorized, typ: "unauthorized", detail: detail})
		return
	}
	if mutating { // idempotency.go: an Idempotency-Key applies it once across the cluster
		n.idempotent(ctx, func() { n.route(ctx, method, seg) })
		return
	}
	n.route(ctx, method, seg)
}

func (n *Node) route(ctx *fasthttp.RequestCtx, method string, seg []string) {
	type route struct {
		methods string
		h       func()
	}
	one := func(name string) (string, bool) { // the single key-like segment after name
		if len(seg) == 2 && seg[0] == name && seg[1] != "" {
			return seg[1], true
		}
		return "", false
	}
	var r *route
	switch {
	case len(seg) == 1 && seg[0] == "nodes":
		r = &route{"GET", func() { n.handleNodes(ctx) }}
	case len(seg) == 2 && seg[0] == "nodes":
		r = &route{"GET", func() { n.handleNode(ctx, seg[1]) }}
	case len(seg) == 3 && seg[0] == "nodes" && seg[2] == "metrics":
		r = &route{"GET", func() { n.handleNodeMetrics(ctx, seg[1]) }}
	case len(seg) == 3 && seg[0] == "nodes" && seg[2] == "drain":
		r = &route{"POST, DELETE", func() { n.handleDrain(ctx, seg[1], method == "POST") }}
	case len(seg) == 2 && seg[0] == "cluster" && seg[1] == "state":
		r = &route{"GET", func() { n.handleClusterState(ctx) }}
	case len(seg) == 1 && seg[0] == "limits":
		r = &route{"GET, POST", func() {
			if method == "GET" {
				n.handleLimits(ctx)
			} else {
				n.handlePutLimit(ctx)
			}
		}}
	case len(seg) == 3 && seg[0] == "limits" && seg[2] == "rollback":
		r = &route{"POST", func() { n.handleRollback(ctx, seg[1]) }}
	case len(seg) == 1 && seg[0] == "blocks":
		r = &route{"GET", func() { n.handleBlocks(ctx) }}
	case len(seg) == 1 && seg[0] == "hot-keys":
		r = &route{"GET", func() { n.handleHotKeys(ctx) }}
	}
	if k, ok := one("limits"); ok {
		r = &route{"DELETE", func() { n.handleDeleteLimit(ctx, k) }}
	}
	if k, ok := one("counters"); ok {
		r = &route{"GET, DELETE", func() { n.handleCounter(ctx, k, method == "DELETE") }}
	}
	if k, ok := one("blocks"); ok {
		r = &route{"POST, DELETE", func() { n.handleBlock(ctx, k, method == "POST") }}
	}
	if r == nil {
		if len(seg) > 2 && (seg[0] == "counters" || seg[0] == "blocks" || seg[0] == "limits") {
			n.problem(ctx, badRequest("too many path segments: a key or pattern containing \"/\" must be URL-escaped as %2F"))
			return
		}
		n.notFound(ctx)
		return
	}
	for _, m := range strings.Split(r.methods, ", ") {
		if m == method || (method == "HEAD" && m == "GET") {
			r.h()
			return
		}
	}
	n.methodNotAllowed(ctx, r.methods)
}

func (n *Node) authorized(ctx *fasthttp.RequestCtx) bool {
	if n.cfg.AdminToken == "" {
		return true
	}
	got, ok := bytes.CutPrefix(ctx.Request.Header.Peek("Authorization"), []byte("Bearer "))
	return ok && subtle.ConstantTimeCompare(bytes.TrimSpace(got), []byte(n.cfg.AdminToken)) == 1
}

// problem writes an RFC 9457 problem document.
func (n *Node) problem(ctx *fasthttp.RequestCtx, p *problemError) {
	ctx.ResetBody()
	ctx.SetStatusCode(p.status)
	ctx.SetContentType("application/problem+json")
	body, _ := json.Marshal(map[string]any{
		"type":     "urn:ratelimiter:problem:" + p.typ,
		"title":    fasthttp.StatusMessage(p.status),
		"status":   p.status,
		"detail":   p.detail,
		"instance": string(ctx.URI().PathOriginal()),
	})
	ctx.SetBody(body)
}

func (n *Node) notFound(ctx *fasthttp.RequestCtx) {
	n.problem(ctx, &problemError{status: fasthttp.StatusNotFound, typ: "not-found", detail: "no such endpoint: " + string(ctx.Path())})
}

func (n *Node) methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	n.problem(ctx, &problemError{status: fasthttp.StatusMethodNotAllowed, typ: "method-not-allowed",
		detail: string(ctx.Method()) + " is not allowed here; use " + allow})
}

// handleServerError answers what fasthttp rejects before the handler runs,
// an oversized body above all.
func (n *Node) handleServerError(ctx *fasthttp.RequestCtx, err error) {
	n.metrics.badRequests.Inc()
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		n.problem(ctx, &problemError{status: fasthttp.StatusRequestEntityTooLarge, typ: "body-too-large",
			detail: "request body exceeds " + formatInt(int64(n.cfg.MaxBodyBytes)) + " bytes"})
		return
	}
	n.problem(ctx, badRequest("cannot parse request: "+err.Error()))
}

// storeProblem answers a management call whose store access failed.
func (n *Node) storeProblem(ctx *fasthttp.RequestCtx, err error) {
	var pe *problemError
	if errors.As(err, &pe) {
		n.problem(ctx, pe)
		return
	}
	n.problem(ctx, &problemError{status: fasthttp.StatusServiceUnavailable, typ: "store-unavailable",
		detail: "the shared store did not answer: " + err.Error()})
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic("BUG: cannot encode response: " + err.Error())
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// decodeBody decodes a JSON management body strictly: unknown fields are
// an error, so a typo never silently does nothing.
func decodeBody(ctx *fasthttp.RequestCtx, v any) *problemError {
	dec := json.NewDecoder(bytes.NewReader(ctx.PostBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON body: " + err.Error())
	}
	if dec.More() {
		return badRequest("malformed JSON body: trailing data after the object")
	}
	return nil
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
