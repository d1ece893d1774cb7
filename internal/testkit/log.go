package testkit

import (
	"io"
	"log/slog"
	"strings"
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
