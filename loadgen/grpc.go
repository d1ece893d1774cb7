package loadgen

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// grpcEndpoint asks Envoy's Rate Limit Service API, as Envoy's
// ratelimit filter does: one ShouldRateLimit per request, over one HTTP/2
// connection, with the request's descriptors and hits_addend = the cost.
// OK is an admission, OVER_LIMIT a denial; UNKNOWN and gRPC errors are
// errors.
type grpcEndpoint struct {
	conn        *grpc.ClientConn
	client      rls.RateLimitServiceClient
	domain      string
	descriptors [][]entry
	cost        int64
	costText    string
	timeout     time.Duration
}

// entry is one key=value of a descriptor; the value is a template.
type entry struct {
	key   string
	value template
}

// parseDescriptor reads "key=value,key=value": the entries of one
// descriptor, in order.
func parseDescriptor(s string) ([]entry, error) {
	var out []entry
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%q is not key=value[,key=value…]: every entry needs a key and a value", s)
		}
		out = append(out, entry{key: k, value: parseTemplate(v)})
	}
	return out, nil
}

// grpcAddr is the host:port of a grpc:// target.
func grpcAddr(target string) (string, error) {
	addr, ok := strings.CutPrefix(target, "grpc://")
	if !ok || addr == "" || strings.ContainsAny(addr, "/?#@") {
		return "", fmt.Errorf("%q is not a grpc://host:port target", target)
	}
	return addr, nil
}

func newGRPCEndpoint(cfg Config, target string) (*grpcEndpoint, error) {
	addr, err := grpcAddr(target)
	if err != nil {
		return nil, err
	}
	e := &grpcEndpoint{domain: cfg.Domain, cost: cfg.Cost, costText: strconv.FormatInt(cfg.Cost, 10), timeout: cfg.Timeout}
	for _, d := range cfg.Descriptors {
		entries, err := parseDescriptor(d)
		if err != nil {
			return nil, err
		}
		e.descriptors = append(e.descriptors, entries)
	}
	// Plaintext HTTP/2, as Envoy's rate_limit_service cluster usually is
	// inside a mesh; the connection is made at the first request.
	if e.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, fmt.Errorf("target %q: %w", target, err)
	}
	e.client = rls.NewRateLimitServiceClient(e.conn)
	return e, nil
}

func (e *grpcEndpoint) do(o *outcome, start time.Time) {
	req := &rls.RateLimitRequest{Domain: e.domain, HitsAddend: uint32(e.cost)}
	for _, d := range e.descriptors {
		rd := &commonrl.RateLimitDescriptor{}
		for _, en := range d {
			rd.Entries = append(rd.Entries, &commonrl.RateLimitDescriptor_Entry{Key: en.key,
				Value: string(en.value.render(nil, o.key, e.costText, nil))})
		}
		req.Descriptors = append(req.Descriptors, rd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	o.sent = time.Since(start)
	resp, err := e.client.ShouldRateLimit(ctx, req)
	o.done = time.Since(start)
	if err != nil {
		o.errKind = grpcErrorKind(err)
		return
	}
	switch resp.GetOverallCode() {
	case rls.RateLimitResponse_OK:
		o.allowed = true
	case rls.RateLimitResponse_OVER_LIMIT:
	default:
		o.errKind = "code_" + strings.ToLower(resp.GetOverallCode().String())
	}
}

// grpcErrorKind names a failed call as errorKind names HTTP's failures,
// where they mean the same, else by its gRPC status code.
func grpcErrorKind(err error) string {
	switch c := status.Code(err); c {
	case codes.DeadlineExceeded:
		return "timeout"
	case codes.Unavailable:
		return "connection"
	default:
		return "grpc_" + strings.ToLower(c.String())
	}
}

func (e *grpcEndpoint) close() { _ = e.conn.Close() }
