package testkit

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Child is the test binary re-run as a child process (to be SIGKILLed or
// SIGTERMed for real), with the first line it wrote to stdout.
type Child struct {
	Cmd    *exec.Cmd
	Line   string  // the first line of stdout, trimmed: by convention its address
	Stderr *Buffer // everything it wrote to stderr
}

// StartChild re-runs the test binary with no tests and env=payload set,
// and returns once the child wrote its first line. The package's TestMain
// looks for env (os.Getenv) and runs the child's part instead of the
// tests. The child is killed at cleanup, and its stderr is logged if the
// test failed; a child that writes no line within 10 s fails the test.
func StartChild(t testing.TB, name, env, payload string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+payload)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child %s stderr:\n%s", name, stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		s, _ := r.ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case l := <-line:
		if l == "" {
			t.Fatalf("child %s exited without its first line (does TestMain look for %s first?); stderr:\n%s", name, env, stderr.String())
		}
		return &Child{Cmd: cmd, Line: l, Stderr: stderr}
	case <-time.After(10 * time.Second):
		t.Fatalf("child %s did not start; stderr:\n%s", name, stderr.String())
	}
	return nil
}
