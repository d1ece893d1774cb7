package node

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/valyala/fasthttp"
)

// serve is the server's handler: route, with a recover as the last line of
// defence. A panic is a bug, never an answer to input, but a bug reachable
// by a request must cost that request a 500, not every client the node.
func (n *Node) serve(ctx *fasthttp.RequestCtx) {
	defer n.recoverPanic(ctx)
	n.handle(ctx)
}

// recoverPanic answers 500 for a panic of the handler it is deferred in.
func (n *Node) recoverPanic(ctx *fasthttp.RequestCtx) {
	if v := recover(); v != nil {
		n.recovered(ctx, v, debug.Stack())
	}
}

// panicLogEvery spaces the stacks in the log: a client able to trigger one
// panic can trigger a million, and the log must not become the outage.
// Every panic is counted in ratelimiter_panics_total either way.
const panicLogEvery = time.Second

func (n *Node) recovered(ctx *fasthttp.RequestCtx, v any, stack []byte) {
	n.metrics.panics.Inc()
	now := time.Now().UnixNano()
	if last := n.lastPanicLog.Load(); now-last >= int64(panicLogEvery) && n.lastPanicLog.CompareAndSwap(last, now) {
		n.log.Error("BUG: request handler panicked; answered 500 and kept serving",
			"panic", fmt.Sprint(v), "method", string(ctx.Method()), "path", string(ctx.Path()), "stack", string(stack))
	}
	ctx.Response.Reset()
	n.problem(ctx, &problemError{status: fasthttp.StatusInternalServerError, typ: "internal",
		detail: "the node failed on this request; it has been logged"})
}
