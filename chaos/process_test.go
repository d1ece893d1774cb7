package chaos

import (
	"os/exec"
	"path/filepath"
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
