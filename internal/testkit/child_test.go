package testkit

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

const childEnv = "RATELIMITER_TESTKIT_CHILD"

func TestMain(m *testing.M) {
	if p := os.Getenv(childEnv); p != "" {
		fmt.Println("hello " + p)
		select {} // until killed at cleanup
	}
	os.Exit(m.Run())
}

func TestStartChild(t *testing.T) {
	c := StartChild(t, "echo", childEnv, "world")
	if c.Line != "hello world" {
		t.Fatalf("first line %q; want %q", c.Line, "hello world")
	}
	if c.Cmd.ProcessState != nil {
		t.Fatalf("the child exited: %v", c.Cmd.ProcessState)
	}
}

func TestCall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintf(w, `{"header":%q,"method":%q,"body":%q}`, r.Header.Get("X-A"), r.Method, body)
	}))
	defer srv.Close()
	var out struct{ Header, Method, Body string }
	resp := Call(t, "PUT", srv.URL, "payload", &out, "X-A", "b")
	if out.Header != "b" || out.Method != "PUT" || out.Body != "payload" || resp.StatusCode != http.StatusTeapot {
		t.Fatalf("Call = %+v, %d; want the header, method and body echoed with 418", out, resp.StatusCode)
	}
	// The body is there to read again.
	if again, _ := io.ReadAll(resp.Body); !strings.Contains(string(again), `"method":"PUT"`) {
		t.Fatalf("the returned body reads %q", again)
	}
}

// countingTransport counts the requests that went through it.
type countingTransport struct{ n int }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n++
	return http.DefaultTransport.RoundTrip(r)
}

func TestCallWith(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"ok":true}`)
	}))
	defer srv.Close()
	tr := &countingTransport{}
	var out struct{ OK bool }
	CallWith(t, &http.Client{Transport: tr}, "GET", srv.URL, "", &out)
	if !out.OK || tr.n != 1 {
		t.Fatalf("CallWith: answer %+v, %d requests through the given client; want ok and 1", out, tr.n)
	}
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("FreePort gave %d, which cannot be bound: %v", port, err)
	}
	ln.Close()
}
