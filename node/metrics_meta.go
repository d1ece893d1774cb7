package node

import "github.com/ratelimiter/ratelimiter/internal/promtext"

// metricsMeta is the HELP and TYPE of every family on a node's /metrics.
// A new metric needs its line here: the promtool test fails without it.
var metricsMeta = promtext.Process.With(promtext.Table{
	"ratelimiter_requests_total":             {Type: "counter", Help: "Checks this node decided, by result: allowed, or blocked (denied for any reason)."},
	"ratelimiter_shadow_denials_total":       {Type: "counter", Help: "Checks a shadow limit would have denied; they were allowed."},
	"ratelimiter_fail_open_total":            {Type: "counter", Help: "Checks allowed because the store could not decide and the limit fails open."},
	"ratelimiter_fail_closed_total":          {Type: "counter", Help: "Checks denied because the store could not decide and the limit fails closed."},
	"ratelimiter_local_denials_total":        {Type: "counter", Help: "Denials answered from the node's cache of keys over their limit, without a store call."},
	"ratelimiter_bad_requests_total":         {Type: "counter", Help: "Check requests rejected as invalid (400)."},
	"ratelimiter_redis_operations_total":     {Type: "counter", Help: "Calls to the store (Redis, or the in-process store), by operation."},
	"ratelimiter_redis_errors_total":         {Type: "counter", Help: "Failed calls to the store, timeouts included, by operation."},
	"ratelimiter_request_duration_seconds":   {Type: "histogram", Help: "Time to answer one check, from the request read to the answer written."},
	"ratelimiter_redis_latency_seconds":      {Type: "histogram", Help: "Time of one store call (one Redis round trip)."},
	"ratelimiter_active_keys":                {Type: "gauge", Help: "Distinct keys checked on this node in the last minute or two (an estimate)."},
	"ratelimiter_redis_connected":            {Type: "gauge", Help: "1 while the store answers, 0 while it is unreachable."},
	"ratelimiter_node_state":                 {Type: "gauge", Help: "1 for this node's state (healthy, unhealthy or draining), 0 for the others."},
	"ratelimiter_panics_total":               {Type: "counter", Help: "Requests whose handler panicked; each was answered 500 and the node kept serving."},
	"ratelimiter_config_reloads_total":       {Type: "counter", Help: "Envoy descriptor directory reloads that applied a new configuration."},
	"ratelimiter_config_reload_errors_total": {Type: "counter", Help: "Envoy descriptor directory reloads refused; the last good configuration stayed."},
	"ratelimiter_envoy_requests_total":       {Type: "counter", Help: "ShouldRateLimit requests (gRPC and POST /json), by overall code: ok, over_limit or error."},
	"ratelimiter_envoy_global_shadow_total":  {Type: "counter", Help: "ShouldRateLimit requests answered OK only because of the global shadow mode."},
	"ratelimiter_envoy_decisions_total":      {Type: "counter", Help: "Descriptor decisions, by domain, descriptor and result; request values only for detailed_metric, capped per node."},
})
