package node

import (
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
)

// suite is the part of the node's tests that runs on every Redis
// deployment: decisions, the management API, the registry, drain, blocks
// and hot keys. TestOnRedis runs it on one redis-server per test;
// TestOnCluster runs it again on a Redis Cluster. Tests of what only one
// deployment can do (a single Redis killed and restarted, a cluster
// failover) stand alone.
var suite = []struct {
	name string
	run  func(*testing.T, backend)
}{
	{"HeadersAndForwardAuth", testHeadersAndForwardAuth},
	{"ShadowNeverDenies", testShadowNeverDenies},
	{"BadInput", testBadInput},
	{"AdminToken", testAdminToken},
	{"ManagementRoundTrip", testManagementRoundTrip},
	{"PrometheusMetrics", testPrometheusMetrics},
	{"DenyCacheAnswersLocally", testDenyCacheAnswersLocally},
	{"ClusterPropagation", testClusterPropagation},
	{"LimitHistoryAndRollback", testLimitHistoryAndRollback},
	{"LimitChangesSurviveRestart", testLimitChangesSurviveRestart},
	{"ConcurrentClientsAdmitExactlyTheLimit", testConcurrentClientsAdmitExactlyTheLimit},
	{"ClockSkew", testClockSkew},
	{"KilledNodeTurnsUnhealthy", testKilledNodeTurnsUnhealthy},
	{"TerminatedNodeDeregisters", testTerminatedNodeDeregisters},
	{"DrainThroughAnotherNode", testDrainThroughAnotherNode},
}

// TestOnRedis runs the suite with its nodes on a redis-server of their own
// per test.
func TestOnRedis(t *testing.T) {
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, redistest.Start(t)) })
	}
}

// TestOnCluster runs the suite with its nodes on a Redis Cluster of three
// masters and three replicas. One cluster serves every test (starting one
// takes seconds); it is emptied between tests, whose nodes have all
// stopped by then.
func TestOnCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	for _, tc := range suite {
		c.FlushAll(t)
		t.Run(tc.name, func(t *testing.T) { tc.run(t, c) })
	}
	// Then what only a cluster can do; the failovers last, as they move
	// masters around (each puts the cluster back to full strength).
	c.FlushAll(t)
	t.Run("FailoverOfDataMaster", func(t *testing.T) { testClusterFailover(t, c, false) })
	c.FlushAll(t)
	t.Run("FailoverOfRegistryMaster", func(t *testing.T) { testClusterFailover(t, c, true) })
}
