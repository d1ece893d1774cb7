package redistest

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/redis/rueidis"
)

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") || s.URL() != "redis://"+s.Addr {
		t.Fatalf("Addr = %q, URL() = %q; want 127.0.0.1:PORT and redis://127.0.0.1:PORT", s.Addr, s.URL())
	}
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	s.Kill()
	if err := ping(s.Addr); err == nil {
		t.Fatalf("PING after Kill succeeded; want the server gone")
	}
	s.Kill() // a second Kill is a no-op, not a hang

	s.Restart(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	// The old client reconnects by itself; persistence is off, so the key is gone.
	_, err := c.Do(ctx, c.B().Get().Key("k").Build()).ToString()
	for i := 0; i < 10 && err != nil && !rueidis.IsRedisNil(err); i++ {
		_, err = c.Do(ctx, c.B().Get().Key("k").Build()).ToString()
	}
	if !rueidis.IsRedisNil(err) {
		t.Fatalf("GET k after Restart: err = %v; want redis nil (empty server)", err)
	}

	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatalf("PING after Stop succeeded; want the server gone")
	}
	s.Restart(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after second Restart: %v", err)
	}
	s.Restart(t) // restarting a running server kills it first
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Restart of a running server: %v", err)
	}
}

func TestStartExtraArgs(t *testing.T) {
	s := Start(t, "--maxmemory", "7mb")
	c := s.Client(t)
	got, err := c.Do(context.Background(), c.B().ConfigGet().Parameter("maxmemory").Build()).AsStrMap()
	if err != nil {
		t.Fatalf("CONFIG GET maxmemory: %v", err)
	}
	if got["maxmemory"] != "7340032" {
		t.Fatalf("maxmemory = %q; want 7340032", got["maxmemory"])
	}
}

// fatalTB records Fatalf instead of failing the real test.
type fatalTB struct {
	*testing.T
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = format
	runtime.Goexit()
}

func TestStartWithoutRedisFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	tb := &fatalTB{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(tb)
		t.Errorf("Start returned without redis-server on PATH; want Fatal")
	}()
	<-done
	if !strings.Contains(tb.msg, "not on PATH") {
		t.Fatalf("Start without redis-server: Fatalf(%q); want a message saying it is not on PATH", tb.msg)
	}
}
