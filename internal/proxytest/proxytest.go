// Package proxytest runs the reverse proxies people put in front of the
// nodes, for tests: Debian's nginx and caddy as the test's user, with their
// configuration, pid, temporary files and logs in the test's temporary
// directory, on free loopback ports, stopped at cleanup. The configuration
// under test comes from the documentation (Block), so the documented one is
// the tested one. It never skips: a missing binary fails the test.
package proxytest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

// Block returns the first fenced code block of the markdown file at path
// whose info string is lang (```nginx), failing the test when there is none.
func Block(t testing.TB, path, lang string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	var b strings.Builder
	in := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.TrimSpace(line) == "```"+lang:
			in = true
		case in && strings.TrimSpace(line) == "```":
			return b.String()
		case in:
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	t.Fatalf("proxytest: %s has no ```%s block", path, lang)
	return ""
}

// Replace substitutes each old string of pairs (old, new, old, new...) in
// s, failing the test when one does not occur: a documented address that
// the test no longer finds means the document and the test have drifted.
func Replace(t testing.TB, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("proxytest: the configuration no longer contains %q", pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is one proxy process.
type Proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	out  *testkit.Buffer
}

// Nginx runs /usr/sbin/nginx in the foreground, as one process, with
// server (http-level directives: upstreams and servers) included in a
// main configuration that keeps every file in a temporary directory. It
// returns once listen (an address server listens on) accepts connections.
func Nginx(t testing.TB, server, listen string) *Proc {
	t.Helper()
	dir := t.TempDir()
	site := filepath.Join(dir, "site.conf")
	write(t, site, server)
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 512; }
http {
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    access_log off;
    include %[2]s;
}
`, dir, site)
	main := filepath.Join(dir, "nginx.conf")
	write(t, main, conf)
	p := start(t, "nginx", dir, "/usr/sbin/nginx", "-p", dir, "-c", main, "-e", filepath.Join(dir, "error.log"))
	p.waitListening(t, listen, filepath.Join(dir, "error.log"))
	return p
}

// Caddy runs caddy with caddyfile (adapted by caddy itself), its data and
// configuration directories in a temporary directory, and returns once
// listen accepts connections.
func Caddy(t testing.TB, caddyfile, listen string) *Proc {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	write(t, path, caddyfile)
	p := start(t, "caddy", dir, "caddy", "run", "--config", path, "--adapter", "caddyfile")
	p.waitListening(t, listen, "")
	return p
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func start(t testing.TB, name, dir, bin string, args ...string) *Proc {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("proxytest: %s is not installed (apt-get install %s; these tests must not be skipped): %v", bin, name, err)
	}
	p := &Proc{name: name, cmd: exec.Command(path, args...), done: make(chan struct{}), out: &testkit.Buffer{}}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("proxytest: cannot start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("proxytest: %s output:\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *Proc) waitListening(t testing.TB, addr, logPath string) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.done:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("proxytest: %s exited at start:\n%s%s", p.name, p.out.String(), log)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxytest: %s did not listen on %s within %s:\n%s", p.name, addr, readyTimeout, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *Proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}
