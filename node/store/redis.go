package store

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// RedisStore keeps the cluster state in Redis (standalone, Sentinel or
// Cluster). Every decision is one Lua script on one key (or, on a single
// Redis, one batch script on many keys); the shared hashes all carry the
// hash tag {prefix} so they sit in one Cluster slot and the scripts that
// touch two of them stay legal. Nothing lists or counts keys (KEYS, SCAN,
// DBSIZE): on a Cluster those answer for one master only.
type RedisStore struct {
	opt    rueidis.ClientOption
	prefix string
	// now injects time into the decision scripts; nil in production, where
	// the scripts read Redis TIME. Only tests set it.
	now func() time.Time

	mu     sync.Mutex // serializes connecting
	client atomic.Pointer[rueidis.Client]

	algos                  [limiter.NumAlgorithms]script
	swap, prune, heartbeat script
	readShared             script
	batch                  script
	// batcher groups concurrent checks; nil until the first connection.
	batcher       atomic.Pointer[batcher]
	version, hkey string
	algKey        [limiter.NumAlgorithms]string // data key prefixes, one per algorithm
	algIndex      [limiter.NumAlgorithms]string // 1-based, as BatchScript numbers them
}

type script struct {
	lua *rueidis.Lua
	src string
	sha string
}

func newScript(src string) script {
	sum := sha1.Sum([]byte(src))
	return script{lua: rueidis.NewLuaScript(src), src: src, sha: hex.EncodeToString(sum[:])}
}

// swapLua is a compare-and-set on one hash field that also bumps the
// version. A change of a block (ARGV[4] = "1") is logged in the sorted set
// KEYS[3], the field scored by the version it made, so a node reads only
// the blocks changed since its last sync; the log keeps the newest
// ARGV[5] fields and records in KEYS[4] (floor) the newest version it
// dropped, and names itself (id) by the store's clock when it begins.
const swapLua = `
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
local v = redis.call('INCR', KEYS[2])
if ARGV[4] == '1' then
  if redis.call('HEXISTS', KEYS[4], 'id') == 0 then
    local t = redis.call('TIME')
    redis.call('HSET', KEYS[4], 'id', t[1] .. '.' .. t[2], 'floor', v - 1)
  end
  redis.call('ZADD', KEYS[3], v, ARGV[1])
  local n = redis.call('ZCARD', KEYS[3])
  local max = tonumber(ARGV[5])
  if n > max then
    local gone = redis.call('ZPOPMIN', KEYS[3], n - max)
    redis.call('HSET', KEYS[4], 'floor', gone[#gone])
  end
end
return 1
`

// readSharedLua reads, at one instant, the store's clock, the version, the
// hashes KEYS[5…] whole, and the blocks (KEYS[4]): only those the log
// (KEYS[2], KEYS[3]) holds as changed after version ARGV[1] when the log
// is the one named ARGV[2] and reaches back that far, else (and when the
// version is behind ARGV[1]: a stale replica) all of them.
const readSharedLua = `
local t = redis.call('TIME')
local v = redis.call('GET', KEYS[1]) or '0'
local id = redis.call('HGET', KEYS[3], 'id') or ''
local floor = tonumber(redis.call('HGET', KEYS[3], 'floor') or '0')
local whole = {}
for i = 5, #KEYS do whole[#whole + 1] = redis.call('HGETALL', KEYS[i]) end
if id ~= '' and id == ARGV[2] and tonumber(ARGV[1]) >= floor and tonumber(ARGV[1]) <= tonumber(v) then
  local fields = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
  local changed = {}
  for _, f in ipairs(fields) do
    changed[#changed + 1] = f
    changed[#changed + 1] = redis.call('HGET', KEYS[4], f) or ''
  end
  return {t, v, id, whole, 1, changed}
end
return {t, v, id, whole, 0, redis.call('HGETALL', KEYS[4])}
`

// pruneLua deletes each field (ARGV odd) still holding its value (ARGV
// even), and leaves the version alone (Store.Prune).
const pruneLua = `
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i+1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 0
`

// maxPruneFields is the most fields one prune script takes: 1,000 blocks
// hold Redis about a millisecond, so a sweep of max_blocks (100,000)
// expired blocks never stalls the decisions queued behind it for long,
// and still goes in one round trip (the scripts pipelined).
const maxPruneFields = 1000

// heartbeatLua stamps a node record with the store's clock, so liveness does
// not depend on the nodes' clocks agreeing.
const heartbeatLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', now))
return now
`

// ParseRedisURL turns a Redis URL into client options. The forms (see
// docs/redis.md):
//
//	redis://[user:password@]host:port[/db]     one Redis (rediss:// for TLS)
//	redis://host1:port1,host2:port2,…          seeds of a Redis Cluster
//	redis://s1:26379,s2:26379,…?master_set=M   Sentinel: the sentinels and
//	                                           the name of the monitored set
//
// rueidis' own ?addr=host:port (one more seed per parameter) and its other
// query parameters work too. A Redis Cluster is recognized by asking the
// server, so the same URL form serves one Redis and a cluster.
func ParseRedisURL(raw string) (rueidis.ClientOption, error) {
	expanded, err := expandSeeds(raw)
	if err == nil {
		var opt rueidis.ClientOption
		if opt, err = rueidis.ParseURL(expanded); err == nil && opt.Dialer.Timeout < 0 {
			// The node uses the URL's dial_timeout (0: its own default);
			// a negative one would fail every connect at once.
			err = fmt.Errorf("dial_timeout must not be negative, got %s", opt.Dialer.Timeout)
		}
		if err == nil {
			return opt, nil
		}
	}
	return rueidis.ClientOption{}, fmt.Errorf("invalid redis url %q: %w", redactURL(raw), err)
}

// expandSeeds rewrites comma-separated hosts, which rueidis does not parse,
// into its form: the first host stays, each other becomes ?addr=host.
func expandSeeds(raw string) (string, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", fmt.Errorf("no scheme: want redis://host:port, rediss://… or unix://…")
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	user, hosts := "", rest[:end]
	if at := strings.LastIndex(hosts, "@"); at >= 0 {
		user, hosts = hosts[:at+1], hosts[at+1:]
	}
	if !strings.Contains(hosts, ",") {
		return raw, nil
	}
	seeds := strings.Split(hosts, ",")
	q := url.Values{}
	for _, s := range seeds {
		if s == "" {
			return "", fmt.Errorf("empty host in the list %q", hosts)
		}
	}
	for _, s := range seeds[1:] {
		q.Add("addr", s)
	}
	tail := rest[end:]
	switch {
	case strings.Contains(tail, "?"):
		tail += "&" + q.Encode()
	default:
		tail += "?" + q.Encode()
	}
	return scheme + "://" + user + seeds[0] + tail, nil
}

// redactURL hides the password of a URL that goes into an error message.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	at := strings.LastIndex(rest, "@")
	if slash := strings.IndexAny(rest, "/?"); at < 0 || (slash >= 0 && slash < at) {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// NewRedisStore prepares a store on the Redis at url. It does not connect:
// the first Ping does, and Ping keeps retrying while Redis is away, so a node
// can start before its Redis. A dial (data servers and sentinels alike)
// gives up after the URL's dial_timeout, or t.Dial without one; the
// client's write timeout is that, at least a second.
func NewRedisStore(rawURL, prefix string, t Timeouts) (*RedisStore, error) {
	opt, err := ParseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	opt.DisableCache = true
	if opt.Dialer.Timeout == 0 { // the URL's dial_timeout wins
		opt.Dialer.Timeout = t.Dial
	}
	// rueidis dials sentinels with their own dialer, whose zero timeout
	// would leave a node waiting on an unreachable sentinel for the OS's
	// connect timeout (minutes).
	opt.Sentinel.Dialer.Timeout = opt.Dialer.Timeout
	opt.ConnWriteTimeout = max(opt.Dialer.Timeout, time.Second)
	if prefix == "" {
		prefix = "rl"
	}
	s := &RedisStore{opt: opt, prefix: prefix,
		swap: newScript(swapLua), prune: newScript(pruneLua), readShared: newScript(readSharedLua), heartbeat: newScript(heartbeatLua), batch: newScript(limiter.BatchScript()),
		version: "{" + prefix + "}:version", hkey: "{" + prefix + "}:"}
	for i, row := range limiter.AlgorithmTable {
		s.algos[i] = newScript(row.Lua)
		s.algKey[i] = prefix + ":" + row.Short + ":"
		s.algIndex[i] = strconv.Itoa(i + 1)
	}
	return s, nil
}

func (s *RedisStore) get() rueidis.Client {
	if c := s.client.Load(); c != nil {
		return *c
	}
	return nil
}

func (s *RedisStore) connect() (rueidis.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.get(); c != nil {
		return c, nil
	}
	c, err := rueidis.NewClient(s.opt)
	if err != nil {
		return nil, err
	}
	s.batcher.Store(newBatcher(s.runBatch))
	s.client.Store(&c)
	return c, nil
}

func (s *RedisStore) Ping(ctx context.Context) error {
	c := s.get()
	if c == nil {
		var err error
		if c, err = s.connect(); err != nil {
			return err
		}
	}
	return c.Do(ctx, c.B().Ping().Build()).Error()
}

func (s *RedisStore) Close() {
	if b := s.batcher.Load(); b != nil {
		b.close()
	}
	if c := s.get(); c != nil {
		c.Close()
	}
}

func (s *RedisStore) dataKey(alg int, key string) string { return s.algKey[alg] + key }

// DataKey is the Redis key that holds key's state under l.
func (s *RedisStore) DataKey(l *Limit, key string) string { return s.dataKey(l.alg, key) }

// SetClock makes the decision scripts take their time from now instead of
// Redis TIME. Only tests call it, before the first decision.
func (s *RedisStore) SetClock(now func() time.Time) { s.now = now }

func (s *RedisStore) nowArg() string {
	if s.now == nil {
		return ""
	}
	return strconv.FormatInt(s.now().UnixMicro(), 10)
}

func (s *RedisStore) Decide(ctx context.Context, items []Item) error {
	c := s.get()
	if c == nil {
		for i := range items {
			items[i].Err = ErrUnavailable
		}
		return ErrUnavailable
	}
	if b := s.batcher.Load(); b != nil && len(items) == 1 {
		it := &items[0]
		return b.decide(ctx, it, s.algKey[it.Limit.alg])
	}
	now := s.nowArg()
	s.decideEach(ctx, c, items, now, false)
	for i := range items {
		if items[i].Err != nil {
			return items[i].Err
		}
	}
	return nil
}

// decideEach runs one script call per item, all in one pipeline (on a
// Cluster the client splits it by master), then again for the ones whose
// script a server did not know yet (first use, a restart, a promoted
// replica: script caches are not replicated) once every server has loaded
// the scripts. Sending the source with each of those instead would cost a
// large first batch kilobytes per key and its deadline. keyed says the
// items' keys are data keys already.
func (s *RedisStore) decideEach(ctx context.Context, c rueidis.Client, items []Item, now string, keyed bool) {
	cmds := make(rueidis.Commands, len(items))
	for i := range items {
		cmds[i] = s.evalCmd(c, &items[i], now, keyed)
	}
	var retry []int
	for i, r := range c.DoMulti(ctx, cmds...) {
		if e, ok := rueidis.IsRedisErr(r.Error()); ok && e.IsNoScript() {
			retry = append(retry, i)
			continue
		}
		items[i].Result, items[i].Err = parseResult(r)
	}
	if len(retry) == 0 {
		return
	}
	err := s.loadScripts(ctx, c)
	cmds = cmds[:0]
	for _, i := range retry {
		cmds = append(cmds, s.evalCmd(c, &items[i], now, keyed))
	}
	for j, r := range c.DoMulti(ctx, cmds...) {
		items[retry[j]].Result, items[retry[j]].Err = parseResult(r)
		if err != nil && items[retry[j]].Err != nil {
			items[retry[j]].Err = err
		}
	}
}

func (s *RedisStore) evalCmd(c rueidis.Client, it *Item, now string, keyed bool) rueidis.Completed {
	key := it.Key
	if !keyed {
		key = s.dataKey(it.Limit.alg, key)
	}
	a := it.scriptArgs(now)
	return c.B().Evalsha().Sha1(s.algos[it.Limit.alg].sha).Numkeys(1).Key(key).Arg(a[0], a[1], a[2], a[3], a[4]).Build()
}

// runBatch decides a batch from the batcher, whose keys are data keys
// already: on a single Redis with one call of limiter.BatchScript, on a
// Cluster (where the keys of one script call must share a slot) with one
// script call per item, all handed to the client at once, which pipelines
// them to each master in one write.
func (s *RedisStore) runBatch(ctx context.Context, batch []*Item, sc *scratch) {
	c := s.get()
	if c == nil {
		for _, it := range batch {
			it.Err = ErrUnavailable
		}
		return
	}
	now := s.nowArg()
	if len(batch) == 1 {
		it := batch[0]
		k := [1]string{it.Key}
		a := it.scriptArgs(now)
		it.Result, it.Err = parseResult(s.algos[it.Limit.alg].lua.Exec(ctx, c, k[:], a[:]))
		return
	}
	if c.Mode() == rueidis.ClientModeCluster {
		items := make([]Item, len(batch))
		for i, it := range batch {
			items[i] = *it
		}
		s.decideEach(ctx, c, items, now, true)
		for i, it := range batch {
			it.Result, it.Err = items[i].Result, items[i].Err
		}
		return
	}
	keys, args := sc.keys[:0], append(sc.args[:0], now)
	for _, it := range batch {
		a := it.scriptArgs(now)
		keys = append(keys, it.Key)
		args = append(args, s.algIndex[it.Limit.alg], a[0], a[1], a[2], a[3])
	}
	sc.keys, sc.args = keys, args
	arr, err := s.batch.lua.Exec(ctx, c, keys, args).ToArray()
	if err == nil && len(arr) != len(batch) {
		err = fmt.Errorf("batch script returned %d results for %d keys", len(arr), len(batch))
	}
	for i, it := range batch {
		if err != nil {
			it.Err = err
			continue
		}
		var reply []rueidis.RedisMessage
		if reply, it.Err = arr[i].ToArray(); it.Err == nil {
			it.Result, it.Err = parseReply(reply)
		}
	}
}

// loadScripts loads every decision script on every server the client
// knows: each master of a Cluster, or the one Redis.
func (s *RedisStore) loadScripts(ctx context.Context, c rueidis.Client) error {
	for addr, nc := range c.Nodes() {
		cmds := make(rueidis.Commands, len(s.algos))
		for i := range s.algos {
			cmds[i] = nc.B().ScriptLoad().Script(s.algos[i].src).Build()
		}
		for _, r := range nc.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return fmt.Errorf("cannot load the decision scripts on %s: %w", addr, err)
			}
		}
	}
	return nil
}

func parseResult(r rueidis.RedisResult) (limiter.Result, error) {
	arr, err := r.ToArray()
	if err != nil {
		return limiter.Result{}, err
	}
	return parseReply(arr)
}

// parseReply reads one decision, {allowed, remaining, reset, retry, next}.
func parseReply(arr []rueidis.RedisMessage) (limiter.Result, error) {
	var out limiter.Result
	if len(arr) != 5 {
		return out, fmt.Errorf("decision script returned %d values, want 5", len(arr))
	}
	var v [5]int64
	var err error
	for i := range arr {
		if v[i], err = arr[i].AsInt64(); err != nil {
			return out, err
		}
	}
	return limiter.Result{Allowed: v[0] == 1, Remaining: v[1], ResetAfter: v[2], RetryAfter: v[3], NextAfter: v[4]}, nil
}

func (s *RedisStore) ResetCounter(ctx context.Context, key string) error {
	c := s.get()
	if c == nil {
		return ErrUnavailable
	}
	// One DEL per algorithm: on a Cluster their keys live in different slots.
	cmds := make(rueidis.Commands, 0, len(s.algKey)+1)
	for a := range s.algKey {
		cmds = append(cmds, c.B().Del().Key(s.dataKey(a, key)).Build())
	}
	cmds = append(cmds, c.B().Incr().Key(s.version).Build())
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

func (s *RedisStore) Version(ctx context.Context) (int64, error) {
	c := s.get()
	if c == nil {
		return 0, ErrUnavailable
	}
	v, err := c.Do(ctx, c.B().Get().Key(s.version).Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	return v, err
}

func (s *RedisStore) Read(ctx context.Context, hashes ...string) (Snapshot, error) {
	c := s.get()
	if c == nil {
		return Snapshot{}, ErrUnavailable
	}
	cmds := make(rueidis.Commands, 0, 2+len(hashes))
	cmds = append(cmds, c.B().Time().Build(), c.B().Get().Key(s.version).Build())
	for _, h := range hashes {
		cmds = append(cmds, c.B().Hgetall().Key(s.hkey+h).Build())
	}
	res := c.DoMulti(ctx, cmds...)
	var snap Snapshot
	var err error
	if snap.Now, err = timeOf(res[0]); err != nil {
		return snap, err
	}
	if snap.Version, err = res[1].AsInt64(); err != nil && !rueidis.IsRedisNil(err) {
		return snap, err
	}
	snap.Hashes = make([]map[string]string, len(hashes))
	for i := range hashes {
		if snap.Hashes[i], err = res[2+i].AsStrMap(); err != nil {
			return snap, err
		}
	}
	return snap, nil
}

var maxBlockChangesArg = strconv.Itoa(MaxBlockChanges)

func (s *RedisStore) ReadShared(ctx context.Context, since int64, log string, hashes ...string) (Shared, error) {
	c := s.get()
	if c == nil {
		return Shared{}, ErrUnavailable
	}
	keys := []string{s.version, s.hkey + "blocklog", s.hkey + "blocklog:meta", s.hkey + HashBlocks}
	for _, h := range hashes {
		keys = append(keys, s.hkey+h)
	}
	arr, err := s.readShared.lua.Exec(ctx, c, keys, []string{strconv.FormatInt(since, 10), log}).ToArray()
	if err != nil {
		return Shared{}, err
	}
	if len(arr) != 6 {
		return Shared{}, fmt.Errorf("shared-state script returned %d values, want 6", len(arr))
	}
	var sh Shared
	if sh.Now, err = timeOf(&arr[0]); err != nil {
		return sh, err
	}
	// GET answers a bulk string, which Lua hands back as a string.
	vs, err := arr[1].ToString()
	if err != nil {
		return sh, err
	}
	if sh.Version, err = strconv.ParseInt(vs, 10, 64); err != nil {
		return sh, fmt.Errorf("version %q: %w", vs, err)
	}
	if sh.Log, err = arr[2].ToString(); err != nil {
		return sh, err
	}
	whole, err := arr[3].ToArray()
	if err != nil {
		return sh, err
	}
	if len(whole) != len(hashes) {
		return sh, fmt.Errorf("shared-state script returned %d hashes, want %d", len(whole), len(hashes))
	}
	sh.Hashes = make([]map[string]string, len(hashes))
	for i := range whole {
		if sh.Hashes[i], err = whole[i].AsStrMap(); err != nil {
			return sh, err
		}
	}
	partial, err := arr[4].AsInt64()
	if err != nil {
		return sh, err
	}
	sh.Partial = partial == 1
	if sh.Blocks, err = arr[5].AsStrMap(); err != nil {
		return sh, err
	}
	return sh, nil
}

func (s *RedisStore) ReadField(ctx context.Context, hash, field string) (int64, string, error) {
	c := s.get()
	if c == nil {
		return 0, "", ErrUnavailable
	}
	res := c.DoMulti(ctx, c.B().Time().Build(), c.B().Hget().Key(s.hkey+hash).Field(field).Build())
	now, err := timeOf(res[0])
	if err != nil {
		return 0, "", err
	}
	raw, err := res[1].ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return 0, "", err
	}
	return now, raw, nil
}

func (s *RedisStore) Prune(ctx context.Context, hash string, fields map[string]string) error {
	c := s.get()
	if c == nil {
		return ErrUnavailable
	}
	keys := []string{s.hkey + hash}
	var execs []rueidis.LuaExec
	args := make([]string, 0, 2*min(len(fields), maxPruneFields))
	for f, v := range fields {
		args = append(args, f, v)
		if len(args) == 2*maxPruneFields {
			execs = append(execs, rueidis.LuaExec{Keys: keys, Args: args})
			args = make([]string, 0, 2*maxPruneFields)
		}
	}
	if len(args) > 0 {
		execs = append(execs, rueidis.LuaExec{Keys: keys, Args: args})
	}
	for _, r := range s.prune.lua.ExecMulti(ctx, c, execs...) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

func (s *RedisStore) Swap(ctx context.Context, hash, field, old, new string) (bool, error) {
	c := s.get()
	if c == nil {
		return false, ErrUnavailable
	}
	logged := "0"
	if hash == HashBlocks {
		logged = "1"
	}
	n, err := s.swap.lua.Exec(ctx, c, []string{s.hkey + hash, s.version, s.hkey + "blocklog", s.hkey + "blocklog:meta"},
		[]string{field, old, new, logged, maxBlockChangesArg}).AsInt64()
	return n == 1, err
}

func (s *RedisStore) Heartbeat(ctx context.Context, id, record string) (int64, error) {
	c := s.get()
	if c == nil {
		return 0, ErrUnavailable
	}
	return s.heartbeat.lua.Exec(ctx, c, []string{s.hkey + HashNodes, s.hkey + HashBeats}, []string{id, record}).AsInt64()
}

func (s *RedisStore) Forget(ctx context.Context, id string) error {
	c := s.get()
	if c == nil {
		return ErrUnavailable
	}
	for _, r := range c.DoMulti(ctx,
		c.B().Hdel().Key(s.hkey+HashNodes).Field(id).Build(),
		c.B().Hdel().Key(s.hkey+HashBeats).Field(id).Build(),
		c.B().Hdel().Key(s.hkey+HashDrain).Field(id).Build(),
		c.B().Incr().Key(s.version).Build(),
	) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

func formatInt(v int64) string { return strconv.FormatInt(v, 10) }

// timeOf reads a TIME answer (a command's result or a script's array
// element) as µs since the Unix epoch.
func timeOf(m interface{ AsStrSlice() ([]string, error) }) (int64, error) {
	t, err := m.AsStrSlice()
	if err != nil {
		return 0, err
	}
	if len(t) != 2 {
		return 0, fmt.Errorf("TIME returned %d values", len(t))
	}
	sec, err1 := strconv.ParseInt(t[0], 10, 64)
	usec, err2 := strconv.ParseInt(t[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("TIME returned %q", t)
	}
	return sec*1e6 + usec, nil
}
