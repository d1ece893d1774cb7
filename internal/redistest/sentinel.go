package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// SentinelMasterSet is the name the sentinels of StartSentinel monitor.
const SentinelMasterSet = "rl"

// SentinelDownAfter is how long the sentinels of StartSentinel wait before
// they call an unanswering primary down (Redis' default is 30 s).
const SentinelDownAfter = time.Second

const sentinelReadyTimeout = 30 * time.Second

// Sentinel is a primary, its replica and three sentinels (quorum 2), each a
// Server of its own. Primary and Replica are the roles at start; after a
// failover ask PrimaryNow.
type Sentinel struct {
	Primary, Replica *Server
	Sentinels        []*Server
}

// StartSentinel starts the primary, the replica and three sentinels
// monitoring SentinelMasterSet, and waits until every sentinel sees the
// replica in sync and the two other sentinels. Everything is killed at
// cleanup.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	// A replica syncs at once instead of waiting 5 s for others to join.
	s := &Sentinel{Primary: Start(t, "--repl-diskless-sync-delay", "0")}
	host, port, _ := strings.Cut(s.Primary.Addr, ":")
	s.Replica = Start(t, "--replicaof", host, port, "--repl-diskless-sync-delay", "0")
	// Sentinels learn of replicas from the primary's INFO, which they read
	// every 10 s: a replica in sync before they start is known at once.
	testkit.WaitUntil(t, sentinelReadyTimeout, clusterPoll, "redistest: the replica in sync", func() error { return inSync(s.Primary) })
	for range 3 {
		s.Sentinels = append(s.Sentinels, startWith(t, func(p int, dir string) ([]string, error) {
			return sentinelArgs(p, dir, host, port)
		}))
	}
	s.WaitReady(t, sentinelReadyTimeout)
	return s
}

// sentinelArgs writes a sentinel's config file (a sentinel rewrites its
// file, so it needs one it may write) and returns its command line.
func sentinelArgs(port int, dir, primaryHost, primaryPort string) ([]string, error) {
	conf := filepath.Join(dir, "sentinel.conf")
	name := SentinelMasterSet
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n", port, dir) +
		fmt.Sprintf("sentinel monitor %s %s %s 2\n", name, primaryHost, primaryPort) +
		fmt.Sprintf("sentinel down-after-milliseconds %s %d\n", name, SentinelDownAfter.Milliseconds()) +
		fmt.Sprintf("sentinel failover-timeout %s 3000\n", name)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", conf, err)
	}
	return []string{conf, "--sentinel"}, nil
}

// URL names every sentinel and the master set:
// redis://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3?master_set=rl
func (s *Sentinel) URL() string {
	addrs := make([]string, len(s.Sentinels))
	for i, m := range s.Sentinels {
		addrs[i] = m.Addr
	}
	return "redis://" + strings.Join(addrs, ",") + "?master_set=" + SentinelMasterSet
}

// PrimaryNow returns the data server that the running sentinels name as
// primary, once they all agree on it.
func (s *Sentinel) PrimaryNow(t testing.TB) *Server {
	t.Helper()
	// After a failover the sentinels that did not lead it learn the new
	// primary from hello messages, sent every 2 s: wait for them to agree.
	var addr string
	testkit.WaitUntil(t, 15*time.Second, clusterPoll, "redistest: sentinels agreeing on the primary", func() (err error) {
		addr, err = s.agreedPrimary()
		return err
	})
	return s.server(addr)
}

func (s *Sentinel) server(addr string) *Server {
	for _, m := range []*Server{s.Primary, s.Replica} {
		if m.Addr == addr {
			return m
		}
	}
	return nil
}

// agreedPrimary is the primary every running sentinel names.
func (s *Sentinel) agreedPrimary() (string, error) {
	agreed := ""
	for _, m := range s.Sentinels {
		if !m.Running() {
			continue
		}
		msg, err := m.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMasterSet)
		if err != nil {
			return "", fmt.Errorf("sentinel %s: %w", m.Addr, err)
		}
		hp, err := msg.AsStrSlice()
		if err != nil || len(hp) != 2 {
			return "", fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME = %v, %v", m.Addr, hp, err)
		}
		addr := hp[0] + ":" + hp[1]
		if agreed != "" && addr != agreed {
			return "", fmt.Errorf("sentinels disagree on the primary: %s and %s", agreed, addr)
		}
		agreed = addr
	}
	if agreed == "" {
		return "", fmt.Errorf("no sentinel is running")
	}
	return agreed, nil
}

// Failover asks a running sentinel to promote the replica (SENTINEL
// FAILOVER), as an operator does for maintenance, and returns once the
// sentinels agree on the new primary and the old one replicates from it.
// Sentinel itself would demote the old primary only after its next INFO,
// up to 10 s later; the helper does it at once so tests need not wait.
func (s *Sentinel) Failover(t testing.TB) {
	t.Helper()
	old, err := s.agreedPrimary()
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	asked := false
	for _, m := range s.Sentinels {
		if m.Running() {
			if _, err := m.Do("SENTINEL", "FAILOVER", SentinelMasterSet); err != nil {
				t.Fatalf("redistest: SENTINEL FAILOVER on %s: %v", m.Addr, err)
			}
			asked = true
			break
		}
	}
	if !asked {
		t.Fatalf("redistest: no sentinel is running")
	}
	var now string
	testkit.WaitUntil(t, sentinelReadyTimeout, clusterPoll, "redistest: the sentinels' switch to a new primary", func() error {
		if now, err = s.agreedPrimary(); err == nil && now == old {
			err = fmt.Errorf("still on %s", old)
		}
		return err
	})
	host, port, _ := strings.Cut(now, ":")
	if _, err := s.server(old).Do("REPLICAOF", host, port); err != nil {
		t.Fatalf("redistest: REPLICAOF on the old primary %s: %v", old, err)
	}
}

// WaitReady waits until the running sentinels agree on a running primary,
// that primary has a replica in sync, and every running sentinel knows the
// replica (not down) and the other sentinels: the state in which a further
// failover can succeed.
func (s *Sentinel) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	testkit.WaitUntil(t, timeout, clusterPoll, "redistest: sentinel setup ready", s.ready)
}

// inSync checks that primary has one replica, online.
func inSync(primary *Server) error {
	repl, err := primary.DoString("INFO", "replication")
	if err != nil {
		return err
	}
	if !strings.Contains(repl, "connected_slaves:1") || !strings.Contains(repl, "state=online") {
		return fmt.Errorf("primary %s has no replica in sync", primary.Addr)
	}
	return nil
}

func (s *Sentinel) ready() error {
	addr, err := s.agreedPrimary()
	if err != nil {
		return err
	}
	primary := s.server(addr)
	if primary == nil || !primary.Running() {
		return fmt.Errorf("the sentinels' primary %s is not running", addr)
	}
	if role, err := primary.Role(); err != nil || !role.Master {
		return fmt.Errorf("the sentinels' primary %s is not a master yet (%v)", addr, err)
	}
	if err := inSync(primary); err != nil {
		return err
	}
	running := 0
	for _, m := range s.Sentinels {
		if m.Running() {
			running++
		}
	}
	for _, m := range s.Sentinels {
		if !m.Running() {
			continue
		}
		if err := sentinelKnows(m, running-1); err != nil {
			return err
		}
	}
	return nil
}

// sentinelKnows checks that sentinel m sees one healthy replica and at least
// peers other sentinels.
func sentinelKnows(m *Server, peers int) error {
	msg, err := m.Do("SENTINEL", "REPLICAS", SentinelMasterSet)
	if err != nil {
		return fmt.Errorf("sentinel %s: %w", m.Addr, err)
	}
	reps, _ := msg.ToArray()
	healthy := 0
	for _, r := range reps {
		f, _ := r.AsStrMap()
		if !strings.Contains(f["flags"], "down") && !strings.Contains(f["flags"], "disconnected") {
			healthy++
		}
	}
	if healthy != 1 {
		return fmt.Errorf("sentinel %s sees %d healthy replicas; want 1", m.Addr, healthy)
	}
	msg, err = m.Do("SENTINEL", "SENTINELS", SentinelMasterSet)
	if err != nil {
		return fmt.Errorf("sentinel %s: %w", m.Addr, err)
	}
	others, _ := msg.ToArray()
	if len(others) < peers {
		return fmt.Errorf("sentinel %s knows %d other sentinels; want %d", m.Addr, len(others), peers)
	}
	return nil
}
