package node

import (
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

var (
	envoyJSONIn  = protojson.UnmarshalOptions{}
	envoyJSONOut = protojson.MarshalOptions{}
)

// handleEnvoyJSON serves POST /json as envoyproxy/ratelimit does: a
// RateLimitRequest in proto3 JSON, the RateLimitResponse back, 200 when
// the overall code is OK and 429 when it is OVER_LIMIT.
func (n *Node) handleEnvoyJSON(ctx *fasthttp.RequestCtx) {
	var req rls.RateLimitRequest
	if err := envoyJSONIn.Unmarshal(ctx.PostBody(), &req); err != nil {
		n.metrics.badRequests.Inc()
		n.problem(ctx, badRequest("malformed RateLimitRequest JSON: "+err.Error()))
		return
	}
	resp, err := n.shouldRateLimit(&req)
	if err != nil {
		st, _ := status.FromError(err)
		p := &problemError{status: fasthttp.StatusInternalServerError, typ: "internal", detail: st.Message()}
		switch st.Code() {
		case codes.InvalidArgument:
			p.status, p.typ = fasthttp.StatusBadRequest, "invalid-request"
		case codes.Unavailable:
			p.status, p.typ = fasthttp.StatusServiceUnavailable, "temporary-reduced-capacity"
		}
		n.problem(ctx, p)
		return
	}
	body, err := envoyJSONOut.Marshal(resp)
	if err != nil {
		panic("BUG: cannot encode RateLimitResponse: " + err.Error())
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	if resp.OverallCode == rls.RateLimitResponse_OVER_LIMIT {
		ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
