package operator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// executor performs validated actions over HTTP with the subject's
// credentials, failing over between base URLs when a URL could not be
// reached or its answer was lost (never after a node answered). The
// Idempotency-Key makes that safe: the action runs once however many nodes
// are asked.
type executor struct {
	subj    *Subject
	urls    []string
	token   string // from the environment; never logged or stored
	client  *http.Client
	actions map[string]*Action
	tmpl    templates
}

func newExecutor(subj *Subject, tmpl templates, urls []string, token string, client *http.Client) *executor {
	x := &executor{subj: subj, urls: urls, token: token, client: client, actions: map[string]*Action{}, tmpl: tmpl}
	for i := range subj.Actions {
		x.actions[subj.Actions[i].Name] = &subj.Actions[i]
	}
	return x
}

// validate checks a recommendation against its action's definition.
func (x *executor) validate(name string, params map[string]any) (*Action, map[string]any, error) {
	a := x.actions[name]
	if a == nil {
		return nil, nil, fmt.Errorf("unknown action %q", name)
	}
	p, err := validateParams(a, params)
	return a, p, err
}

// request renders the action's method, path and body.
func (x *executor) request(a *Action, params map[string]any) (path, body string, err error) {
	// Optional parameters that were not given are present as nil, so
	// templates can test them with {{if .name}}.
	full := make(map[string]any, len(a.Params))
	escaped := make(map[string]any, len(a.Params))
	for k := range a.Params {
		full[k], escaped[k] = nil, ""
	}
	for k, v := range params {
		full[k], escaped[k] = v, url.PathEscape(fmt.Sprint(v))
	}
	params = full
	if path, err = x.tmpl.render(a.Path, escaped); err != nil {
		return "", "", fmt.Errorf("action %s path: %w", a.Name, err)
	}
	if body, err = x.tmpl.render(a.Body, params); err != nil {
		return "", "", fmt.Errorf("action %s body: %w", a.Name, err)
	}
	return path, body, nil
}

// execute performs the action and returns a short result for the audit
// log. Every attempt carries idemKey as its Idempotency-Key, so a node
// that already applied the call (its answer lost to a timeout) answers a
// repeat, to it or to the next base URL, without applying it again.
func (x *executor) execute(ctx context.Context, name string, params map[string]any, idemKey string) (string, error) {
	a, p, err := x.validate(name, params)
	if err != nil {
		return "", err
	}
	path, body, err := x.request(a, p)
	if err != nil {
		return "", err
	}
	var lastErr error
	for _, base := range x.urls {
		for attempt := 0; ; attempt++ {
			req, err := http.NewRequestWithContext(ctx, a.Method, base+path, strings.NewReader(body))
			if err != nil {
				return "", err
			}
			if body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if x.token != "" {
				req.Header.Set("Authorization", "Bearer "+x.token)
			}
			if idemKey != "" {
				req.Header.Set("Idempotency-Key", idemKey)
			}
			resp, err := x.client.Do(req)
			if err != nil {
				lastErr = err
				break // not reached, or the answer was lost: the next base URL, same key
			}
			out, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusConflict && bytes.Contains(out, []byte("idempotency-in-progress")) && attempt < 8 {
				// Another node is applying this very call: wait for its answer.
				select {
				case <-ctx.Done():
					return "", ctx.Err()
				case <-time.After(250 * time.Millisecond):
				}
				continue
			}
			result := fmt.Sprintf("%s %s: HTTP %d %s", a.Method, path, resp.StatusCode, bytes.TrimSpace(out))
			if resp.Header.Get("Idempotent-Replayed") == "true" {
				result += " (the answer of an earlier attempt that had applied it: not applied again)"
			}
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return result, fmt.Errorf("%s", result)
			}
			return result, nil
		}
	}
	return "", fmt.Errorf("no base URL answered: %w", lastErr)
}
