package node

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"

	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// rlsServer is Envoy's Rate Limit Service on top of the node.
type rlsServer struct {
	rls.UnimplementedRateLimitServiceServer
	n *Node
}

func (s rlsServer) ShouldRateLimit(_ context.Context, req *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	return s.n.shouldRateLimit(req)
}

func (n *Node) newGRPCServer() {
	e := &n.envoy
	ka := keepalive.ServerParameters{}
	if age := n.cfg.GRPCMaxConnectionAge.Duration; age > 0 {
		ka.MaxConnectionAge = age
		ka.MaxConnectionAgeGrace = n.cfg.GRPCMaxConnectionAgeGrace.Duration
		if ka.MaxConnectionAgeGrace == 0 {
			ka.MaxConnectionAgeGrace = 10 * time.Second // gRPC's default is forever
		}
	}
	e.grpc = grpc.NewServer(
		grpc.KeepaliveParams(ka),
		grpc.ChainUnaryInterceptor(n.recoverGRPC),
		grpc.MaxRecvMsgSize(max(n.cfg.MaxBodyBytes, 64<<10)),
		// Reused goroutines for the streams: less scheduler work per call
		// than a new goroutine each, and their stacks stay grown, where a
		// new goroutine grows (copies) its stack on every call. gRPC
		// starts one anyway when all are busy, so a slow store never
		// queues calls behind each other; with 8 workers under 16 streams
		// that stack growth alone was 4 % of the node's CPU, and 64
		// workers cut the CPU per decision by 10–25 % at 64 streams (paired
		// runs of scripts/bench-grpc.sh's load).
		grpc.NumStreamWorkers(uint32(max(64, 4*runtime.GOMAXPROCS(0)))),
		// Fixed flow-control windows turn off the BDP estimator, which
		// otherwise pings the peer every round trip while data arrives:
		// Rate Limit Service messages are a few hundred bytes, so a
		// window sized to the bandwidth-delay product buys nothing.
		grpc.StaticStreamWindowSize(1<<20),
		grpc.StaticConnWindowSize(1<<24),
	)
	rls.RegisterRateLimitServiceServer(e.grpc, rlsServer{n: n})
	e.health = grpchealth.NewServer()
	healthpb.RegisterHealthServer(e.grpc, e.health)
	reflection.Register(e.grpc)
}

// recoverGRPC is the last line against a panic in a handler: the caller
// gets Internal and the node keeps serving.
func (n *Node) recoverGRPC(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("panic in gRPC handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return h(ctx, req)
}

// serveGRPC serves until stopGRPC.
func (n *Node) serveGRPC() error {
	e := &n.envoy
	n.setHealth()
	n.log.Info("gRPC serving", "addr", e.grpcLn.Addr().String())
	return e.grpc.Serve(e.grpcLn)
}

// followHealth keeps the gRPC health service in step with the node's
// state, so a draining node (or one that cannot decide) reads NOT_SERVING.
func (n *Node) followHealth(ctx context.Context) {
	if n.envoy.grpc != nil {
		n.every(ctx, 250*time.Millisecond, func(context.Context) { n.setHealth() })
	}
}

func (n *Node) setHealth() {
	s := n.healthStatus()
	n.envoy.health.SetServingStatus("", s)
	n.envoy.health.SetServingStatus(rls.RateLimitService_ServiceDesc.ServiceName, s)
}

func (n *Node) healthStatus() healthpb.HealthCheckResponse_ServingStatus {
	if n.selfState() == stateHealthy {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// stopGRPC lets calls in flight finish, bounded by ctx.
func (n *Node) stopGRPC(ctx context.Context) {
	e := &n.envoy
	if e.grpc == nil {
		return
	}
	e.health.Shutdown()
	done := make(chan struct{})
	go func() { e.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.grpc.Stop()
		<-done
	}
}
