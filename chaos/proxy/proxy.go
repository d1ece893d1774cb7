// Package proxy is a TCP fault proxy: it sits between clients and a server
// (the nodes and Redis, in chaos runs) and delays, throttles, holds, resets
// or refuses their bytes on demand, per direction and for a share of the
// connections. It is driven in process or over its small HTTP API, knows
// nothing of Redis or of the rate limiter, and imports nothing from the
// project, so `ratelimiter chaos proxy` runs it on its own.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy fault types.
const (
	Latency   = "latency"    // delay every chunk by latency ± jitter
	Bandwidth = "bandwidth"  // cap the byte rate
	Blackhole = "blackhole"  // accept and hold every byte: nothing is answered
	ResetPeer = "reset_peer" // reset the connection at its next byte
	Down      = "down"       // refuse connections and cut the open ones
)

// Directions a proxy fault acts on.
const (
	Upstream   = "upstream"   // client to server (requests)
	Downstream = "downstream" // server to client (answers)
	Both       = "both"
)

// Fault is one fault set on the proxy. Toxicity is the share of
// connections it affects; each connection draws its number once, so a 0.5
// fault always hits the same half of a connection pool.
type Fault struct {
	Name      string  `toml:"name" json:"name"`
	Type      string  `toml:"type" json:"type"`
	Direction string  `toml:"direction" json:"direction,omitempty"` // default both; ignored by down
	Toxicity  float64 `toml:"toxicity" json:"toxicity,omitempty"`   // (0,1]; omitted means 1
	LatencyMs int     `toml:"latency_ms" json:"latency_ms,omitempty"`
	JitterMs  int     `toml:"jitter_ms" json:"jitter_ms,omitempty"`
	RateKBps  int     `toml:"rate_kbps" json:"rate_kbps,omitempty"` // bandwidth, KiB per second
}

// Normalize fills the defaults and checks every field.
func (f *Fault) Normalize() error {
	if f.Name == "" {
		f.Name = f.Type
	}
	if f.Direction == "" {
		f.Direction = Both
	}
	if f.Toxicity == 0 {
		f.Toxicity = 1
	}
	var errs []error
	switch f.Type {
	case Latency:
		if f.LatencyMs <= 0 {
			errs = append(errs, errors.New("latency_ms must be positive"))
		}
		if f.JitterMs < 0 || f.JitterMs > f.LatencyMs {
			errs = append(errs, errors.New("jitter_ms must be between 0 and latency_ms"))
		}
	case Bandwidth:
		if f.RateKBps <= 0 {
			errs = append(errs, errors.New("rate_kbps must be positive"))
		}
	case Blackhole, ResetPeer, Down:
	default:
		errs = append(errs, fmt.Errorf("unknown type %q (want latency, bandwidth, blackhole, reset_peer or down)", f.Type))
	}
	if f.Direction != Upstream && f.Direction != Downstream && f.Direction != Both {
		errs = append(errs, fmt.Errorf("unknown direction %q (want upstream, downstream or both)", f.Direction))
	}
	if f.Toxicity < 0 || f.Toxicity > 1 {
		errs = append(errs, errors.New("toxicity must be in (0, 1]"))
	}
	return errors.Join(errs...)
}

func (f *Fault) acts(dir string, l *link) bool {
	return (f.Direction == Both || f.Direction == dir) && l.draw < f.Toxicity
}

// faultSet is an immutable snapshot of the faults; changed is closed when
// it is replaced, which wakes the connections that hold data.
type faultSet struct {
	faults  []Fault
	changed chan struct{}
}

// Proxy forwards TCP connections from its listen address to one upstream
// and applies the faults set on it.
type Proxy struct {
	listen, upstream string
	log              *slog.Logger

	set atomic.Pointer[faultSet]

	mu     sync.Mutex
	ln     net.Listener // nil while a full "down" fault holds the port closed
	links  map[*link]struct{}
	rng    *rand.Rand
	closed bool
	wg     sync.WaitGroup
	dialTO time.Duration
}

// New listens on listen (use port 0 for a free one) and forwards to
// upstream. Run serves it.
func New(listen, upstream string, log *slog.Logger) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", listen, err)
	}
	p := &Proxy{
		listen: ln.Addr().String(), upstream: upstream, log: log, ln: ln,
		links: map[*link]struct{}{}, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		dialTO: 5 * time.Second,
	}
	p.set.Store(&faultSet{changed: make(chan struct{})})
	return p, nil
}

// Addr is the address clients connect to, fixed for the proxy's life.
func (p *Proxy) Addr() string { return p.listen }

// Upstream is the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Run accepts connections until ctx ends, then closes every connection and
// returns once all its goroutines have exited.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	p.startAccepting()
	p.mu.Unlock()
	<-ctx.Done()
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for l := range p.links {
		l.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// startAccepting runs an accept loop on p.ln; p.mu is held.
func (p *Proxy) startAccepting() {
	ln := p.ln
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed: by Run's end or by a "down" fault
			}
			p.accept(c)
		}
	})
}

func (p *Proxy) accept(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return
	}
	l := &link{p: p, client: c, draw: p.rng.Float64(), done: make(chan struct{})}
	for _, f := range p.set.Load().faults {
		if f.Type == Down && l.draw < f.Toxicity {
			c.Close() // a partial "down" refuses this share of connections
			return
		}
	}
	p.links[l] = struct{}{}
	p.wg.Go(l.run)
}

// Faults lists the faults now set, by name.
func (p *Proxy) Faults() []Fault {
	return append([]Fault{}, p.set.Load().faults...)
}

// Connections is the number of open client connections.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Set adds a fault, or replaces the one with the same name.
func (p *Proxy) Set(f Fault) (Fault, error) {
	if err := f.Normalize(); err != nil {
		return f, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fs := []Fault{f}
	for _, g := range p.set.Load().faults {
		if g.Name != f.Name {
			fs = append(fs, g)
		}
	}
	p.replace(fs)
	p.log.Info("fault set", "fault", f.Name, "type", f.Type, "direction", f.Direction, "toxicity", f.Toxicity)
	return f, nil
}

// Clear removes the named fault and reports whether it was set.
func (p *Proxy) Clear(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	var fs []Fault
	found := false
	for _, g := range p.set.Load().faults {
		if g.Name == name {
			found = true
		} else {
			fs = append(fs, g)
		}
	}
	if found {
		p.replace(fs)
		p.log.Info("fault cleared", "fault", name)
	}
	return found
}

// ClearAll removes every fault.
func (p *Proxy) ClearAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.set.Load().faults) > 0 {
		p.replace(nil)
		p.log.Info("all faults cleared")
	}
}

// replace installs a new fault set and applies what acts at once: a full
// "down" closes the port and cuts every connection, a partial one cuts its
// share; clearing it opens the port again. p.mu is held.
func (p *Proxy) replace(fs []Fault) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	old := p.set.Swap(&faultSet{faults: fs, changed: make(chan struct{})})
	close(old.changed)
	down := 0.0
	for _, f := range fs {
		if f.Type == Down {
			down = max(down, f.Toxicity)
		}
	}
	for l := range p.links {
		if l.draw < down {
			l.close()
		}
	}
	switch {
	case p.closed:
	case down >= 1 && p.ln != nil:
		p.ln.Close()
		p.ln = nil
	case down < 1 && p.ln == nil:
		ln, err := net.Listen("tcp", p.listen)
		if err != nil {
			// The port was taken while it was closed: stay down, loudly.
			p.log.Error("cannot reopen the proxy port", "addr", p.listen, "err", err)
			return
		}
		p.ln = ln
		p.startAccepting()
	}
}

// link is one proxied connection: a client side and an upstream side, with
// a pump per direction.
type link struct {
	p        *Proxy
	client   net.Conn
	server   net.Conn
	draw     float64 // against each fault's toxicity
	done     chan struct{}
	doneOnce sync.Once
}

func (l *link) run() {
	defer l.close()
	d := net.Dialer{Timeout: l.p.dialTO}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	server, err := d.DialContext(ctx, "tcp", l.p.upstream)
	cancel()
	if err != nil {
		l.p.log.Debug("upstream dial failed", "upstream", l.p.upstream, "err", err)
		return
	}
	l.p.mu.Lock()
	l.server = server
	closing := l.isDone()
	l.p.mu.Unlock()
	if closing {
		server.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { l.pump(Upstream, l.client, server) })
	wg.Go(func() { l.pump(Downstream, server, l.client) })
	wg.Wait()
}

func (l *link) isDone() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// close cuts both sides; any goroutine may call it, any number of times.
func (l *link) close() {
	l.doneOnce.Do(func() {
		close(l.done)
		l.client.Close()
		if l.server != nil {
			l.server.Close()
		}
		go func() { // p.mu may be held by our caller
			l.p.mu.Lock()
			delete(l.p.links, l)
			l.p.mu.Unlock()
		}()
	})
}

// reset closes both sides with an RST instead of a FIN.
func (l *link) reset() {
	for _, c := range []net.Conn{l.client, l.server} {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	l.close()
}

type chunk struct {
	data []byte
	due  time.Time
	rate int // bytes per second, 0 for unlimited
}

// pump copies one direction. A reader goroutine stamps each chunk with the
// faults acting when it arrived; the writer holds, delays and paces it.
// The channel between them is small, so held data pushes back on the
// sender through TCP, as a real partition would.
func (l *link) pump(dir string, src, dst net.Conn) {
	defer l.close()
	ch := make(chan chunk, 16)
	go func() {
		defer close(ch)
		var last time.Time
		for {
			buf := make([]byte, 16<<10)
			n, err := src.Read(buf)
			if n > 0 {
				c, ok := l.stamp(dir, buf[:n], &last)
				if !ok {
					l.reset()
					return
				}
				select {
				case ch <- c:
				case <-l.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if !l.hold(dir) || !l.sleepUntil(c.due) {
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
		if c.rate > 0 && !l.sleepUntil(time.Now().Add(time.Duration(len(c.data))*time.Second/time.Duration(c.rate))) {
			return
		}
	}
}

// stamp applies the faults acting now to a chunk just read; false means
// the connection must be reset.
func (l *link) stamp(dir string, data []byte, last *time.Time) (chunk, bool) {
	now := time.Now()
	var delay time.Duration
	c := chunk{data: data}
	faults := l.p.set.Load().faults
	for i := range faults {
		f := &faults[i]
		if !f.acts(dir, l) {
			continue
		}
		switch f.Type {
		case ResetPeer:
			return c, false
		case Latency:
			d := time.Duration(f.LatencyMs) * time.Millisecond
			if f.JitterMs > 0 {
				d += time.Duration((rand.Float64()*2 - 1) * float64(f.JitterMs) * float64(time.Millisecond))
			}
			delay += d
		case Bandwidth:
			r := f.RateKBps << 10
			if c.rate == 0 || r < c.rate {
				c.rate = r
			}
		}
	}
	// Jitter must not reorder the stream.
	c.due = now.Add(delay)
	if c.due.Before(*last) {
		c.due = *last
	}
	*last = c.due
	return c, true
}

// hold waits while a blackhole acts on this direction; false means the
// link closed meanwhile.
func (l *link) hold(dir string) bool {
	for {
		s := l.p.set.Load()
		held := false
		for i := range s.faults {
			if s.faults[i].Type == Blackhole && s.faults[i].acts(dir, l) {
				held = true
			}
		}
		if !held {
			return true
		}
		select {
		case <-s.changed:
		case <-l.done:
			return false
		}
	}
}

func (l *link) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-l.done:
		return false
	}
}
