package node

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/node/store"
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
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			addNodeUser(t, srv)
			tc.run(t, asNodeUser{srv})
		})
	}
}

// TestOnCluster runs the suite with its nodes on a Redis Cluster of three
// masters and three replicas, then what only a cluster can do. One cluster
// serves every test (starting one takes seconds); it is emptied between
// tests, whose nodes have all stopped by then.
func TestOnCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	addNodeUser(t, c.Members...)
	t.Run("NodeUserMayNotScan", func(t *testing.T) { testNodeUserMayNotScan(t, c) })
	for _, tc := range suite {
		c.FlushAll(t)
		t.Run(tc.name, func(t *testing.T) { tc.run(t, asNodeUser{c}) })
	}
	c.FlushAll(t)
	t.Run("KeysSpreadOverMasters", func(t *testing.T) { testKeysSpreadOverMasters(t, c) })
	c.FlushAll(t)
	t.Run("MemoryPerKey", func(t *testing.T) { testMemoryPerKey(t, c) })
	// The failovers last, as they move masters around (each puts the
	// cluster back to full strength).
	c.FlushAll(t)
	t.Run("FailoverOfDataMaster", func(t *testing.T) { testClusterFailover(t, c, false) })
	c.FlushAll(t)
	t.Run("FailoverOfRegistryMaster", func(t *testing.T) { testClusterFailover(t, c, true) })
}

// The nodes of the suite connect as a Redis user that may not run the
// commands that list or count a server's keys: cluster-wide state (the
// registry, limits, blocks, hot keys) must never depend on them, since on a
// cluster each answers for one master only. Any use fails the suite with
// NOPERM.
const (
	nodeUser     = "ratelimiter"
	nodePassword = "node-secret"
	nodeACL      = "-keys -scan -randomkey -dbsize -flushall -flushdb"
)

// addNodeUser creates the nodes' user on every server. ACLs are per server,
// replicas included, so a promoted replica keeps refusing the same
// commands; a restarted server (no persistence) needs it again.
func addNodeUser(t testing.TB, servers ...*redistest.Server) {
	t.Helper()
	for _, s := range servers {
		args := append([]string{"ACL", "SETUSER", nodeUser, "reset", "on", ">" + nodePassword, "~*", "&*", "+@all"}, strings.Fields(nodeACL)...)
		if _, err := s.Do(args...); err != nil {
			t.Fatalf("ACL SETUSER on %s: %v", s.Addr, err)
		}
	}
}

// asNodeUser is a backend whose URL logs in as the nodes' user.
type asNodeUser struct{ backend }

func (b asNodeUser) URL() string {
	return strings.Replace(b.backend.URL(), "redis://", "redis://"+nodeUser+":"+nodePassword+"@", 1)
}

// testNodeUserMayNotScan proves that the restriction holds, so the suite
// passing on it means something.
func testNodeUserMayNotScan(t *testing.T, c *redistest.Cluster) {
	opt, err := store.ParseRedisURL(asNodeUser{c}.URL())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("connecting as %s: %v", nodeUser, err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := cl.Do(ctx, cl.B().Set().Key("k").Value("v").Build()).Error(); err != nil {
		t.Fatalf("SET as %s: %v; want allowed", nodeUser, err)
	}
	for _, cmd := range []rueidis.Completed{cl.B().Keys().Pattern("*").Build(), cl.B().Scan().Cursor(0).Build(), cl.B().Dbsize().Build()} {
		if err := cl.Do(ctx, cmd).Error(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%v as %s: err = %v; want NOPERM", cmd.Commands(), nodeUser, err)
		}
	}
}
