package chaos

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/limiter"
)

// TestGetJSONBounded: a node API document is read up to maxAnswer, and a
// longer one is an error naming the bound. Before, json.Decoder read a
// 64 MiB answer of limits whole (and held every limit in it).
func TestGetJSONBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limits := 1000 // about 57 KB
		if r.URL.Path == "/hostile" {
			limits = 1 << 30
		}
		chunk := []byte(strings.Repeat(`{"key_pattern":"a:*","max_requests":1,"window_seconds":1},`, 100))
		n, _ := w.Write([]byte(`{"limits":[`))
		sent.Add(int64(n))
		for i := 0; i < limits/100 && sent.Load() < 64<<20; i++ {
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
		w.Write([]byte(`{"key_pattern":"a:*","max_requests":1,"window_seconds":1}]}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := &Cluster{http: &http.Client{Timeout: 5 * time.Second}}
	var doc struct {
		Limits []limiter.Limit `json:"limits"`
	}
	if err := c.getJSON(context.Background(), "http://"+ln.Addr().String()+"/ok", &doc); err != nil || len(doc.Limits) != 1001 {
		t.Fatalf("getJSON(1,001 limits) = %v, %d limits", err, len(doc.Limits))
	}
	sent.Store(0)
	err = c.getJSON(context.Background(), "http://"+ln.Addr().String()+"/hostile", &doc)
	t.Logf("hostile answer: %v after %d bytes sent", err, sent.Load())
	if err == nil || !strings.Contains(err.Error(), "larger than 16 MiB") {
		t.Errorf("getJSON(64 MiB answer) = %v; want an error naming the bound", err)
	}
}
