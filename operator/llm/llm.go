// Package llm talks to chat models that can call tools: Anthropic's Messages
// API and any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
// llama.cpp server, Ollama), over plain HTTP. One Complete is one request:
// it returns what the model said and which tools it asked for. The package
// never runs a tool, never retries and decides nothing; the caller owns the
// conversation, the budget, the audit and what a tool may do.
package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ratelimiter/ratelimiter/operator/internal/jsonscan"
)

// Providers.
const (
	Anthropic = "anthropic" // the Messages API
	OpenAI    = "openai"    // any OpenAI-compatible chat-completions endpoint
)

// DefaultBaseURL is each provider's public endpoint. For OpenAI-compatible
// servers the base includes the version segment (".../v1"), as their
// documentation gives it.
var DefaultBaseURL = map[string]string{
	Anthropic: "https://api.anthropic.com",
	OpenAI:    "https://api.openai.com/v1",
}

// anthropicVersion is the Messages API version this client speaks.
const anthropicVersion = "2023-06-01"

// maxResponseBytes bounds what is read of one answer: a model's answer is
// small, and a broken proxy must not make the operator buffer gigabytes.
const maxResponseBytes = 4 << 20

// maxResponseValues bounds what one answer costs once decoded: 4 MiB of
// empty content blocks decoded into 638 MiB. An answer is counted
// (jsonscan.Values) and refused beyond this before it is decoded; at this
// count it costs a few MiB. A real answer counts a few hundred values: a
// submit_diagnosis with 10 recommendations and 50 pieces of evidence about
// 150.
const maxResponseValues = 1 << 16

// Config says where and how to reach a model.
type Config struct {
	Provider string
	BaseURL  string // "" means DefaultBaseURL[Provider]
	Model    string
	// APIKey is sent as x-api-key (Anthropic) or a bearer token (OpenAI);
	// empty sends none, for local servers that need none.
	APIKey string
	// HTTP is the client to use; nil means one without a timeout: bound
	// each call with the context.
	HTTP *http.Client
	// Now is the clock for Retry-After dates; nil means time.Now.
	Now func() time.Time
}

// Tool is a function the model may ask for. Schema is a JSON Schema object
// for its input.
type Tool struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Schema      map[string]any `json:"input_schema"`
}

// ToolCall is the model asking for one tool. Input is a JSON object.
type ToolCall struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// ToolResult answers one ToolCall.
type ToolResult struct {
	CallID  string `json:"call_id"`
	Content string `json:"content"`
	IsError bool   `json:"is_error,omitempty"`
}

// Message is one turn of the conversation: a user turn carries text and/or
// the results of the previous assistant turn's calls; an assistant turn
// carries text and/or calls (sent back verbatim, as both APIs require).
type Message struct {
	Role      string       `json:"role"` // "user" or "assistant"
	Text      string       `json:"text,omitempty"`
	ToolCalls []ToolCall   `json:"tool_calls,omitempty"`
	Results   []ToolResult `json:"tool_results,omitempty"`
}

// Request is one call to the model.
type Request struct {
	System    string
	Messages  []Message
	Tools     []Tool
	MaxTokens int // output tokens of this answer
}

// Why a model stopped, across providers.
const (
	StopEnd       = "end"        // a final answer
	StopToolUse   = "tool_use"   // it waits for tool results
	StopMaxTokens = "max_tokens" // cut at Request.MaxTokens
	StopRefusal   = "refusal"    // it declined (Anthropic's refusal, OpenAI's refusal or content_filter)
)

// Usage is what one call cost, as the provider reported it. Estimated is
// true when the provider reported nothing and the counts are bytes/4 of
// what went over the wire, so a budget still binds.
type Usage struct {
	Input     int  `json:"input_tokens"`
	Output    int  `json:"output_tokens"`
	Estimated bool `json:"estimated,omitempty"`
}

// Total is input plus output tokens.
func (u Usage) Total() int { return u.Input + u.Output }

// Response is the model's answer.
type Response struct {
	Text      string     `json:"text,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	Stop      string     `json:"stop"`     // one of the Stop constants, or the provider's own word
	RawStop   string     `json:"raw_stop"` // the provider's word
	Refusal   string     `json:"refusal,omitempty"`
	Usage     Usage      `json:"usage"`
}

// APIError is an HTTP error answer from the provider.
type APIError struct {
	Status     int
	Type       string // the provider's error type or code, when it gave one
	Message    string
	RetryAfter time.Duration // from Retry-After; 0 when absent
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %d", e.Status)
	if e.Type != "" {
		b.WriteString(" " + e.Type)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Temporary reports whether the same request may succeed later: rate
// limits, overload and server errors.
func (e *APIError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout || e.Status >= 500
}

// ErrMalformed is wrapped by every error about an answer that does not have
// the provider's shape: not JSON, no content, a tool call without a name or
// with arguments that are not a JSON object.
var ErrMalformed = errors.New("malformed answer")

// Client calls one model. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base string
	http *http.Client
	now  func() time.Time
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	if _, ok := DefaultBaseURL[cfg.Provider]; !ok {
		return nil, fmt.Errorf("unknown provider %q: want %s or %s", cfg.Provider, Anthropic, OpenAI)
	}
	if cfg.Model == "" {
		return nil, errors.New("no model given")
	}
	c := &Client{cfg: cfg, base: strings.TrimRight(cfg.BaseURL, "/"), http: cfg.HTTP, now: cfg.Now}
	if c.base == "" {
		c.base = DefaultBaseURL[cfg.Provider]
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Endpoint is the URL requests go to.
func (c *Client) Endpoint() string {
	if c.cfg.Provider == Anthropic {
		return c.base + "/v1/messages"
	}
	return c.base + "/chat/completions"
}

// Complete sends one request and returns the answer.
func (c *Client) Complete(ctx context.Context, r Request) (*Response, error) {
	var body any
	if c.cfg.Provider == Anthropic {
		body = anthropicBody(c.cfg.Model, r)
	} else {
		body = openaiBody(c.cfg.Model, r, officialOpenAI(c.base))
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Endpoint(), bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.cfg.Provider == Anthropic {
		req.Header.Set("anthropic-version", anthropicVersion)
		if c.cfg.APIKey != "" {
			req.Header.Set("x-api-key", c.cfg.APIKey)
		}
	} else if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err // *url.Error names the method and URL
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.apiError(resp, data)
	}
	if _, err := jsonscan.Values(data, maxResponseValues); err != nil {
		return nil, fmt.Errorf("%w: the answer has %w (maxResponseValues), refused before decoding", ErrMalformed, err)
	}
	var out *Response
	if c.cfg.Provider == Anthropic {
		out, err = anthropicDecode(data)
	} else {
		out, err = openaiDecode(data)
	}
	if err != nil {
		return nil, err
	}
	if out.Usage.Total() == 0 {
		// Some OpenAI-compatible servers report no usage; estimate it so
		// that the caller's token budgets still hold.
		out.Usage = Usage{Input: len(raw) / 4, Output: len(data) / 4, Estimated: true}
	}
	return out, nil
}

// apiError reads an error answer. Both providers put {"type","message"}
// (OpenAI also "code") under "error"; some compatible servers put a string
// there, or the message at the top level.
func (c *Client) apiError(resp *http.Response, data []byte) error {
	e := &APIError{Status: resp.StatusCode, RetryAfter: c.retryAfter(resp.Header)}
	var body struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Type    string          `json:"type"`
	}
	// An error answer is counted like any other before it is decoded (its
	// code is decoded as any); one over the budget is shown as text.
	_, tooMany := jsonscan.Values(data, maxResponseValues)
	if tooMany == nil && json.Unmarshal(data, &body) == nil {
		var obj struct {
			Type    string `json:"type"`
			Code    any    `json:"code"`
			Message string `json:"message"`
		}
		var s string
		switch {
		case json.Unmarshal(body.Error, &obj) == nil && (obj.Message != "" || obj.Type != ""):
			e.Type, e.Message = obj.Type, obj.Message
			if e.Type == "" && obj.Code != nil {
				e.Type = fmt.Sprint(obj.Code)
			}
		case json.Unmarshal(body.Error, &s) == nil:
			e.Message = s
		default:
			e.Type, e.Message = body.Type, body.Message
		}
	}
	if e.Message == "" && e.Type == "" {
		e.Message = strings.TrimSpace(string(truncate(data, 300)))
	}
	return e
}

// retryAfter reads Retry-After (seconds or an HTTP date) or OpenAI's
// retry-after-ms.
func (c *Client) retryAfter(h http.Header) time.Duration {
	if ms, err := strconv.ParseFloat(h.Get("retry-after-ms"), 64); err == nil && ms > 0 {
		return time.Duration(ms * float64(time.Millisecond))
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(c.now()); d > 0 {
			return d
		}
	}
	return 0
}

// officialOpenAI reports whether base is OpenAI's own service (or Azure's
// OpenAI service, which shares its rules) rather than a compatible server.
func officialOpenAI(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	h := strings.ToLower(u.Hostname())
	return h == "api.openai.com" || strings.HasSuffix(h, ".openai.azure.com")
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append(b[:n:n], "…"...)
}

// objectInput checks that a tool call's input is a JSON object (an empty
// input becomes {}), the only shape a tool takes. It checks without
// decoding: an input (an OpenAI arguments string is not counted with the
// answer) can be megabytes of values, which the caller bounds before it
// decodes any.
func objectInput(name string, raw []byte) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return json.RawMessage("{}"), nil
	}
	if raw[0] != '{' || !json.Valid(raw) {
		return nil, fmt.Errorf("%w: the input of tool call %q is not a JSON object: %s", ErrMalformed, name, truncate(raw, 200))
	}
	return json.RawMessage(raw), nil
}
