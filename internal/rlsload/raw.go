package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// The raw client speaks gRPC as HTTP/2 frames written by hand, as wrk speaks
// HTTP/1.1 for the HTTP path: every request is encoded once, and one
// goroutine per connection writes requests and reads answers, with no
// goroutine per call. grpc-go's client, by contrast, costs about as much CPU
// per call as the server does, and on a 2-core machine a driver that takes
// a core starves the server it measures.

const shouldRateLimitPath = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

// rawRequests encodes each request as a gRPC message (a 5-byte prefix and
// the protobuf).
func rawRequests(reqs []*rls.RateLimitRequest) ([][]byte, error) {
	out := make([][]byte, len(reqs))
	for i, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			return nil, err
		}
		msg := make([]byte, 5+len(b))
		msg[1], msg[2], msg[3], msg[4] = byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b))
		copy(msg[5:], b)
		out[i] = msg
	}
	return out, nil
}

// rawHeaders are the header blocks of a connection's requests: first is
// the first request's, which adds the fields to the server's HPACK table
// as a client such as Envoy does; rest is every later request's, the same
// fields as indexes into that table (7 bytes), which stay valid since
// nothing else is added.
func rawHeaders(authority string) (first, rest []byte) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	block := func() []byte {
		buf.Reset()
		for _, f := range [][2]string{
			{":method", "POST"}, {":scheme", "http"}, {":path", shouldRateLimitPath}, {":authority", authority},
			{"content-type", "application/grpc"}, {"te", "trailers"},
		} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return bytes.Clone(buf.Bytes())
	}
	return block(), block()
}

// rawConn is one HTTP/2 connection keeping streams calls in flight until
// the deadline.
type rawConn struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	fr      *http2.Framer
	first   []byte // the first request's header block
	headers []byte // every later one's
	bodies  [][]byte
	pick    func() int
	next    uint32               // the next stream id
	started map[uint32]time.Time // by stream id
	window  int64                // the server's connection-level send window
	waiting int                  // calls not sent for want of window
	unacked int64                // DATA bytes read since our last WINDOW_UPDATE
	hist    *hdrhistogram.Histogram
	done    int64
	errs    int64
}

const rawWindow = 1 << 30 // our receive windows: no stream ever needs an update

// runRaw runs one connection and returns its counts and latencies.
func runRaw(target string, streams int, deadline time.Time, bodies [][]byte, pick func() int) (*rawConn, error) {
	conn, err := net.Dial("tcp", target)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := &rawConn{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 64<<10), bodies: bodies, pick: pick,
		next: 1, started: map[uint32]time.Time{}, window: 65535, hist: hdrhistogram.New(1, 10_000_000, 3)}
	c.first, c.headers = rawHeaders(target)
	c.fr = http2.NewFramer(c.w, c.r)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := c.w.WriteString(http2.ClientPreface); err != nil {
		return nil, err
	}
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: rawWindow}); err != nil {
		return nil, err
	}
	if err := c.fr.WriteWindowUpdate(0, rawWindow); err != nil {
		return nil, err
	}
	for range streams {
		c.send()
	}
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	// Calls still in flight past the deadline get 5 s to finish.
	_ = conn.SetReadDeadline(deadline.Add(5 * time.Second))
	for len(c.started) > 0 || c.waiting > 0 {
		if err := c.read(deadline); err != nil {
			return c, err
		}
		// Answers read together send their next calls in one write.
		if c.r.Buffered() == 0 {
			if err := c.w.Flush(); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

// send starts one call, or counts it as waiting while the connection's send
// window is too small for its body.
func (c *rawConn) send() {
	body := c.bodies[c.pick()]
	if int64(len(body)) > c.window {
		c.waiting++
		return
	}
	c.window -= int64(len(body))
	id := c.next
	c.next += 2
	c.started[id] = time.Now()
	block := c.headers
	if id == 1 {
		block = c.first
	}
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true})
	_ = c.fr.WriteData(id, true, body)
}

// read handles one frame; an answer's end starts the next call until the
// deadline.
func (c *rawConn) read(deadline time.Time) error {
	f, err := c.fr.ReadFrame()
	if err != nil {
		return err
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			return c.fr.WriteSettingsAck()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			return c.fr.WritePing(true, f.Data)
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.window += int64(f.Increment)
			for ; c.waiting > 0 && c.window >= int64(len(c.bodies[0])); c.waiting-- {
				c.send()
			}
		}
	case *http2.DataFrame:
		if c.unacked += int64(len(f.Data())); c.unacked > rawWindow/2 {
			c.unacked = 0
			return c.fr.WriteWindowUpdate(0, rawWindow/2)
		}
		if f.StreamEnded() {
			c.finish(f.StreamID, false, deadline)
		}
	case *http2.MetaHeadersFrame:
		if f.StreamEnded() {
			// The trailers, or a trailers-only error answer.
			c.finish(f.StreamID, f.PseudoValue("status") != "" && f.PseudoValue("status") != "200" || grpcStatus(f) != "0", deadline)
		} else if f.PseudoValue("status") != "200" {
			c.finish(f.StreamID, true, deadline)
		}
	case *http2.RSTStreamFrame:
		c.finish(f.StreamID, true, deadline)
	case *http2.GoAwayFrame:
		return fmt.Errorf("server sent GOAWAY (%v)", f.ErrCode)
	}
	return nil
}

func grpcStatus(f *http2.MetaHeadersFrame) string {
	for _, h := range f.RegularFields() {
		if h.Name == "grpc-status" {
			return h.Value
		}
	}
	return ""
}

// finish records the end of a call and starts the next before the
// deadline.
func (c *rawConn) finish(id uint32, failed bool, deadline time.Time) {
	t0, ok := c.started[id]
	if !ok {
		return // already finished (an error answer, then its reset)
	}
	delete(c.started, id)
	if failed {
		c.errs++
	} else {
		c.done++
		_ = c.hist.RecordValue(time.Since(t0).Microseconds())
	}
	if time.Now().Before(deadline) {
		c.send()
	}
}
