package chaos

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// A paused process is reported paused only once every thread has stopped,
// and a running one never counts as stopped.
func TestSignalStopWaitsForTheGroupStop(t *testing.T) {
	p := &process{name: "sleep", newCmd: func() *exec.Cmd { return exec.Command("sleep", "30") },
		logPath: filepath.Join(t.TempDir(), "sleep.log")}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	defer p.kill()
	if err := waitStopped(p.PID(), 50*time.Millisecond); err == nil {
		t.Fatal("a running process was reported stopped")
	}
	if err := p.signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if !allStopped(p.PID()) || p.answering() {
		t.Fatalf("after SIGSTOP: stopped %v, answering %v", allStopped(p.PID()), p.answering())
	}
	if err := p.signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !p.answering() {
		t.Fatal("resumed process not answering")
	}
}

// Linux sends Pdeathsig when the thread that forked a child exits, not the
// process, and the Go runtime ends a thread when a goroutine locked to it
// returns, as loadgen's pacer does (the chaos runner runs loadgen in the
// same process). A child must outlive whatever thread its start ran on.
func TestChildOutlivesTheThreadThatStartedIt(t *testing.T) {
	p := &process{name: "sleep", newCmd: func() *exec.Cmd { return exec.Command("sleep", "30") },
		logPath: filepath.Join(t.TempDir(), "sleep.log")}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		started <- p.start()
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	defer p.kill()
	time.Sleep(300 * time.Millisecond) // the locked thread exits meanwhile
	if p.exited() {
		t.Fatal("the child died with the thread that started it (its Pdeathsig fired)")
	}
}
