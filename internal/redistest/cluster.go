package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// ClusterNodeTimeout is the cluster-node-timeout of StartCluster: how long a
// master must be unreachable before its replica takes over. Redis' default
// is 15 s; tests use a short one so a failover fits in a test, and so the
// failover tests can bound the outage from it.
const ClusterNodeTimeout = time.Second

const (
	clusterReadyTimeout = 30 * time.Second // from exec to every slot served
	clusterPoll         = 20 * time.Millisecond
)

// Cluster is a Redis Cluster of three masters with one replica each, every
// member a Server of its own on a free loopback port. Roles change with
// failovers: ask Masters, MasterFor or ReplicaOf, never assume the order.
type Cluster struct {
	Members []*Server // the six processes, in start order
}

// StartCluster starts six cluster-enabled servers, joins them with
// `redis-cli --cluster create … --cluster-replicas 1` and waits until every
// slot is served and every replica is in sync. extraArgs go to every
// member (a later "--cluster-node-timeout" overrides ClusterNodeTimeout).
// Everything is killed at cleanup.
func StartCluster(t testing.TB, extraArgs ...string) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redistest: redis-cli is not on PATH (install Redis 7 or newer; these tests must not be skipped): %v", err)
	}
	args := append([]string{
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
		// A replica syncs at once instead of waiting 5 s for others to join.
		"--repl-diskless-sync-delay", "0",
	}, extraArgs...)
	c := &Cluster{Members: make([]*Server, 6)}
	for i := range c.Members {
		c.Members[i] = Start(t, args...)
	}
	create := append([]string{"--cluster", "create"}, c.addrs()...)
	create = append(create, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, create...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(create, " "), err, out)
	}
	c.WaitOK(t, clusterReadyTimeout)
	return c
}

func (c *Cluster) addrs() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.Addr
	}
	return out
}

// URL lists every member as a seed, comma-separated:
// redis://127.0.0.1:P1,127.0.0.1:P2,…
func (c *Cluster) URL() string { return "redis://" + strings.Join(c.addrs(), ",") }

// Client returns a new cluster client seeded with every member, closed at
// cleanup.
func (c *Cluster) Client(t testing.TB) rueidis.Client {
	t.Helper()
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: c.addrs()})
	if err != nil {
		t.Fatalf("redistest: cannot connect to the cluster %v: %v", c.addrs(), err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// WaitOK waits until every running member reports cluster_state:ok with
// all 16384 slots served, and every running replica's link to its master
// is up: the state in which a further failover can succeed.
func (c *Cluster) WaitOK(t testing.TB, timeout time.Duration) {
	t.Helper()
	testkit.WaitUntil(t, timeout, clusterPoll, "redistest: cluster ready", c.ok)
}

// ok says why the cluster is not ready yet, or nil.
func (c *Cluster) ok() error {
	for _, m := range c.running() {
		info, err := m.DoString("CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", m.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("%s: not every slot is served:\n%s", m.Addr, info)
		}
		role, err := m.Role()
		if err != nil {
			return err
		}
		if role.Master {
			continue
		}
		repl, err := m.DoString("INFO", "replication")
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", m.Addr, err)
		}
		if !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("replica %s: link to its master is not up", m.Addr)
		}
	}
	return nil
}

func (c *Cluster) running() []*Server {
	var out []*Server
	for _, m := range c.Members {
		if m.Running() {
			out = append(out, m)
		}
	}
	return out
}

// Masters returns the running members that are masters now.
func (c *Cluster) Masters(t testing.TB) []*Server {
	t.Helper()
	var out []*Server
	for _, m := range c.running() {
		role, err := m.Role()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		if role.Master {
			out = append(out, m)
		}
	}
	return out
}

// MasterFor returns the running master that serves key's slot.
func (c *Cluster) MasterFor(t testing.TB, key string) *Server {
	t.Helper()
	m, err := c.masterFor(key)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return m
}

// masterFor is MasterFor for polling: no running master serving the slot
// (during a failover) is an error, not a failure.
func (c *Cluster) masterFor(key string) (*Server, error) {
	var masters []*Server
	for _, m := range c.running() {
		if role, err := m.Role(); err == nil && role.Master {
			masters = append(masters, m)
		}
	}
	if len(masters) == 0 {
		return nil, fmt.Errorf("no running master")
	}
	slot, err := masters[0].DoInt("CLUSTER", "KEYSLOT", key)
	if err != nil {
		return nil, fmt.Errorf("CLUSTER KEYSLOT %q: %w", key, err)
	}
	for _, m := range masters {
		own, err := m.ownSlots()
		if err != nil {
			return nil, err
		}
		for _, r := range own {
			if slot >= r[0] && slot <= r[1] {
				return m, nil
			}
		}
	}
	return nil, fmt.Errorf("no running master serves slot %d of %q", slot, key)
}

// ReplicaOf returns the running replica of master, or nil.
func (c *Cluster) ReplicaOf(t testing.TB, master *Server) *Server {
	t.Helper()
	for _, m := range c.running() {
		role, err := m.Role()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		if !role.Master && role.MasterAddr == master.Addr {
			return m
		}
	}
	return nil
}

// FlushAll empties every master, so one cluster can serve several tests.
func (c *Cluster) FlushAll(t testing.TB) {
	t.Helper()
	for _, m := range c.Masters(t) {
		if _, err := m.Do("FLUSHALL", "SYNC"); err != nil {
			t.Fatalf("redistest: FLUSHALL on %s: %v", m.Addr, err)
		}
	}
}

// ownSlots reads the slot ranges this member serves from its own line of
// CLUSTER NODES.
func (s *Server) ownSlots() ([][2]int64, error) {
	nodes, err := s.DoString("CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", s.Addr, err)
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "myself") {
			continue
		}
		var out [][2]int64
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being migrated
				continue
			}
			lo, hi, _ := strings.Cut(r, "-")
			a, err1 := strconv.ParseInt(lo, 10, 64)
			b, err2 := strconv.ParseInt(hi, 10, 64)
			if hi == "" {
				b, err2 = a, nil
			}
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%s: unreadable slot range %q in CLUSTER NODES", s.Addr, r)
			}
			out = append(out, [2]int64{a, b})
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: CLUSTER NODES has no line for itself", s.Addr)
}

// Role is what ROLE says of a server.
type Role struct {
	Master     bool
	MasterAddr string // a replica's master, host:port
}

// Role asks the server for its replication role.
func (s *Server) Role() (Role, error) {
	m, err := s.Do("ROLE")
	if err != nil {
		return Role{}, fmt.Errorf("ROLE: %w", err)
	}
	arr, err := m.ToArray()
	if err != nil || len(arr) == 0 {
		return Role{}, fmt.Errorf("%s: ROLE: %v", s.Addr, err)
	}
	kind, _ := arr[0].ToString()
	switch kind {
	case "master":
		return Role{Master: true}, nil
	case "slave":
		if len(arr) < 3 {
			return Role{}, fmt.Errorf("%s: ROLE of a replica has %d fields", s.Addr, len(arr))
		}
		host, _ := arr[1].ToString()
		port, _ := arr[2].AsInt64()
		return Role{MasterAddr: host + ":" + strconv.FormatInt(port, 10)}, nil
	}
	return Role{}, fmt.Errorf("%s: ROLE says %q", s.Addr, kind)
}

// Do sends one command to this process alone, on a fresh connection, and
// never follows a cluster's redirections: what a test asks a single member
// (ROLE, DBSIZE, CLUSTER INFO, MEMORY USAGE) is about that member.
func (s *Server) Do(args ...string) (rueidis.RedisMessage, error) {
	cl, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{s.Addr}, ForceSingleClient: true, DisableCache: true, DisableRetry: true,
		Dialer: net.Dialer{Timeout: time.Second},
	})
	if err != nil {
		return rueidis.RedisMessage{}, fmt.Errorf("%s: %w", s.Addr, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cl.Do(ctx, cl.B().Arbitrary(args[0]).Args(args[1:]...).Build()).ToMessage()
}

// DoString is Do for a reply read as text (a bulk or simple string).
func (s *Server) DoString(args ...string) (string, error) {
	m, err := s.Do(args...)
	if err != nil {
		return "", err
	}
	return m.ToString()
}

// DoInt is Do for an integer reply.
func (s *Server) DoInt(args ...string) (int64, error) {
	m, err := s.Do(args...)
	if err != nil {
		return 0, err
	}
	return m.AsInt64()
}
