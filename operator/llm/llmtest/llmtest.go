// Package llmtest holds, for tests only, what the real model APIs reject:
// a stand-in model server checks each request with CheckAnthropic or
// CheckOpenAI and answers a violation as the real API would (Reject), so a
// client that the stand-ins accept is not refused by the real service. The
// rules are those of the public documentation and of the errors the APIs
// are known to return; the messages follow the real ones.
package llmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// toolName is the pattern both APIs hold tool names to.
var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// toolUseID is the pattern of the ids Anthropic gives tool_use blocks.
var toolUseID = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Anthropic's top-level request fields; any other is "Extra inputs are not
// permitted".
var anthropicFields = []string{"model", "messages", "max_tokens", "system", "tools", "tool_choice", "metadata",
	"stop_sequences", "stream", "temperature", "top_k", "top_p", "thinking", "service_tier", "container", "mcp_servers"}

// Chat completions' request fields; any other is an "Unrecognized request
// argument".
var openaiFields = []string{"model", "messages", "tools", "tool_choice", "max_tokens", "max_completion_tokens",
	"temperature", "top_p", "n", "stream", "stream_options", "stop", "presence_penalty", "frequency_penalty",
	"logit_bias", "logprobs", "top_logprobs", "user", "response_format", "seed", "parallel_tool_calls",
	"reasoning_effort", "metadata", "store", "service_tier", "modalities", "audio", "prediction"}

// CheckAnthropic returns why the Messages API would refuse a request with
// these headers and body (401 without a key, else 400), or nil.
func CheckAnthropic(h http.Header, body []byte) error {
	if h.Get("x-api-key") == "" {
		return errors.New("x-api-key header is required")
	}
	if h.Get("anthropic-version") == "" {
		return errors.New("anthropic-version: header is required")
	}
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return fmt.Errorf("There was an error parsing the body: %v", err)
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		bad("content-type: the body must be sent as application/json")
	}
	for k := range req {
		if !slices.Contains(anthropicFields, k) {
			bad("%s: Extra inputs are not permitted", k)
		}
	}
	var model string
	if json.Unmarshal(req["model"], &model) != nil || model == "" {
		bad("model: Field required")
	}
	var maxTokens int
	if json.Unmarshal(req["max_tokens"], &maxTokens) != nil || maxTokens < 1 {
		bad("max_tokens: Field required (an integer, at least 1)")
	}
	if raw, ok := req["system"]; ok {
		var s string
		var blocks []map[string]any
		if json.Unmarshal(raw, &s) != nil && (json.Unmarshal(raw, &blocks) != nil || blocks == nil) {
			bad("system: Input should be a valid string or list of text blocks")
		}
	}
	if raw, ok := req["tools"]; ok {
		var tools []struct {
			Name        string         `json:"name"`
			InputSchema map[string]any `json:"input_schema"`
		}
		if err := json.Unmarshal(raw, &tools); err != nil {
			bad("tools: Input should be a valid list")
		}
		seen := map[string]bool{}
		for i, t := range tools {
			if !toolName.MatchString(t.Name) {
				bad("tools.%d.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'", i)
			}
			if seen[t.Name] {
				bad("tools: Tool names must be unique.")
			}
			seen[t.Name] = true
			if t.InputSchema == nil || t.InputSchema["type"] != "object" {
				bad("tools.%d.input_schema: Input should be a JSON Schema of type object", i)
			}
		}
	}
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(req["messages"], &msgs); err != nil || len(msgs) == 0 {
		bad("messages: at least one message is required")
		return errors.Join(errs...)
	}
	if msgs[0].Role != "user" {
		bad("messages: first message must use the \"user\" role")
	}
	var calls []string // tool_use ids of the previous assistant message
	for i, m := range msgs {
		if m.Role != "user" && m.Role != "assistant" {
			bad("messages.%d.role: Input should be 'user' or 'assistant'", i)
		}
		if i > 0 && m.Role == msgs[i-1].Role {
			bad("messages: roles must alternate between \"user\" and \"assistant\", but found multiple %q roles in a row", m.Role)
		}
		final := i == len(msgs)-1 && m.Role == "assistant"
		var blocks []map[string]any
		var s string
		switch {
		case len(m.Content) == 0 || string(m.Content) == "null":
			bad("messages.%d.content: Input should be a valid list", i)
			continue
		case json.Unmarshal(m.Content, &s) == nil:
			if s == "" && !final {
				bad("messages.%d: all messages must have non-empty content except for the optional final assistant message", i)
			}
			blocks = []map[string]any{{"type": "text", "text": s}}
			if s == "" {
				blocks = nil
			}
		case json.Unmarshal(m.Content, &blocks) == nil:
			if len(blocks) == 0 && !final {
				bad("messages.%d: all messages must have non-empty content except for the optional final assistant message", i)
			}
		default:
			bad("messages.%d.content: Input should be a valid string or list of content blocks", i)
			continue
		}
		var uses, results []string
		for j, b := range blocks {
			switch b["type"] {
			case "text":
				if t, ok := b["text"].(string); !ok || strings.TrimSpace(t) == "" {
					bad("messages.%d.content.%d: text content blocks must contain non-whitespace text", i, j)
				}
			case "tool_use":
				id, _ := b["id"].(string)
				name, _ := b["name"].(string)
				_, isObject := b["input"].(map[string]any)
				if m.Role != "assistant" || !toolUseID.MatchString(id) || name == "" || !isObject {
					bad("messages.%d.content.%d: a tool_use block belongs to an assistant message and has an id, a name and an input object", i, j)
				}
				uses = append(uses, id)
			case "tool_result":
				id, _ := b["tool_use_id"].(string)
				if m.Role != "user" {
					bad("messages.%d.content.%d: tool_result blocks belong to user messages", i, j)
				}
				if j != len(results) {
					bad("messages.%d: tool_result blocks must come first in the content, before any other block", i)
				}
				if !slices.Contains(calls, id) {
					bad("messages.%d.content.%d: unexpected `tool_use_id` found in `tool_result` blocks: %s. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.", i, j, id)
				}
				results = append(results, id)
			default:
				bad("messages.%d.content.%d.type: unknown content block type %v", i, j, b["type"])
			}
		}
		var missing []string
		for _, id := range calls {
			if !slices.Contains(results, id) {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			bad("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", i-1, strings.Join(missing, ", "))
		}
		calls = uses
	}
	if len(calls) > 0 {
		bad("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", len(msgs)-1, strings.Join(calls, ", "))
	}
	return errors.Join(errs...)
}

// CheckOpenAI returns why a chat-completions endpoint would refuse a
// request with these headers and body, or nil. official holds the request
// to what OpenAI's own service also refuses: no bearer key (401), and
// max_tokens beside max_completion_tokens.
func CheckOpenAI(h http.Header, body []byte, official bool) error {
	if official && !strings.HasPrefix(h.Get("Authorization"), "Bearer ") {
		return errors.New("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth")
	}
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return fmt.Errorf("We could not parse the JSON body of your request: %v", err)
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		bad("the body must be sent as application/json")
	}
	for k := range req {
		if !slices.Contains(openaiFields, k) {
			bad("Unrecognized request argument supplied: %s", k)
		}
	}
	var model string
	if json.Unmarshal(req["model"], &model) != nil || model == "" {
		bad("you must provide a model parameter")
	}
	for _, k := range []string{"max_tokens", "max_completion_tokens"} {
		if raw, ok := req[k]; ok {
			var n int
			if json.Unmarshal(raw, &n) != nil || n < 1 {
				bad("Invalid '%s': integer below minimum value. Expected a value >= 1.", k)
			}
		}
	}
	_, mt := req["max_tokens"]
	_, mct := req["max_completion_tokens"]
	if official && mt && mct {
		bad("Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported.")
	}
	if raw, ok := req["tools"]; ok {
		var tools []struct {
			Type     string `json:"type"`
			Function struct {
				Name       string         `json:"name"`
				Parameters map[string]any `json:"parameters"`
			} `json:"function"`
		}
		if err := json.Unmarshal(raw, &tools); err != nil {
			bad("Invalid type for 'tools': expected an array of objects.")
		}
		for i, t := range tools {
			if t.Type != "function" {
				bad("Invalid value for 'tools[%d].type': expected 'function'.", i)
			}
			if !toolName.MatchString(t.Function.Name) {
				bad("Invalid 'tools[%d].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.", i)
			}
		}
	}
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(req["messages"], &msgs); err != nil || len(msgs) == 0 {
		bad("Invalid 'messages': empty array. Expected an array with minimum length 1.")
		return errors.Join(errs...)
	}
	var pending []string // tool_call ids not yet answered
	answering := false   // the previous messages are an assistant's calls and their answers
	for i, m := range msgs {
		var role string
		_ = json.Unmarshal(m["role"], &role)
		if role != "tool" && len(pending) > 0 {
			bad("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: %s", strings.Join(pending, ", "))
			pending = nil
		}
		content, hasContent := m["content"]
		isNull := !hasContent || string(content) == "null"
		var s string
		var parts []map[string]any
		if !isNull && json.Unmarshal(content, &s) != nil && json.Unmarshal(content, &parts) != nil {
			bad("Invalid type for 'messages[%d].content': expected one of a string or array of objects.", i)
		}
		switch role {
		case "system", "developer", "user":
			if isNull {
				bad("Invalid type for 'messages[%d].content': expected one of a string or array of objects, but got null instead.", i)
			}
			answering = false
		case "assistant":
			var calls []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string          `json:"name"`
					Arguments json.RawMessage `json:"arguments"`
				} `json:"function"`
			}
			if raw, ok := m["tool_calls"]; ok {
				if err := json.Unmarshal(raw, &calls); err != nil || len(calls) == 0 {
					bad("Invalid 'messages[%d].tool_calls': empty array. Expected an array with minimum length 1.", i)
				}
			}
			if isNull && len(calls) == 0 {
				bad("Invalid value for 'messages[%d].content': content is required unless tool_calls is given.", i)
			}
			for j, c := range calls {
				var args string
				if c.ID == "" {
					bad("Missing required parameter: 'messages[%d].tool_calls[%d].id'.", i, j)
				}
				if c.Type != "function" {
					bad("Missing required parameter: 'messages[%d].tool_calls[%d].type'.", i, j)
				}
				if c.Function.Name == "" {
					bad("Missing required parameter: 'messages[%d].tool_calls[%d].function.name'.", i, j)
				}
				if json.Unmarshal(c.Function.Arguments, &args) != nil {
					bad("Invalid type for 'messages[%d].tool_calls[%d].function.arguments': expected a string.", i, j)
				}
				pending = append(pending, c.ID)
			}
			answering = len(calls) > 0
		case "tool":
			var id string
			_ = json.Unmarshal(m["tool_call_id"], &id)
			switch {
			case isNull:
				bad("Invalid type for 'messages[%d].content': expected one of a string or array of objects, but got null instead.", i)
			case !answering:
				bad("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.")
			case !slices.Contains(pending, id):
				bad("Invalid parameter: 'tool_call_id' of '%s' not found in 'tool_calls' of previous message.", id)
			}
			pending = slices.DeleteFunc(pending, func(p string) bool { return p == id })
		default:
			bad("Invalid value: '%s'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.", role)
		}
	}
	if len(pending) > 0 {
		bad("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: %s", strings.Join(pending, ", "))
	}
	return errors.Join(errs...)
}

// Reject answers err as the provider's API answers a refused request: 401
// for a missing key, else 400, with its error body.
func Reject(w http.ResponseWriter, provider string, err error) {
	msg, _ := json.Marshal(err.Error())
	status, kind := http.StatusBadRequest, "invalid_request_error"
	if strings.Contains(err.Error(), "x-api-key") || strings.Contains(err.Error(), "API key") {
		status, kind = http.StatusUnauthorized, "authentication_error"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if provider == "anthropic" {
		fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%s}}`, kind, msg)
		return
	}
	fmt.Fprintf(w, `{"error":{"message":%s,"type":%q,"param":null,"code":null}}`, msg, kind)
}
