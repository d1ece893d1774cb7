package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
)

// The data plane is what clients of the limiter reach: the checks (POST
// /json, Envoy's, is one) and /health (which load balancers and the other
// nodes ask). With
// management_listen set, it is all the listen address serves; the
// management API and /metrics move to their own address, which can be
// kept off the public network.
//
// path is PathOriginal: as sent, before normalizing, and without the query
// (so an exact match: a path that only normalizes to a data-plane one is
// not data plane).
func isDataPlane(path []byte) bool {
	switch string(path) {
	case "/api/v1/check", "/api/v1/check/batch", "/json", "/health":
		return true
	}
	return false
}

// listenManagement binds management_listen when set and prepares its
// server, a twin of the data plane's.
func (n *Node) listenManagement() error {
	if n.cfg.ManagementListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.ManagementListen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s (management_listen): %w", n.cfg.ManagementListen, err)
	}
	n.mgmtLn = ln
	d := n.server // same limits and timeouts
	n.mgmtServer = &fasthttp.Server{
		Handler: n.serveManagement, ErrorHandler: d.ErrorHandler, Name: d.Name,
		MaxRequestBodySize: d.MaxRequestBodySize, ReadTimeout: d.ReadTimeout, WriteTimeout: d.WriteTimeout,
		IdleTimeout: d.IdleTimeout, NoDefaultServerHeader: true, CloseOnShutdown: true, Logger: d.Logger,
	}
	n.server.Handler = n.serveDataPlane
	return nil
}

// ManagementAddr is the address of the management API: management_listen
// when set, else the node's own.
func (n *Node) ManagementAddr() string {
	if n.mgmtLn != nil {
		return n.mgmtLn.Addr().String()
	}
	return n.Addr()
}

func (n *Node) serveDataPlane(ctx *fasthttp.RequestCtx) {
	if !isDataPlane(ctx.URI().PathOriginal()) {
		defer n.recoverPanic(ctx)
		n.problem(ctx, &problemError{status: fasthttp.StatusNotFound, typ: "not-found",
			detail: "no such endpoint here: " + string(ctx.Path()) + " (the management API is on its own address)"})
		return
	}
	n.serve(ctx)
}

func (n *Node) serveManagement(ctx *fasthttp.RequestCtx) {
	path := ctx.URI().PathOriginal()
	if isDataPlane(path) && string(path) != "/health" {
		defer n.recoverPanic(ctx)
		n.problem(ctx, &problemError{status: fasthttp.StatusNotFound, typ: "not-found",
			detail: "checks are served on the data plane address, not the management one"})
		return
	}
	n.serve(ctx)
}

// serveManagementUntilStopped serves the management address, if any, until
// its server shuts down.
func (n *Node) serveManagementUntilStopped(wg *sync.WaitGroup) {
	if n.mgmtServer == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.mgmtServer.Serve(n.mgmtLn); err != nil && !errors.Is(err, net.ErrClosed) {
			n.log.Warn("management server stopped", "err", err)
		}
	}()
}

func (n *Node) stopManagement(ctx context.Context) {
	if n.mgmtServer == nil {
		return
	}
	if err := n.mgmtServer.ShutdownWithContext(ctx); err != nil {
		n.log.Warn("management shutdown", "err", err)
	}
}

// maxAdminTokenFile bounds what readAdminToken reads: a token is short,
// and a path to a device (/dev/zero) must not fill the memory.
const maxAdminTokenFile = 4096

// readAdminToken reads admin_token_file: the token alone, surrounding
// whitespace (a final newline above all) ignored. A file keeps the token
// out of the process list, where a flag would show it.
func readAdminToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read admin_token_file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxAdminTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("cannot read admin_token_file: %w", err)
	}
	if len(raw) > maxAdminTokenFile {
		return "", fmt.Errorf("admin_token_file %s is larger than %d bytes: not a token", path, maxAdminTokenFile)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return "", fmt.Errorf("admin_token_file %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("admin_token_file %s holds more than one word", path)
	}
	return tok, nil
}
