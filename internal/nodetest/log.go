package nodetest

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logger logs records at level and above to the test (shown on failure or
// with -v) and to every writer in also.
func Logger(t testing.TB, level slog.Level, also ...io.Writer) *slog.Logger {
	w := io.MultiWriter(append([]io.Writer{testWriter{t}}, also...)...)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Buffer is a bytes.Buffer safe for concurrent writers (a node, a child
// process, a command running in-process) and the test reading it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
