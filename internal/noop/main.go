// Command noop is the baseline for scripts/bench-wrk.sh: a fasthttp server
// that answers every request 200 without deciding anything, with the same
// server settings as a node, so wrk measures what the decision costs.
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:18099", "address")
	flag.Parse()
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"allowed":true}`)
	}, NoDefaultServerHeader: true}
	log.Fatal(s.ListenAndServe(*addr))
}
