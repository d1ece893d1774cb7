package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ratelimiter/ratelimiter/chaos/proxy"
	"github.com/ratelimiter/ratelimiter/loadgen"
	"github.com/ratelimiter/ratelimiter/operator"
)

// ClusterConfig describes the local cluster a scenario runs on.
type ClusterConfig struct {
	// Command returns the command that runs this binary with args; nodes are
	// started as `Command("node", …)` so that they can be killed and paused.
	Command func(args ...string) *exec.Cmd
	// NodeConfig is the TOML file nodes read; empty means the embedded one.
	NodeConfig string
	Nodes      int
	// RedisServer is the redis-server binary; empty means look it up on
	// PATH. When there is none and InProcessOK is set, the nodes use their
	// in-process stores (each its own) and no proxy runs.
	RedisServer string
	InProcessOK bool
	Operator    operator.Config // the runner sets DB, Mode and Interval
	Subject     operator.Subject
	Secrets     operator.Secrets // what Operator and Subject name by environment variable
	Interval    time.Duration    // operator loop interval
	Load        float64          // background checks per second over all nodes
	LoadKeys    int
	LoadPrefix  string
	Dir         string // logs and the operator database
	Log         *slog.Logger
	// StatusAddr, when set, serves the operator's status page there.
	StatusAddr string
}

// Cluster is a running local cluster: redis-server behind the fault proxy,
// nodes in their own processes, the operator in auto mode and background
// load. Close stops all of it.
type Cluster struct {
	cfg       ClusterConfig
	log       *slog.Logger
	redis     *process // nil with in-process stores
	RedisAddr string
	Proxy     *proxy.Proxy // nil with in-process stores
	Nodes     []*Node
	Store     *operator.Store
	Operator  *operator.Operator
	StatusURL string // the operator's status page, when served
	http      *http.Client

	stop context.CancelFunc // the proxy, operator and load
	wg   sync.WaitGroup
}

// Node is one node process of the cluster.
type Node struct {
	ID, Addr string
	proc     *process
}

// URL is the node's base URL.
func (n *Node) URL() string { return "http://" + n.Addr }

// PID is the node's process id while it runs, else 0.
func (n *Node) PID() int { return n.proc.PID() }

// StartCluster starts everything and returns once every node answers
// /health and Redis answers PING. On error nothing is left running.
func StartCluster(ctx context.Context, cfg ClusterConfig) (c *Cluster, err error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	c = &Cluster{cfg: cfg, log: cfg.Log, http: &http.Client{Timeout: 2 * time.Second}}
	runCtx, stop := context.WithCancel(context.Background())
	c.stop = stop
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	redisURL, err := c.startRedis(ctx, runCtx)
	if err != nil {
		return c, err
	}
	if err := c.startNodes(ctx, redisURL); err != nil {
		return c, err
	}
	if err := c.startOperator(runCtx); err != nil {
		return c, err
	}
	if err := c.serveStatus(runCtx); err != nil {
		return c, err
	}
	c.startLoad(runCtx)
	return c, nil
}

// serveStatus serves the operator's status page until the cluster stops.
func (c *Cluster) serveStatus(runCtx context.Context) error {
	if c.cfg.StatusAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", c.cfg.StatusAddr)
	if err != nil {
		return fmt.Errorf("cannot serve the status page: %w", err)
	}
	c.StatusURL = "http://" + ln.Addr().String() + "/"
	srv := &http.Server{Handler: c.Operator.StatusHandler(), ReadHeaderTimeout: 5 * time.Second}
	c.wg.Go(func() { srv.Serve(ln) })
	c.wg.Go(func() {
		<-runCtx.Done()
		srv.Close()
	})
	return nil
}

// startRedis runs a private redis-server behind the proxy and returns the
// URL nodes use, or "" for in-process stores.
func (c *Cluster) startRedis(ctx, runCtx context.Context) (string, error) {
	path := c.cfg.RedisServer
	if path == "" {
		var err error
		if path, err = exec.LookPath("redis-server"); err != nil {
			if c.cfg.InProcessOK {
				c.log.Info("redis-server is not on PATH: the nodes use in-process stores")
				return "", nil
			}
			return "", errors.New("redis-server is not on PATH (install Debian's redis-server)")
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	host, port, _ := net.SplitHostPort(addr)
	dir := c.cfg.Dir
	c.redis = &process{name: "redis-server", logPath: filepath.Join(dir, "redis.log"), newCmd: func() *exec.Cmd {
		return exec.Command(path, "--bind", host, "--port", port, "--save", "", "--appendonly", "no", "--dir", dir)
	}}
	if err := c.redis.start(); err != nil {
		return "", err
	}
	c.RedisAddr = addr
	if err := waitFor(ctx, 5*time.Second, "redis-server answers PING", func() error { return redisPing(addr) }); err != nil {
		return "", err
	}
	if c.Proxy, err = proxy.New("127.0.0.1:0", addr, c.log.With("role", "proxy")); err != nil {
		return "", err
	}
	c.wg.Go(func() { c.Proxy.Run(runCtx) })
	return "redis://" + c.Proxy.Addr(), nil
}

// nodePortAttempts is how many ports a node is given at start: another
// process can take the one freeAddr picked before the node binds it.
const nodePortAttempts = 3

func (c *Cluster) startNodes(ctx context.Context, redisURL string) error {
	for i := range c.cfg.Nodes {
		n := &Node{ID: fmt.Sprintf("node-%d", i+1)}
		n.proc = &process{name: n.ID, logPath: filepath.Join(c.cfg.Dir, n.ID+".log")}
		if err := c.startNode(n, redisURL); err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		for attempt := 1; ; attempt++ {
			err := c.waitHealthy(ctx, n, 15*time.Second)
			if err == nil {
				break
			}
			if attempt == nodePortAttempts || !n.proc.exited() || !strings.Contains(tailFile(n.proc.logPath, 5), "address already in use") {
				return err
			}
			c.log.Warn("a node's port was taken before it bound it; starting it on another", "node", n.ID, "addr", n.Addr)
			if err := c.startNode(n, redisURL); err != nil {
				return err
			}
		}
	}
	return nil
}

// startNode starts n on a port freeAddr picks.
func (c *Cluster) startNode(n *Node, redisURL string) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	n.Addr = addr
	args := []string{"node", "--listen", addr, "--node-id", n.ID, "--log-format", "json"}
	if redisURL != "" {
		args = append(args, "--redis-url", redisURL)
	}
	if c.cfg.NodeConfig != "" {
		args = append(args, "--config", c.cfg.NodeConfig)
	}
	n.proc.newCmd = func() *exec.Cmd { return c.cfg.Command(args...) }
	return n.proc.start()
}

// waitHealthy waits for the node to answer /health with 200; a node that
// exited fails it at once.
func (c *Cluster) waitHealthy(ctx context.Context, n *Node, timeout time.Duration) error {
	return waitFor(ctx, timeout, n.ID+" answers /health", func() error {
		if n.proc.exited() {
			return finalError{fmt.Errorf("%s exited: %s", n.ID, tailFile(n.proc.logPath, 5))}
		}
		resp, err := c.http.Get(n.URL() + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

func (c *Cluster) startOperator(runCtx context.Context) error {
	ocfg := c.cfg.Operator
	ocfg.DB = filepath.Join(c.cfg.Dir, "operator.db")
	ocfg.Mode = operator.ModeAuto
	ocfg.Interval.Duration = c.cfg.Interval
	store, err := operator.OpenStore(ocfg.DB)
	if err != nil {
		return fmt.Errorf("cannot open the operator database: %w", err)
	}
	c.Store = store
	if c.Operator, err = operator.New(ocfg, c.cfg.Subject, c.URLs(), store, c.cfg.Secrets, c.log, time.Now); err != nil {
		return err
	}
	c.wg.Go(func() {
		if err := c.Operator.Run(runCtx); err != nil && runCtx.Err() == nil {
			c.log.Error("the operator stopped", "err", err)
		}
	})
	return nil
}

// startLoad sends background checks, spread over every node, until Close.
func (c *Cluster) startLoad(runCtx context.Context) {
	if c.cfg.Load <= 0 {
		return
	}
	lc := c.loadConfig(c.cfg.Load, max(c.cfg.LoadKeys, 1), c.cfg.LoadPrefix)
	c.wg.Go(func() {
		if _, err := loadgen.Run(runCtx, lc, io.Discard, false, quiet); err != nil {
			c.log.Error("background load failed", "err", err)
		}
	})
}

// loadConfig is open-loop load over every node that runs until its
// context is cancelled. Its report would call the rest of its nominal
// duration "dropped", so callers run it with the quiet logger.
func (c *Cluster) loadConfig(rate float64, keys int, prefix string) loadgen.Config {
	lc := loadgen.DefaultConfig()
	lc.Targets = c.URLs()
	lc.Rate = rate
	lc.Duration = 24 * time.Hour
	lc.Keys = keys
	lc.KeyPrefix = prefix
	lc.Timeout = time.Second
	return lc
}

var quiet = slog.New(slog.DiscardHandler)

// URLs are the nodes' base URLs.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return urls
}

// Node returns the node with the given id.
func (c *Cluster) Node(id string) (*Node, error) {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no node %q in the cluster", id)
}

// PIDs are the processes the cluster started that still run.
func (c *Cluster) PIDs() []int {
	var pids []int
	if c.redis != nil && c.redis.PID() != 0 {
		pids = append(pids, c.redis.PID())
	}
	for _, n := range c.Nodes {
		if pid := n.PID(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Close stops the load, the operator, the nodes, the proxy and Redis, in
// that order, and returns once every process has exited.
func (c *Cluster) Close() {
	c.stop()
	c.wg.Wait()
	if c.Store != nil {
		c.Store.Close()
	}
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(func() { n.proc.stop(5 * time.Second) })
	}
	wg.Wait()
	if c.redis != nil {
		c.redis.stop(5 * time.Second)
	}
}

// maxAnswer bounds the read of one node API document. The largest the
// runner reads is GET /api/v1/limits: max_limits (1,000) limits at their
// longest (512-byte pattern and name) list in 2.6 MB, twice that with the
// previous version a change keeps; 16 MiB leaves room for descriptor
// limits, and a node gone wrong costs the runner no more.
const maxAnswer = 16 << 20

// getJSON reads a node API document into v.
func (c *Cluster) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if len(body) > maxAnswer {
		return fmt.Errorf("GET %s: answer larger than %d MiB", url, maxAnswer>>20)
	}
	return json.Unmarshal(body, v)
}

// send makes one management call and fails on any non-2xx answer.
func (c *Cluster) send(ctx context.Context, method, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return nil
}

// redisPing sends one PING on a fresh connection.
func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// tailFile returns the last n lines of a log, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
