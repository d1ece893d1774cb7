package testkit

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// Call sends one request (hdr: name, value pairs) and decodes a JSON
// answer into out when out is not nil and the body is not empty. The
// returned response's body is the whole answer again, readable once. A
// request that cannot be sent, or an answer out cannot take, fails the
// test.
func Call(t testing.TB, method, url, body string, out any, hdr ...string) *http.Response {
	t.Helper()
	return CallWith(t, http.DefaultClient, method, url, body, out, hdr...)
}

// CallWith is Call through client c: one with its own transport, such as
// one that dials from a chosen source address.
func CallWith(t testing.TB, c *http.Client, method, url, body string, out any, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: cannot decode %q: %v", method, url, data, err)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server that must be given its port (redis-server, prometheus). Another
// process may take it before the server binds it; servers that can listen
// on :0 should.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
