package operator

import "github.com/ratelimiter/ratelimiter/internal/promtext"

// metricsMeta is the HELP and TYPE of every family on the operator's
// /metrics. A new metric needs its line here: the promtool test fails
// without it.
var metricsMeta = promtext.Table{
	"ratelimiter_operator_tickets":                    {Type: "gauge", Help: "Tickets in the operator's store, by state."},
	"ratelimiter_operator_actions_total":              {Type: "counter", Help: "Actions the operator executed, by result."},
	"ratelimiter_operator_loop_duration_seconds":      {Type: "histogram", Help: "Time of one monitor loop: observe, evaluate, diagnose, act."},
	"ratelimiter_operator_mode":                       {Type: "gauge", Help: "1 for the operator's current mode (observe, approve or auto), 0 for the others."},
	"ratelimiter_operator_slo_error_budget_remaining": {Type: "gauge", Help: "Share of the SLO's error budget left over its window, percent."},
	"ratelimiter_operator_slo_burn_rate":              {Type: "gauge", Help: "How fast the SLO spends its error budget over a burn window (1 spends exactly the budget over the SLO's window)."},
	"ratelimiter_operator_notifications_total":        {Type: "counter", Help: "Webhook notifications of tickets, by result: sent, failed after retries, or dropped from a full queue."},
}
