package testkit

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that concurrent writers (a node, a child
// process, a command running in-process) and a test reading it may share:
// it is safe for concurrent Write and String.
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
