package redistest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestClusterFailoverAndRejoin starts a cluster, kills the master of a key
// with SIGKILL, and expects its replica to take over within a few node
// timeouts; the killed member, restarted, rejoins as a replica.
func TestClusterFailoverAndRejoin(t *testing.T) {
	c := StartCluster(t)
	if got := len(c.Masters(t)); got != 3 {
		t.Fatalf("Masters() = %d servers; want 3", got)
	}
	for _, m := range c.Masters(t) {
		if c.ReplicaOf(t, m) == nil {
			t.Errorf("master %s has no replica", m.Addr)
		}
	}
	if want := "redis://" + c.Members[0].Addr + ","; !strings.HasPrefix(c.URL(), want) || strings.Count(c.URL(), ",") != 5 {
		t.Errorf("URL() = %q; want six comma-separated seeds", c.URL())
	}

	cl := c.Client(t)
	ctx := context.Background()
	if err := cl.Do(ctx, cl.B().Set().Key("k").Value("v").Build()).Error(); err != nil {
		t.Fatalf("SET k through the cluster client: %v", err)
	}
	old := c.MasterFor(t, "k")
	replica := c.ReplicaOf(t, old)
	old.Kill()
	killed := time.Now()
	for m, _ := c.masterFor("k"); m != replica; m, _ = c.masterFor("k") {
		if time.Since(killed) > 10*ClusterNodeTimeout {
			t.Fatalf("replica %s not promoted %v after its master died", replica.Addr, time.Since(killed))
		}
		time.Sleep(clusterPoll)
	}
	t.Logf("replica promoted %v after SIGKILL of its master (cluster-node-timeout %v)", time.Since(killed), ClusterNodeTimeout)

	old.Restart(t)
	c.WaitOK(t, 20*time.Second)
	if role, err := old.Role(); err != nil || role.Master || role.MasterAddr != replica.Addr {
		t.Fatalf("restarted member %s: Role() = %+v, %v; want a replica of %s", old.Addr, role, err, replica.Addr)
	}
}

// TestSentinelFailovers promotes the replica with SENTINEL FAILOVER, then
// kills the new primary: each time the sentinels agree on the other server.
func TestSentinelFailovers(t *testing.T) {
	start := time.Now()
	s := StartSentinel(t)
	t.Logf("sentinel setup ready in %v", time.Since(start))
	if !strings.HasSuffix(s.URL(), "?master_set="+SentinelMasterSet) || strings.Count(s.URL(), ",") != 2 {
		t.Errorf("URL() = %q; want three sentinels and the master set", s.URL())
	}
	if got := s.PrimaryNow(t); got != s.Primary {
		t.Fatalf("PrimaryNow() = %v; want the primary started first, %s", got, s.Primary.Addr)
	}
	waitPrimary := func(want *Server, what string) {
		t.Helper()
		start := time.Now()
		for {
			if addr, err := s.agreedPrimary(); err == nil && addr == want.Addr {
				t.Logf("%s: sentinels switched to %s after %v", what, want.Addr, time.Since(start))
				return
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("%s: sentinels did not switch to %s within 30s", what, want.Addr)
			}
			time.Sleep(clusterPoll)
		}
	}
	asked := time.Now()
	s.Failover(t)
	t.Logf("SENTINEL FAILOVER: switched to %s after %v", s.PrimaryNow(t).Addr, time.Since(asked))
	if got := s.PrimaryNow(t); got != s.Replica {
		t.Fatalf("after SENTINEL FAILOVER PrimaryNow() = %v; want the replica %s", got, s.Replica.Addr)
	}
	start = time.Now()
	s.WaitReady(t, 30*time.Second)
	t.Logf("ready again %v after the failover", time.Since(start))

	s.Replica.Kill()
	waitPrimary(s.Primary, "SIGKILL of the primary")
}
