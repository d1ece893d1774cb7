package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/operator/llm/llmtest"
)

// standIn is a provider on loopback: it records each request (path,
// headers, decoded body) and answers with the next scripted reply.
type standIn struct {
	URL     string
	got     []seen
	replies []reply
}

type seen struct {
	Path   string
	Header http.Header
	Body   map[string]any
}

type reply struct {
	status int
	header map[string]string
	body   string
}

func startStandIn(t *testing.T, replies ...reply) *standIn {
	t.Helper()
	s := &standIn{replies: replies}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Errorf("the client sent a body that is not a JSON object: %v: %s", err, raw)
		}
		s.got = append(s.got, seen{Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		// Refuse what the real API refuses, as it does.
		provider, err := Anthropic, llmtest.CheckAnthropic(r.Header, raw)
		if !strings.HasSuffix(r.URL.Path, "/v1/messages") {
			provider, err = OpenAI, llmtest.CheckOpenAI(r.Header, raw, false)
		}
		if err != nil {
			t.Errorf("the real %s API would refuse this request: %v\n%s", provider, err, raw)
			llmtest.Reject(w, provider, err)
			return
		}
		if len(s.replies) == 0 {
			t.Errorf("unscripted request %s", r.URL.Path)
			http.Error(w, "unscripted", http.StatusTeapot)
			return
		}
		rp := s.replies[0]
		s.replies = s.replies[1:]
		for k, v := range rp.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rp.status)
		io.WriteString(w, rp.body)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func newClient(t *testing.T, provider, base string) *Client {
	t.Helper()
	c, err := New(Config{Provider: provider, BaseURL: base + "/", Model: "m-1", APIKey: "sk-test-123",
		Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var tools = []Tool{{Name: "read_nodes", Description: "every node", Schema: map[string]any{"type": "object", "properties": map[string]any{}}}}

// conversation is one tool round: the model asked for read_nodes, the
// caller answers it.
func conversation() Request {
	return Request{System: "sys", Tools: tools, MaxTokens: 321, Messages: []Message{
		{Role: "user", Text: "ticket 7"},
		{Role: "assistant", Text: "let me look", ToolCalls: []ToolCall{{ID: "c1", Name: "read_nodes", Input: json.RawMessage(`{}`)},
			{ID: "c2", Name: "read_nodes", Input: json.RawMessage(`{"id":"n9"}`)}}},
		{Role: "user", Results: []ToolResult{{CallID: "c1", Content: `[{"id":"n1"}]`}, {CallID: "c2", Content: "boom", IsError: true}}},
	}}
}

// hello is the smallest request either API takes.
var hello = Request{MaxTokens: 10, Messages: []Message{{Role: "user", Text: "hi"}}}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestAnthropicWire: the request has the Messages API's path, headers and
// blocks (tool_use echoed, tool_result answering it, results first), and a
// tool_use answer decodes into calls.
func TestAnthropicWire(t *testing.T) {
	s := startStandIn(t, reply{200, nil, `{"id":"msg_1","type":"message","role":"assistant","model":"m-1",
		"content":[{"type":"text","text":"reading"},{"type":"tool_use","id":"toolu_9","name":"read_nodes","input":{"x":1}}],
		"stop_reason":"tool_use","usage":{"input_tokens":100,"output_tokens":20}}`})
	got, err := newClient(t, Anthropic, s.URL).Complete(context.Background(), conversation())
	if err != nil {
		t.Fatal(err)
	}
	r := s.got[0]
	if r.Path != "/v1/messages" || r.Header.Get("x-api-key") != "sk-test-123" || r.Header.Get("anthropic-version") != "2023-06-01" ||
		r.Header.Get("Authorization") != "" {
		t.Errorf("request %s with headers %v; want /v1/messages, x-api-key and anthropic-version only", r.Path, r.Header)
	}
	for _, c := range []struct{ field, want string }{
		{"model", `"m-1"`}, {"max_tokens", `321`}, {"system", `"sys"`},
		{"tools", `[{"input_schema":{"properties":{},"type":"object"},"name":"read_nodes","description":"every node"}]`},
		{"messages", `[{"content":[{"text":"ticket 7","type":"text"}],"role":"user"},` +
			`{"content":[{"text":"let me look","type":"text"},{"id":"c1","input":{},"name":"read_nodes","type":"tool_use"},` +
			`{"id":"c2","input":{"id":"n9"},"name":"read_nodes","type":"tool_use"}],"role":"assistant"},` +
			`{"content":[{"content":"[{\"id\":\"n1\"}]","tool_use_id":"c1","type":"tool_result"},{"content":"boom","is_error":true,"tool_use_id":"c2","type":"tool_result"}],"role":"user"}]`},
	} {
		if g := js(r.Body[c.field]); !jsonEqual(g, c.want) {
			t.Errorf("request %s = %s; want %s", c.field, g, c.want)
		}
	}
	if got.Stop != StopToolUse || got.Text != "reading" || len(got.ToolCalls) != 1 || got.ToolCalls[0].ID != "toolu_9" ||
		got.ToolCalls[0].Name != "read_nodes" || string(got.ToolCalls[0].Input) != `{"x":1}` || got.Usage != (Usage{Input: 100, Output: 20}) {
		t.Errorf("answer = %+v; want one read_nodes call toolu_9 with its input, 120 tokens", got)
	}
}

// TestOpenAIWire: the request is chat completions' (system message first,
// function tools, the assistant's tool_calls with arguments as a string and
// empty content, never null, when it said nothing, one role=tool message
// per result, the output cap as both max_completion_tokens and max_tokens
// for a compatible server), and tool_calls decode, including arguments
// sent as an object.
func TestOpenAIWire(t *testing.T) {
	s := startStandIn(t, reply{200, nil, `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,
		"message":{"role":"assistant","content":null,"tool_calls":[
			{"id":"call_a","type":"function","function":{"name":"read_nodes","arguments":"{\"k\":\"v\"}"}},
			{"type":"function","function":{"name":"read_nodes","arguments":{"k":2}}}]},
		"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":50,"completion_tokens":5,"total_tokens":55}}`})
	req := conversation()
	req.Messages[1].Text = ""
	got, err := newClient(t, OpenAI, s.URL).Complete(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r := s.got[0]
	if r.Path != "/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-test-123" || r.Header.Get("x-api-key") != "" {
		t.Errorf("request %s with headers %v; want /chat/completions with a bearer token", r.Path, r.Header)
	}
	for _, c := range []struct{ field, want string }{
		{"model", `"m-1"`}, {"max_completion_tokens", `321`}, {"max_tokens", `321`},
		{"tools", `[{"type":"function","function":{"name":"read_nodes","description":"every node","parameters":{"type":"object","properties":{}}}}]`},
		{"messages", `[{"role":"system","content":"sys"},{"role":"user","content":"ticket 7"},` +
			`{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"read_nodes","arguments":"{}"}},` +
			`{"id":"c2","type":"function","function":{"name":"read_nodes","arguments":"{\"id\":\"n9\"}"}}]},` +
			`{"role":"tool","tool_call_id":"c1","content":"[{\"id\":\"n1\"}]"},{"role":"tool","tool_call_id":"c2","content":"error: boom"}]`},
	} {
		if g := js(r.Body[c.field]); !jsonEqual(g, c.want) {
			t.Errorf("request %s = %s; want %s", c.field, g, c.want)
		}
	}
	if got.Stop != StopToolUse || len(got.ToolCalls) != 2 || got.ToolCalls[0].ID != "call_a" || string(got.ToolCalls[0].Input) != `{"k":"v"}` ||
		got.ToolCalls[1].ID == "" || string(got.ToolCalls[1].Input) != `{"k":2}` || got.Usage != (Usage{Input: 50, Output: 5}) {
		t.Errorf("answer = %+v; want two read_nodes calls with their inputs, 55 tokens", got)
	}
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return js(x) == js(y)
}

// TestStops: every provider's stop words map to the common ones; a refusal
// carries its text.
func TestStops(t *testing.T) {
	f := func(provider, body, stop, text, refusal string) {
		t.Helper()
		s := startStandIn(t, reply{200, nil, body})
		got, err := newClient(t, provider, s.URL).Complete(context.Background(), hello)
		if err != nil {
			t.Fatalf("%s %s: %v", provider, body, err)
		}
		if got.Stop != stop || got.Text != text || got.Refusal != refusal {
			t.Errorf("%s %s: stop %q text %q refusal %q; want %q %q %q", provider, body, got.Stop, got.Text, got.Refusal, stop, text, refusal)
		}
	}
	msg := func(content, stop string) string {
		return `{"type":"message","content":` + content + `,"stop_reason":"` + stop + `","usage":{"input_tokens":1,"output_tokens":1}}`
	}
	f(Anthropic, msg(`[{"type":"text","text":"done"}]`, "end_turn"), StopEnd, "done", "")
	f(Anthropic, msg(`[{"type":"text","text":"done"}]`, "stop_sequence"), StopEnd, "done", "")
	f(Anthropic, msg(`[{"type":"text","text":"half"}]`, "max_tokens"), StopMaxTokens, "half", "")
	f(Anthropic, msg(`[{"type":"text","text":"I will not"}]`, "refusal"), StopRefusal, "I will not", "I will not")
	choice := func(message, finish string) string {
		return `{"choices":[{"message":` + message + `,"finish_reason":"` + finish + `"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`
	}
	f(OpenAI, choice(`{"role":"assistant","content":"done"}`, "stop"), StopEnd, "done", "")
	f(OpenAI, choice(`{"role":"assistant","content":"half"}`, "length"), StopMaxTokens, "half", "")
	f(OpenAI, choice(`{"role":"assistant","content":null,"refusal":"I can't help with that"}`, "stop"), StopRefusal, "", "I can't help with that")
	f(OpenAI, choice(`{"role":"assistant","content":""}`, "content_filter"), StopRefusal, "", "content_filter")
}

// TestErrorAnswers: HTTP errors become *APIError with the provider's type
// and message, Retry-After in seconds, milliseconds or as a date, and
// whether they are temporary.
func TestErrorAnswers(t *testing.T) {
	f := func(provider string, rp reply, want APIError, temporary bool) {
		t.Helper()
		s := startStandIn(t, rp)
		_, err := newClient(t, provider, s.URL).Complete(context.Background(), hello)
		var ae *APIError
		if !errors.As(err, &ae) {
			t.Fatalf("%s %d: error %v; want an *APIError", provider, rp.status, err)
		}
		if *ae != want || ae.Temporary() != temporary {
			t.Errorf("%s %d: %+v (temporary %v); want %+v (%v)", provider, rp.status, *ae, ae.Temporary(), want, temporary)
		}
		if !strings.Contains(err.Error(), want.Message) {
			t.Errorf("error text %q lacks the provider's message", err)
		}
	}
	f(Anthropic, reply{429, map[string]string{"retry-after": "7"}, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`},
		APIError{Status: 429, Type: "rate_limit_error", Message: "slow down", RetryAfter: 7 * time.Second}, true)
	f(Anthropic, reply{529, nil, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`},
		APIError{Status: 529, Type: "overloaded_error", Message: "Overloaded"}, true)
	f(Anthropic, reply{400, nil, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}`},
		APIError{Status: 400, Type: "invalid_request_error", Message: "max_tokens: required"}, false)
	f(OpenAI, reply{429, map[string]string{"retry-after-ms": "1500", "retry-after": "2"}, `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`},
		APIError{Status: 429, Type: "requests", Message: "Rate limit reached", RetryAfter: 1500 * time.Millisecond}, true)
	f(OpenAI, reply{503, map[string]string{"Retry-After": "Fri, 02 Jan 2026 03:04:35 GMT"}, `{"error":"model is loading"}`},
		APIError{Status: 503, Message: "model is loading", RetryAfter: 30 * time.Second}, true)
	f(OpenAI, reply{401, nil, `{"error":{"message":"Incorrect API key","type":null,"code":"invalid_api_key"}}`},
		APIError{Status: 401, Type: "invalid_api_key", Message: "Incorrect API key"}, false)
	f(OpenAI, reply{400, nil, `{"object":"error","message":"tools not supported","type":"BadRequestError","code":400}`},
		APIError{Status: 400, Type: "BadRequestError", Message: "tools not supported"}, false)
	f(OpenAI, reply{502, nil, `<html>bad gateway</html>`}, APIError{Status: 502, Message: "<html>bad gateway</html>"}, true)
}

// TestMalformedAnswers: a 200 that is not the provider's shape is an error
// wrapping ErrMalformed, never a silent empty answer.
func TestMalformedAnswers(t *testing.T) {
	f := func(provider, body, want string) {
		t.Helper()
		s := startStandIn(t, reply{200, nil, body})
		_, err := newClient(t, provider, s.URL).Complete(context.Background(), hello)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s %s: error %v; want ErrMalformed mentioning %q", provider, body, err, want)
		}
	}
	f(Anthropic, `not json`, "invalid character")
	f(Anthropic, `{"type":"error"}`, "not a message")
	f(Anthropic, `{"type":"message","content":[{"type":"tool_use","name":"read_nodes","input":{}}],"stop_reason":"tool_use"}`, "without id or name")
	f(Anthropic, `{"type":"message","content":[{"type":"tool_use","id":"t","name":"read_nodes","input":[1]}],"stop_reason":"tool_use"}`, "not a JSON object")
	f(Anthropic, `{"type":"message","content":[],"stop_reason":"tool_use"}`, "without a tool_use block")
	f(OpenAI, `{"choices":[]}`, "no choice")
	f(OpenAI, `{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"read_nodes","arguments":"{\"a\":"}}]},"finish_reason":"tool_calls"}]}`, "not a JSON object")
	f(OpenAI, `{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`, "without a function name")
	f(OpenAI, `{"choices":[{"message":{"content":null},"finish_reason":"tool_calls"}]}`, "without a tool call")
}

// TestUsageEstimated: a server that reports no usage is charged bytes/4,
// so a token budget still binds.
func TestUsageEstimated(t *testing.T) {
	s := startStandIn(t, reply{200, nil, `{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}`})
	got, err := newClient(t, OpenAI, s.URL).Complete(context.Background(), conversation())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Usage.Estimated || got.Usage.Input < 50 || got.Usage.Output < 10 {
		t.Errorf("usage = %+v; want an estimate from the bytes exchanged", got.Usage)
	}
}

// TestDeadline: a server that never answers costs the context's deadline,
// not more.
func TestDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := newClient(t, Anthropic, srv.URL).Complete(ctx, hello)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("Complete against a silent server = %v after %v; want context.DeadlineExceeded after about 200ms", err, time.Since(start))
	}
}

func TestNewChecks(t *testing.T) {
	if _, err := New(Config{Provider: "gemini", Model: "x"}); err == nil || !strings.Contains(err.Error(), "unknown provider") {
		t.Errorf("New(gemini) = %v; want unknown provider", err)
	}
	if _, err := New(Config{Provider: OpenAI}); err == nil {
		t.Errorf("New without a model succeeded")
	}
	c, _ := New(Config{Provider: Anthropic, Model: "x"})
	if c.Endpoint() != "https://api.anthropic.com/v1/messages" {
		t.Errorf("default Anthropic endpoint = %s", c.Endpoint())
	}
	c, _ = New(Config{Provider: OpenAI, Model: "x", BaseURL: "http://127.0.0.1:11434/v1/"})
	if c.Endpoint() != "http://127.0.0.1:11434/v1/chat/completions" {
		t.Errorf("Ollama endpoint = %s", c.Endpoint())
	}
}

// TestSilentTurns: a model that ended its turn without a word, or with
// only whitespace, or with calls and no text, is never echoed back as
// null or empty content: Anthropic refuses a message with no content and
// wants the roles to alternate, so the silent turn is left out and the
// user turns around it become one; chat completions gets "" beside the
// calls. The stand-ins refuse what the real APIs refuse.
func TestSilentTurns(t *testing.T) {
	req := Request{System: "sys", Tools: tools, MaxTokens: 50, Messages: []Message{
		{Role: "user", Text: "ticket 7"},
		{Role: "assistant"},
		{Role: "user", Text: "Answer by calling submit_diagnosis."},
		{Role: "assistant", Text: " \n"},
		{Role: "user", Text: "Please."},
		{Role: "assistant", ToolCalls: []ToolCall{{ID: "c1", Name: "read_nodes", Input: json.RawMessage(`{}`)}}},
		{Role: "user", Results: []ToolResult{{CallID: "c1", Content: "[]"}}},
	}}
	f := func(provider, answer, wantMessages string) {
		t.Helper()
		s := startStandIn(t, reply{200, nil, answer})
		if _, err := newClient(t, provider, s.URL).Complete(context.Background(), req); err != nil {
			t.Fatalf("%s: %v", provider, err)
		}
		if got := js(s.got[0].Body["messages"]); !jsonEqual(got, wantMessages) {
			t.Errorf("%s messages = %s; want %s", provider, got, wantMessages)
		}
	}
	f(Anthropic, `{"type":"message","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}`,
		`[{"role":"user","content":[{"type":"text","text":"ticket 7"},{"type":"text","text":"Answer by calling submit_diagnosis."},{"type":"text","text":"Please."}]},`+
			`{"role":"assistant","content":[{"type":"tool_use","id":"c1","name":"read_nodes","input":{}}]},`+
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":"c1","content":"[]"}]}]`)
	f(OpenAI, `{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`,
		`[{"role":"system","content":"sys"},{"role":"user","content":"ticket 7"},{"role":"user","content":"Answer by calling submit_diagnosis."},`+
			`{"role":"assistant","content":" \n"},{"role":"user","content":"Please."},`+
			`{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"read_nodes","arguments":"{}"}}]},`+
			`{"role":"tool","tool_call_id":"c1","content":"[]"}]`)
}

// TestMaxTokensFields: OpenAI's own service (and Azure's) gets only
// max_completion_tokens, since it refuses both at once; every other
// OpenAI-compatible server gets max_tokens too, which is all llama.cpp,
// older vLLM and Ollama read.
func TestMaxTokensFields(t *testing.T) {
	f := func(base string, official bool) {
		t.Helper()
		if got := officialOpenAI(base); got != official {
			t.Fatalf("officialOpenAI(%q) = %v; want %v", base, got, official)
		}
		raw, _ := json.Marshal(openaiBody("m-1", conversation(), official))
		h := http.Header{"Authorization": {"Bearer sk-test"}, "Content-Type": {"application/json"}}
		if err := llmtest.CheckOpenAI(h, raw, official); err != nil {
			t.Errorf("%s: the request would be refused: %v", base, err)
		}
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		if mct, mt := body["max_completion_tokens"], body["max_tokens"]; mct != 321.0 || (official && mt != nil) || (!official && mt != 321.0) {
			t.Errorf("%s: max_completion_tokens %v, max_tokens %v; want 321 and %s", base, mct, mt,
				map[bool]string{true: "none", false: "321"}[official])
		}
	}
	f("https://api.openai.com/v1", true)
	f("https://my-resource.openai.azure.com/openai/v1", true)
	f("http://127.0.0.1:8080/v1", false)  // llama.cpp server
	f("http://localhost:11434/v1", false) // Ollama
	f("https://vllm.internal:8000/v1", false)
}
