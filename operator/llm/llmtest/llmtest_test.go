package llmtest

import (
	"net/http"
	"strings"
	"testing"
)

var (
	anthropicHeaders = http.Header{"X-Api-Key": {"k"}, "Anthropic-Version": {"2023-06-01"}, "Content-Type": {"application/json"}}
	openaiHeaders    = http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}}
)

// TestCheckHeaders: a request without the key or version header the real
// API wants is refused (401 for the key), whatever its body.
func TestCheckHeaders(t *testing.T) {
	body := []byte(`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	f := func(err error, want string, status int) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v; want one containing %q", err, want)
		}
		w := httptestRecorder{header: http.Header{}}
		Reject(&w, "anthropic", err)
		if w.status != status {
			t.Errorf("Reject(%v) status %d; want %d", err, w.status, status)
		}
	}
	without := func(h http.Header, name string) http.Header { h = h.Clone(); h.Del(name); return h }
	f(CheckAnthropic(without(anthropicHeaders, "X-Api-Key"), body), "x-api-key header is required", 401)
	f(CheckAnthropic(without(anthropicHeaders, "Anthropic-Version"), body), "anthropic-version: header is required", 400)
	f(CheckAnthropic(without(anthropicHeaders, "Content-Type"), body), "application/json", 400)
	f(CheckOpenAI(without(openaiHeaders, "Authorization"), body, true), "You didn't provide an API key", 401)
	if err := CheckOpenAI(without(openaiHeaders, "Authorization"), body, false); err != nil {
		t.Errorf("a compatible server without a key: %v; want nil (local servers take none)", err)
	}
}

// httptestRecorder keeps the status Reject writes.
type httptestRecorder struct {
	header http.Header
	status int
}

func (r *httptestRecorder) Header() http.Header         { return r.header }
func (r *httptestRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *httptestRecorder) WriteHeader(status int)      { r.status = status }

// TestCheckAnthropic: a valid tool round passes; each thing the Messages
// API refuses is refused, naming why.
func TestCheckAnthropic(t *testing.T) {
	const tools = `"tools":[{"name":"read_nodes","description":"d","input_schema":{"type":"object"}}]`
	user := `{"role":"user","content":[{"type":"text","text":"ticket 7"}]}`
	calls := `{"role":"assistant","content":[{"type":"text","text":"look"},{"type":"tool_use","id":"toolu_1","name":"read_nodes","input":{}}]}`
	results := `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"[]"}]}`
	body := func(msgs ...string) string {
		return `{"model":"m","max_tokens":100,"system":"s",` + tools + `,"messages":[` + strings.Join(msgs, ",") + `]}`
	}
	f := func(b, want string) {
		t.Helper()
		err := CheckAnthropic(anthropicHeaders, []byte(b))
		switch {
		case want == "" && err != nil:
			t.Errorf("CheckAnthropic(%s) = %v; want nil", b, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("CheckAnthropic(%s) = %v; want an error containing %q", b, err, want)
		}
	}
	f(body(user, calls, results), "")
	f(body(user, `{"role":"assistant","content":"fine"}`, `{"role":"user","content":"go on"}`), "")
	f(body(user, `{"role":"assistant","content":[]}`), "") // an empty final assistant turn is a prefill
	f(body(user, `{"role":"assistant","content":null}`, `{"role":"user","content":"go on"}`), "messages.1.content: Input should be a valid list")
	f(body(user, `{"role":"assistant","content":[]}`, `{"role":"user","content":"go on"}`), "messages.1: all messages must have non-empty content")
	f(body(`{"role":"user","content":""}`), "messages.0: all messages must have non-empty content")
	f(body(user, `{"role":"assistant","content":[{"type":"text","text":" "}]}`, user), "text content blocks must contain non-whitespace text")
	f(body(user, user), "roles must alternate")
	f(body(`{"role":"assistant","content":"hi"}`, user), "first message must use the \"user\" role")
	f(body(user, calls, user), "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1")
	f(body(user, calls), "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1")
	f(body(user, `{"role":"assistant","content":"hi"}`, results), "unexpected `tool_use_id` found in `tool_result` blocks: toolu_1")
	f(body(user, calls, `{"role":"user","content":[{"type":"text","text":"here"},{"type":"tool_result","tool_use_id":"toolu_1","content":"[]"}]}`),
		"tool_result blocks must come first")
	f(body(user, `{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"read_nodes","input":"{}"}]}`, results), "an input object")
	f(`{"model":"m","messages":[`+user+`]}`, "max_tokens: Field required")
	f(`{"model":"m","max_tokens":10,"max_completion_tokens":10,"messages":[`+user+`]}`, "max_completion_tokens: Extra inputs are not permitted")
	f(`{"model":"m","max_tokens":10,"messages":[]}`, "at least one message is required")
	f(`{"model":"m","max_tokens":10,"tools":[{"name":"read nodes","input_schema":{"type":"object"}}],"messages":[`+user+`]}`, "tools.0.name")
}

// TestCheckOpenAI: a valid tool round passes; each thing chat completions
// refuses is refused, naming why; OpenAI's own service also refuses
// max_tokens beside max_completion_tokens.
func TestCheckOpenAI(t *testing.T) {
	user := `{"role":"user","content":"ticket 7"}`
	calls := `{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"read_nodes","arguments":"{}"}},` +
		`{"id":"call_2","type":"function","function":{"name":"read_nodes","arguments":"{}"}}]}`
	res := func(id string) string { return `{"role":"tool","tool_call_id":"` + id + `","content":"[]"}` }
	body := func(msgs ...string) string {
		return `{"model":"m","max_completion_tokens":100,"tools":[{"type":"function","function":{"name":"read_nodes","parameters":{"type":"object"}}}],` +
			`"messages":[` + strings.Join(msgs, ",") + `]}`
	}
	f := func(b string, official bool, want string) {
		t.Helper()
		err := CheckOpenAI(openaiHeaders, []byte(b), official)
		switch {
		case want == "" && err != nil:
			t.Errorf("CheckOpenAI(%s) = %v; want nil", b, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("CheckOpenAI(%s) = %v; want an error containing %q", b, err, want)
		}
	}
	f(body(user, calls, res("call_1"), res("call_2"), user), true, "")
	f(body(user, calls, res("call_2"), res("call_1")), true, "")
	f(body(user, calls, res("call_1"), user), true, "The following tool_call_ids did not have response messages: call_2")
	f(body(user, calls, res("call_1")), true, "The following tool_call_ids did not have response messages: call_2")
	f(body(user, res("call_1")), true, "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'")
	f(body(user, calls, res("call_1"), res("call_9")), true, "'tool_call_id' of 'call_9' not found")
	f(body(`{"role":"user","content":null}`), true, "but got null instead")
	f(body(user, `{"role":"assistant","content":null}`), true, "content is required unless tool_calls is given")
	f(body(user, `{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"read_nodes","arguments":{}}}]}`, res("c")),
		true, "function.arguments': expected a string")
	f(body(user, `{"role":"assistant","content":"","tool_calls":[{"type":"function","function":{"name":"read_nodes","arguments":"{}"}}]}`),
		true, "tool_calls[0].id")
	f(body(`{"role":"robot","content":"x"}`), true, "Supported values are")
	f(`{"model":"m","max_completion_tokens":10,"max_tokens":10,"messages":[`+user+`]}`, false, "")
	f(`{"model":"m","max_completion_tokens":10,"max_tokens":10,"messages":[`+user+`]}`, true, "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported")
	f(`{"model":"m","max_tokens":0,"messages":[`+user+`]}`, false, "Invalid 'max_tokens'")
	f(`{"model":"m","input_schema":{},"messages":[`+user+`]}`, false, "Unrecognized request argument supplied: input_schema")
	f(`{"model":"m","messages":[]}`, false, "empty array")
}
