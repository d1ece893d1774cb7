package operator

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
)

// TestClusterMasterKilledOpensRedisDisconnected runs three nodes on a Redis
// Cluster under traffic and SIGKILLs a master that holds data keys only
// (the registry stays up). The nodes answer that master's keys by failure
// mode until its replica is promoted; each reports redis_connected=false
// meanwhile, so the operator opens redis_disconnected for every node, calls
// none of them down, and resolves the tickets by itself once the outage
// is over: no sooner than keep_firing_for after it last saw the violation,
// and within a few intervals of the last check the traffic saw fail.
func TestClusterMasterKilledOpensRedisDisconnected(t *testing.T) {
	c := redistest.StartCluster(t)
	nodes := make([]*nodetest.Node, 3)
	for i := range nodes {
		cfg := nodeConfig(fmt.Sprintf("n%d", i+1), nil)
		cfg.RedisURL = c.URL()
		nodes[i] = nodetest.Start(t, cfg)
	}
	const keep = 500 * time.Millisecond
	cfg, subj := shipped(t)
	setTimings(t, &subj, "redis_disconnected", 0, keep)
	e := newOp(t, cfg, subj, []string{nodes[0].URL}, time.Now)
	waitSeen(t, e, 3)
	e.tick(t)
	if ts := e.tickets(t); len(ts) != 0 {
		t.Fatalf("healthy cluster: tickets %v; want none", keys(ts))
	}

	var victim *redistest.Server
	registry := c.MasterFor(t, "{rl}")
	for _, m := range c.Masters(t) {
		if m != registry {
			victim = m
			break
		}
	}
	load := startChecks(nodes)
	defer load.finish(time.Now())
	time.Sleep(300 * time.Millisecond)
	killed := time.Now()
	victim.Kill()

	want := []string{"redis_disconnected:n1", "redis_disconnected:n2", "redis_disconnected:n3"}
	var (
		opened, resolved time.Duration = -1, -1
		first, last      time.Duration
		wrong            int
	)
	for i := 0; resolved < 0; i++ {
		if i == 150 || time.Since(killed) > 30*time.Second {
			t.Fatalf("after %d ticks (%v): tickets %v; want %v opened and resolved", i, time.Since(killed), keys(e.tickets(t)), want)
		}
		e.tick(t)
		open, all := 0, 0
		for _, k := range want {
			if ts := e.withKey(t, k); len(ts) > 0 {
				all++
				if ts[len(ts)-1].Status != StatusResolved {
					open++
				}
			}
		}
		if opened < 0 && open == len(want) {
			opened = time.Since(killed)
		}
		if opened >= 0 && all == len(want) && open == 0 {
			resolved = time.Since(killed)
			// Stop the traffic the moment the resolution is seen, so the
			// outage's end below is the one the tickets resolved on,
			// not moved by checks this test sent afterwards. A check
			// started before now still counts.
			first, last, wrong = load.finish(killed)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("master %s SIGKILLed: %d checks answered by failure mode, from %v to %v after the kill; all redis_disconnected tickets open %v and resolved %v after the kill",
		victim.Addr, wrong, first.Round(time.Millisecond), last.Round(time.Millisecond), opened.Round(time.Millisecond), resolved.Round(time.Millisecond))
	if wrong == 0 {
		t.Fatalf("no check was answered by failure mode: the kill did not reach the traffic")
	}
	// Resolved within a few intervals (operator, heartbeat, sync) of the
	// outage's end as the traffic saw it. The traffic's last failure is no
	// lower bound: a node ignores a tail of fewer than three failed checks
	// per sync interval as blips (see node's storeFailed), so it may report
	// itself connected while a last check or two still fails.
	if slack := 2 * time.Second; resolved > last+keep+slack {
		t.Errorf("tickets resolved %v after the kill; want at most %v after the outage's end (%v) plus keep_firing_for (%v)",
			resolved, slack, last, keep)
	}
	for _, tk := range e.tickets(t) {
		if !slices.Contains(want, tk.Key) {
			t.Errorf("unexpected ticket %s: %s", tk.Key, tk.Message)
			continue
		}
		if tk.Occurrences < 1 || tk.FirstSeen.Before(killed) || tk.ResolvedAt == nil {
			t.Errorf("ticket %s = %+v; want one, first seen after the kill, resolved", tk.Key, tk)
			continue
		}
		// The lower bound, on the operator's own clock: the violation was
		// last seen firing at LastSeen, and must stay clear for
		// keep_firing_for before the ticket resolves.
		if held := tk.ResolvedAt.Sub(tk.LastSeen); held < keep {
			t.Errorf("ticket %s resolved %v after the violation was last seen; want at least keep_firing_for (%v)", tk.Key, held, keep)
		}
	}
	if n := len(e.tickets(t)); n != len(want) {
		t.Errorf("%d tickets; want exactly %v, each opened once", n, want)
	}
}

// checkLoad is light traffic over keys spread across every master, by a
// few clients, bounded in count and time.
type checkLoad struct {
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	mu   sync.Mutex
	bad  []time.Time // starts of checks answered by failure mode
}

func startChecks(nodes []*nodetest.Node) *checkLoad {
	const (
		workers   = 3
		perWorker = 15_000
		hardLimit = 40 * time.Second
	)
	l := &checkLoad{stop: make(chan struct{})}
	begin := time.Now()
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := range perWorker {
				select {
				case <-l.stop:
					return
				default:
				}
				if time.Since(begin) > hardLimit {
					return
				}
				start := time.Now()
				body := fmt.Sprintf(`{"key":"cf:%d"}`, (w*perWorker+i)%3000)
				resp, err := client.Post(nodes[(w+i)%len(nodes)].URL+"/api/v1/check", "application/json", strings.NewReader(body))
				if err == nil {
					var buf [512]byte
					k, _ := resp.Body.Read(buf[:])
					resp.Body.Close()
					if strings.Contains(string(buf[:k]), `"fail_open"`) {
						l.mu.Lock()
						l.bad = append(l.bad, start)
						l.mu.Unlock()
					}
				}
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	return l
}

// finish stops the load and returns when, after since, the checks
// answered by failure mode began and ended (-1 when none was), and how
// many there were.
func (l *checkLoad) finish(since time.Time) (first, last time.Duration, n int) {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) == 0 {
		return -1, -1, 0
	}
	slices.SortFunc(l.bad, func(a, b time.Time) int { return a.Compare(b) })
	return l.bad[0].Sub(since), l.bad[len(l.bad)-1].Sub(since), len(l.bad)
}
