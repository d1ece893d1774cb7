package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// process is a child the runner started: redis-server or a node. It dies
// with the runner (Pdeathsig), so even a runner killed with SIGKILL leaves
// nothing behind.
type process struct {
	name    string
	newCmd  func() *exec.Cmd
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
}

// start runs a fresh process; its stdout and stderr append to logPath.
func (p *process) start() error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot open the log of %s: %w", p.name, err)
	}
	cmd := p.newCmd()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := startFromSpawner(cmd); err != nil {
		f.Close()
		return fmt.Errorf("cannot start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.paused = cmd, done, false
	p.mu.Unlock()
	return nil
}

// Linux sends a child's Pdeathsig when the thread that forked it exits,
// not the process, and the Go runtime ends a thread when a goroutine locked
// to it returns: loadgen's pacer does, in this process, whenever a load or
// a flood stops, and its thread may be one that forked nodes earlier (the
// hot-key scenario saw all three nodes SIGKILLed when its flood stopped).
// So every child is forked by one goroutine locked to its thread for the
// life of the process.
var (
	spawnOnce  sync.Once
	spawnCalls chan spawnCall
)

type spawnCall struct {
	cmd  *exec.Cmd
	done chan error
}

func startFromSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCalls = make(chan spawnCall)
		go func() {
			runtime.LockOSThread() // never unlocked, and the goroutine never returns
			for c := range spawnCalls {
				c.done <- c.cmd.Start()
			}
		}()
	})
	c := spawnCall{cmd: cmd, done: make(chan error, 1)}
	spawnCalls <- c
	return <-c.done
}

// PID is the running process's id, or 0.
func (p *process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exited() {
		return 0
	}
	return p.cmd.Process.Pid
}

// answering is true when the process runs and is not paused.
func (p *process) answering() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exited() && !p.paused
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig when the process runs; SIGSTOP and SIGCONT are tracked
// so that stopping a paused process can wake it first.
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exited() {
		return fmt.Errorf("%s is not running", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("cannot signal %s: %w", p.name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
		// kill(2) returns before every thread has stopped: a request that
		// arrives meanwhile can still be answered. Wait for the group stop so
		// that "paused" means paused.
		return waitStopped(p.cmd.Process.Pid, 2*time.Second)
	case syscall.SIGCONT:
		p.paused = false
	}
	return nil
}

// waitStopped polls /proc until every thread of pid is in the stopped
// state ('T').
func waitStopped(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if allStopped(pid) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d did not stop within %v of SIGSTOP", pid, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

func allStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses and
		// may itself contain ") ".
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			return false
		}
	}
	return true
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// stop asks the process to end (SIGCONT first if paused, then SIGTERM),
// and kills it after grace.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done, paused := p.cmd, p.done, p.paused
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	if paused {
		cmd.Process.Signal(syscall.SIGCONT)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

// freeAddr picks a free loopback port. Another process may take it before
// it is used; callers that bind it report that plainly.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// finalError is a check's failure that waiting cannot cure (the process
// it waits for exited): waitFor returns it at once.
type finalError struct{ error }

func (e finalError) Unwrap() error { return e.error }

// waitFor polls check every 100 ms until it succeeds, ctx ends or timeout
// passes, or check fails with a finalError.
func waitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if errors.As(err, new(finalError)) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
