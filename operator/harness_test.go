package operator

// The harness of the operator's end-to-end tests: real rate-limiter nodes
// (started by internal/nodetest, in this process or as a child process
// that can be SIGKILLed) on a real redis-server, the shipped subject from
// ../config.toml, a stand-in "queue" service for the second subject, an
// operator process to SIGKILL, and a recording reverse proxy. The operator
// package itself never imports node; only these tests do.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/internal/nodetest"
	"github.com/ratelimiter/ratelimiter/internal/redistest"
	"github.com/ratelimiter/ratelimiter/internal/testkit"
	"github.com/ratelimiter/ratelimiter/limiter"
	"github.com/ratelimiter/ratelimiter/node"
)

const (
	// childOpEnv makes the test binary run one operator (a childOp)
	// instead of the tests.
	childOpEnv = "RATELIMITER_OPERATOR_TEST_OPERATOR"
	// adminTokenEnv and queueTokenEnv hold the subjects' bearer tokens. They
	// are set once in TestMain, so parallel tests never race on them.
	adminTokenEnv = "OPERATOR_TEST_ADMIN_TOKEN"
	adminToken    = "node-admin-token-5d1c0a"
	queueTokenEnv = "QUEUE_OPERATOR_TEST_TOKEN" // named by testdata/queue.toml
	queueToken    = "queue-secret-7f3e9b2a41c8"
	// llmKeyEnv holds the key the LLM diagnoser sends to the stand-in model.
	llmKeyEnv = "OPERATOR_TEST_LLM_KEY"
	llmKey    = "sk-test-llm-0d9f2c71e5"
)

func TestMain(m *testing.M) {
	nodetest.RunChildIfRequested()
	os.Setenv(adminTokenEnv, adminToken)
	os.Setenv(queueTokenEnv, queueToken)
	os.Setenv(llmKeyEnv, llmKey)
	if raw := os.Getenv(childOpEnv); raw != "" {
		runChildOperator(raw)
		return
	}
	os.Exit(m.Run())
}

// childOp is an operator process on the queue subject of
// testdata/queue.toml, in observe mode, for tests that must SIGKILL one or
// need a second process holding the lease.
type childOp struct {
	DB    string        `json:"db"`
	URL   string        `json:"url"`
	Grace time.Duration `json:"grace"` // worker_stuck's grace_period
}

func runChildOperator(raw string) {
	var c childOp
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		panic(err)
	}
	f := &testFile{Operator: DefaultConfig()}
	if err := config.Load("testdata/queue.toml", f); err != nil {
		panic(err)
	}
	cfg, subj := f.Operator, f.Subjects["queue"]
	cfg.DB, cfg.Mode = c.DB, ModeObserve
	subj.Invariants[0].GracePeriod.Duration = c.Grace
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	st, err := OpenStore(cfg.DB)
	if err != nil {
		panic(err)
	}
	op, err := New(cfg, subj, []string{c.URL}, st, ResolveSecrets(cfg, subj, os.Getenv), slog.New(slog.NewTextHandler(os.Stderr, nil)), time.Now)
	if err != nil {
		panic(err)
	}
	// testkit.StartChild returns once the child wrote its first line.
	fmt.Println("operator started")
	if err := op.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "operator:", err)
		os.Exit(1)
	}
}

// startChildOperator runs a childOp; it is killed at cleanup.
func startChildOperator(t *testing.T, c childOp) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return testkit.StartChild(t, "operator", childOpEnv, string(raw)).Cmd
}

// testFile is the layout of config.toml as the operator sees it: its own
// sections, and the node's kept opaque so that unknown-key checks pass.
type testFile struct {
	Operator Config             `toml:"operator"`
	Subjects map[string]Subject `toml:"subjects"`
	Node     map[string]any     `toml:"node"`
	Limits   []map[string]any   `toml:"limits"`
}

// loadFile loads a TOML file with config.Load, as the CLI does.
func loadFile(t testing.TB, path string) *testFile {
	t.Helper()
	f := &testFile{Operator: DefaultConfig()}
	if err := config.Load(path, f); err != nil {
		t.Fatalf("config.Load(%q): %v", path, err)
	}
	return f
}

// shipped returns the [operator] section and the ratelimiter subject of
// ../config.toml, loaded afresh (a test may edit them), with a fast
// interval and the DB in the test's directory. The subject's credentials
// come from adminTokenEnv.
func shipped(t testing.TB) (Config, Subject) {
	t.Helper()
	f := loadFile(t, "../config.toml")
	s, ok := f.Subjects["ratelimiter"]
	if !ok {
		t.Fatal("../config.toml has no [subjects.ratelimiter]")
	}
	cfg := f.Operator
	cfg.Interval = config.Duration{Duration: 250 * time.Millisecond}
	cfg.DB = filepath.Join(t.TempDir(), "operator.db")
	s.CredentialsEnv = adminTokenEnv
	return cfg, s
}

// setTimings shortens (or lengthens) one invariant's timers.
func setTimings(t testing.TB, s *Subject, name string, grace, keep time.Duration) {
	t.Helper()
	for i := range s.Invariants {
		if s.Invariants[i].Name == name {
			s.Invariants[i].GracePeriod.Duration = grace
			s.Invariants[i].KeepFiringFor.Duration = keep
			return
		}
	}
	t.Fatalf("the subject has no invariant %q", name)
}

func invariant(t testing.TB, s *Subject, name string) Invariant {
	t.Helper()
	for _, inv := range s.Invariants {
		if inv.Name == name {
			return inv
		}
	}
	t.Fatalf("the subject has no invariant %q", name)
	return Invariant{}
}

// nodeConfig is nodetest's fast node on srv, with the subject's admin
// token and a small limit for hot:* keys.
func nodeConfig(id string, srv *redistest.Server) node.Config {
	cfg := nodetest.Config(id, srv)
	cfg.AdminToken = adminToken
	cfg.Limits = []limiter.Limit{
		{KeyPattern: "*", MaxRequests: 100000, WindowSeconds: 60},
		{KeyPattern: "hot:*", MaxRequests: 10, WindowSeconds: 60},
	}
	return cfg
}

// httpDo sends one request, with a JSON Content-Type when it has a body,
// and returns the status and body.
func httpDo(t testing.TB, method, u, body string, hdr ...string) (int, []byte) {
	t.Helper()
	if body != "" {
		hdr = append([]string{"Content-Type", "application/json"}, hdr...)
	}
	resp := testkit.Call(t, method, u, body, nil, hdr...)
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// flood sends n checks on key to base, one at a time, and returns how many
// were denied.
func flood(t testing.TB, base, key string, n int) int {
	t.Helper()
	denied := 0
	for range n {
		status, body := httpDo(t, "POST", base+"/api/v1/check", fmt.Sprintf(`{"key":%q,"cost":1}`, key))
		switch status {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			denied++
		default:
			t.Fatalf("check %q on %s: HTTP %d %s", key, base, status, body)
		}
	}
	return denied
}

// blocks lists the keys GET /api/v1/blocks reports.
func blocks(t testing.TB, base string) []string {
	t.Helper()
	status, body := httpDo(t, "GET", base+"/api/v1/blocks", "")
	if status != http.StatusOK {
		t.Fatalf("GET %s/api/v1/blocks: HTTP %d %s", base, status, body)
	}
	var out struct {
		Blocks []struct {
			Key string `json:"key"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /api/v1/blocks: %v in %s", err, body)
	}
	keys := []string{}
	for _, b := range out.Blocks {
		keys = append(keys, b.Key)
	}
	return keys
}

// hotKeys lists the keys GET /api/v1/hot-keys reports.
func hotKeys(t testing.TB, base string) []string {
	t.Helper()
	status, body := httpDo(t, "GET", base+"/api/v1/hot-keys", "")
	if status != http.StatusOK {
		t.Fatalf("GET %s/api/v1/hot-keys: HTTP %d %s", base, status, body)
	}
	var out struct {
		Hot []struct {
			Key string `json:"key"`
		} `json:"hot_keys"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /api/v1/hot-keys: %v in %s", err, body)
	}
	keys := []string{}
	for _, h := range out.Hot {
		keys = append(keys, h.Key)
	}
	return keys
}

// opEnv is one operator on its own DB file.
type opEnv struct {
	op    *Operator
	store *Store
	logs  *testkit.Buffer
}

// newOp opens the store at cfg.DB and makes an operator on it; both are
// closed when the test ends.
func newOp(t testing.TB, cfg Config, subj Subject, urls []string, now func() time.Time) *opEnv {
	t.Helper()
	st, err := OpenStore(cfg.DB)
	if err != nil {
		t.Fatalf("OpenStore(%q): %v", cfg.DB, err)
	}
	t.Cleanup(func() { st.Close() })
	return newOpOn(t, cfg, subj, urls, now, st)
}

// newOpOn is newOp on a store already open.
func newOpOn(t testing.TB, cfg Config, subj Subject, urls []string, now func() time.Time, st *Store) *opEnv {
	t.Helper()
	logs := &testkit.Buffer{}
	op, err := New(cfg, subj, urls, st, ResolveSecrets(cfg, subj, os.Getenv), testkit.Logger(t, slog.LevelDebug, logs), now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &opEnv{op: op, store: st, logs: logs}
}

// tick runs one Tick and fails the test on an error.
func (e *opEnv) tick(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.op.Tick(ctx); err != nil {
		t.Fatalf("Tick: %v", err)
	}
}

// tickets returns every ticket, oldest first.
func (e *opEnv) tickets(t testing.TB) []Ticket {
	t.Helper()
	ts, err := e.store.Tickets(context.Background(), TicketFilter{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].ID < ts[j].ID })
	return ts
}

// withKey returns the tickets with key, oldest first.
func (e *opEnv) withKey(t testing.TB, key string) []Ticket {
	t.Helper()
	var out []Ticket
	for _, tk := range e.tickets(t) {
		if tk.Key == key {
			out = append(out, tk)
		}
	}
	return out
}

// proposals returns a ticket's proposals (ticket 0: all), oldest first.
func (e *opEnv) proposals(t testing.TB, ticket int64) []Proposal {
	t.Helper()
	ps, err := e.store.Proposals(context.Background(), ProposalFilter{TicketID: ticket})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].ID < ps[j].ID })
	return ps
}

func (e *opEnv) audit(t testing.TB, ticket int64) []AuditEntry {
	t.Helper()
	a, err := e.store.AuditLog(context.Background(), ticket, 0)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func keys(ts []Ticket) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s(#%d %s)", t.Key, t.ID, t.Status))
	}
	return out
}

// recorder is a reverse proxy in front of one base URL that records every
// request it forwards.
type recorder struct {
	URL  string
	mu   sync.Mutex
	seen []string // "METHOD /path"
}

func startRecorder(t testing.TB, target string) *recorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	r := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, req.Method+" "+req.URL.EscapedPath())
		r.mu.Unlock()
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// queueService is the stand-in for a second subject: a job queue whose
// workers can get stuck, with an endpoint to restart one. It knows nothing
// of the operator; the operator knows it only from testdata/queue.toml.
type queueService struct {
	URL string
	srv *httptest.Server

	mu        sync.Mutex
	stuck     map[string]bool
	order     []string
	restarts  []queueCall
	statusN   int
	firstGet  time.Time      // of /status
	down      bool           // /status answers 503
	keepStuck bool           // a restart does not help
	extra     map[string]any // more fields in every worker of /status
}

// queueCall is one POST /workers/{name}/restart as the service saw it.
type queueCall struct {
	Name, Auth, Body string
}

func startQueue(t testing.TB, workers map[string]bool) *queueService {
	t.Helper()
	q := &queueService{stuck: map[string]bool{}}
	for name, stuck := range workers {
		q.stuck[name] = stuck
		q.order = append(q.order, name)
	}
	sort.Strings(q.order)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.statusN++
		if q.firstGet.IsZero() {
			q.firstGet = time.Now()
		}
		if q.down {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		list := []map[string]any{}
		for _, name := range q.order {
			w := map[string]any{"name": name, "stuck": q.stuck[name]}
			for k, v := range q.extra {
				w[k] = v
			}
			list = append(list, w)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"workers": list})
	})
	mux.HandleFunc("POST /workers/{name}/restart", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q.mu.Lock()
		defer q.mu.Unlock()
		name := r.PathValue("name")
		q.restarts = append(q.restarts, queueCall{Name: name, Auth: r.Header.Get("Authorization"), Body: string(body)})
		if r.Header.Get("Authorization") != "Bearer "+queueToken {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		if _, ok := q.stuck[name]; !ok {
			http.Error(w, `{"error":"no such worker"}`, http.StatusNotFound)
			return
		}
		if !q.keepStuck {
			q.stuck[name] = false
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"restarted":%q}`, name)
	})
	q.srv = httptest.NewServer(mux)
	t.Cleanup(q.srv.Close)
	q.URL = q.srv.URL
	return q
}

func (q *queueService) calls() []queueCall {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queueCall(nil), q.restarts...)
}

// statuses is how many GET /status it answered, and when the first came.
func (q *queueService) statuses() (int, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.statusN, q.firstGet
}

func (q *queueService) set(f func(q *queueService)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f(q)
}

// queueSubject loads testdata/queue.toml: the [operator] section (DB moved
// to the test's directory) and the queue subject.
func queueSubject(t testing.TB) (Config, Subject) {
	t.Helper()
	f := loadFile(t, "testdata/queue.toml")
	s, ok := f.Subjects["queue"]
	if !ok {
		t.Fatal("testdata/queue.toml has no [subjects.queue]")
	}
	cfg := f.Operator
	cfg.DB = filepath.Join(t.TempDir(), "queue.db")
	return cfg, s
}

// dbBytes is the content of the SQLite file and its WAL and journal.
func dbBytes(t testing.TB, path string) []byte {
	t.Helper()
	var all []byte
	for _, p := range []string{path, path + "-wal", path + "-journal", path + "-shm"} {
		b, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if len(all) == 0 {
		t.Fatalf("no database at %s", path)
	}
	return all
}
