// Package redistest runs throwaway Redis deployments for tests: one
// redis-server (Start), a Redis Cluster of three masters and three replicas
// (StartCluster), or a primary and replica watched by three sentinels
// (StartSentinel). Every process runs on a free loopback port, in the
// test's temporary directory, and is killed at cleanup; single members can
// be killed and restarted to test failovers. It never skips: a machine
// without redis-server or redis-cli fails the test, so CI cannot go green
// without having run the Redis half of the suite.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

const (
	readyTimeout = 5 * time.Second  // from exec to the first PONG
	stopTimeout  = 10 * time.Second // from SIGTERM to exit, then SIGKILL
	portAttempts = 5                // fresh ports tried when the one picked is taken
)

// Server is one redis-server process. Its methods may be called from any
// goroutine; Restart must not race with itself.
type Server struct {
	Addr string // 127.0.0.1:PORT, fixed for the server's life, restarts included

	path string   // redis-server binary
	args []string // full command line after the binary

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}   // closed when cmd has exited
	out  *testkit.Buffer // the running process's stdout and stderr
}

// Start runs redis-server without persistence on a free loopback port and
// waits until it answers PING. extraArgs are appended to the command line
// (for example "--maxmemory", "10mb"). The server is killed at cleanup.
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return startWith(t, func(port int, dir string) ([]string, error) {
		return append(serverArgs(port, dir), extraArgs...), nil
	})
}

// serverArgs is the command line of a server without persistence.
func serverArgs(port int, dir string) []string {
	return []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir,
	}
}

// startWith runs redis-server with the arguments args returns for a free
// port and a fresh directory, retrying with another port when the one
// picked was taken meanwhile. The process is killed at cleanup.
func startWith(t testing.TB, args func(port int, dir string) ([]string, error)) *Server {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not on PATH (install Redis 7 or newer; these tests must not be skipped): %v", err)
	}
	dir := t.TempDir()
	var lastErr error
	for range portAttempts {
		port, err := testkit.FreePort()
		if err != nil {
			t.Fatalf("redistest: cannot find a free port: %v", err)
		}
		a, err := args(port, dir)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), path: path, args: a}
		err = s.start()
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("redistest: last lines of redis-server on %s:\n%s", s.Addr, tail(s.output(), 20))
				}
				s.Kill()
			})
			return s
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// URL is the server's address as a redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr }

// Running reports whether the process is up (started and not exited).
func (s *Server) Running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to exit. It is a no-op when
// the server is not running.
func (s *Server) Kill() { s.signal(syscall.SIGKILL, 0) }

// Stop asks the server to shut down with SIGTERM and waits for it to exit,
// killing it if it takes longer than 10 s. It is a no-op when the server is
// not running.
func (s *Server) Stop() { s.signal(syscall.SIGTERM, stopTimeout) }

// Restart starts the server again on the same port and directory and waits
// for PING; a server that is still running is killed first. With
// persistence off, the new process starts empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	// The old process's port can stay unavailable for a moment (a client
	// holding it, the kernel releasing it): retry until the ready deadline.
	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			t.Fatalf("redistest: cannot restart redis-server on %s: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client returns a new rueidis client connected to the server, closed at
// cleanup. Client-side caching stays on, as in production.
func (s *Server) Client(t testing.TB) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr}})
	if err != nil {
		t.Fatalf("redistest: cannot connect to %s: %v", s.Addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

var errPortTaken = errors.New("port already in use")

// start runs the process and waits for its first PONG.
func (s *Server) start() error {
	out := &testkit.Buffer{}
	cmd := exec.Command(s.path, s.args...)
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", s.path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // an exit status is expected after Kill or Stop
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done, s.out = cmd, done, out
	s.mu.Unlock()

	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-done:
			if strings.Contains(out.String(), "Address already in use") {
				return fmt.Errorf("%s: %w", s.Addr, errPortTaken)
			}
			return fmt.Errorf("redis-server on %s exited at start-up:\n%s", s.Addr, out.String())
		default:
		}
		if ping(s.Addr) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on %s did not answer PING within %v:\n%s", s.Addr, readyTimeout, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// signal sends sig to the running process and waits for it to exit, sending
// SIGKILL after grace when grace is positive.
func (s *Server) signal(sig syscall.Signal, grace time.Duration) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig) // fails only when the process is already gone
	if grace <= 0 {
		<-done
		return
	}
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// ping sends one PING on a fresh connection; the server is ready when it
// answers PONG (not LOADING or an error).
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
