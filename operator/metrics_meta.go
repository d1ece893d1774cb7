package operator

import "github.com/ratelimiter/ratelimiter/internal/promtext"

// metricsMeta is the HELP and TYPE of every family on the operator's
// /metrics. A new metric needs its line here: the promtool test fails
// without it.
var metricsMeta = promtext.Table{
	"ratelimiter_operator_tickets":               {Type: "gauge", Help: "Tickets in the operator's store, by state."},
	"ratelimiter_operator_actions_total":         {Type: "counter", Help: "Actions the operator executed, by result."},
	"ratelimiter_operator_loop_duration_seconds": {Type: "histogram", Help: "Time of one monitor loop: observe, evaluate, diagnose, act."},
	"ratelimiter_operator_mode":                  {Type: "gauge", Help: "1 for the operator's current mode (observe, approve or auto), 0 for the others."},
}
