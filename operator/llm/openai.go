package llm

import (
	"encoding/json"
	"fmt"
)

// Chat completions: the assistant message carries tool_calls (id, type
// "function", function {name, arguments: a JSON string}) with
// finish_reason "tool_calls"; each call is answered by a message with role
// "tool" and its tool_call_id. The output cap is max_completion_tokens,
// since OpenAI's newer models refuse the older max_tokens; OpenAI also
// refuses both at once. Compatible servers (llama.cpp, older vLLM and
// Ollama) ignore max_completion_tokens and read only max_tokens, so every
// other endpoint gets both, with the same value.

type openaiFunction struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Parameters  map[string]any `json:"parameters,omitempty"`
	Arguments   *string        `json:"arguments,omitempty"`
}

type openaiToolCall struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Function openaiFunction `json:"function"`
}

type openaiMessage struct {
	Role       string           `json:"role"`
	Content    string           `json:"content"` // "" for an assistant turn with only calls: some servers choke on null
	ToolCalls  []openaiToolCall `json:"tool_calls,omitempty"`
	ToolCallID string           `json:"tool_call_id,omitempty"`
}

type openaiTool struct {
	Type     string         `json:"type"`
	Function openaiFunction `json:"function"`
}

type openaiRequest struct {
	Model               string          `json:"model"`
	Messages            []openaiMessage `json:"messages"`
	Tools               []openaiTool    `json:"tools,omitempty"`
	MaxCompletionTokens int             `json:"max_completion_tokens,omitempty"`
	MaxTokens           int             `json:"max_tokens,omitempty"`
}

// openaiBody builds the request; official is true for OpenAI's own
// service, which refuses max_tokens beside max_completion_tokens.
func openaiBody(model string, r Request, official bool) openaiRequest {
	out := openaiRequest{Model: model, MaxCompletionTokens: r.MaxTokens}
	if !official {
		out.MaxTokens = r.MaxTokens
	}
	str := func(s string) *string { return &s }
	if r.System != "" {
		out.Messages = append(out.Messages, openaiMessage{Role: "system", Content: r.System})
	}
	for _, m := range r.Messages {
		for _, res := range m.Results {
			content := res.Content
			if res.IsError {
				// Chat completions has no error flag on a tool message.
				content = "error: " + content
			}
			out.Messages = append(out.Messages, openaiMessage{Role: "tool", ToolCallID: res.CallID, Content: content})
		}
		if m.Text == "" && len(m.ToolCalls) == 0 {
			continue
		}
		om := openaiMessage{Role: m.Role, Content: m.Text}
		for _, c := range m.ToolCalls {
			om.ToolCalls = append(om.ToolCalls, openaiToolCall{ID: c.ID, Type: "function",
				Function: openaiFunction{Name: c.Name, Arguments: str(string(c.Input))}})
		}
		out.Messages = append(out.Messages, om)
	}
	for _, t := range r.Tools {
		out.Tools = append(out.Tools, openaiTool{Type: "function", Function: openaiFunction{Name: t.Name, Description: t.Description, Parameters: t.Schema}})
	}
	return out
}

func openaiDecode(data []byte) (*Response, error) {
	var body struct {
		Choices []struct {
			Message *struct {
				Content   *string `json:"content"`
				Refusal   *string `json:"refusal"`
				ToolCalls []struct {
					ID       string `json:"id"`
					Function struct {
						Name      string          `json:"name"`
						Arguments json.RawMessage `json:"arguments"`
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, fmt.Errorf("%w: %v: %s", ErrMalformed, err, truncate(data, 200))
	}
	if len(body.Choices) == 0 || body.Choices[0].Message == nil {
		return nil, fmt.Errorf("%w: no choice with a message: %s", ErrMalformed, truncate(data, 200))
	}
	ch := body.Choices[0]
	out := &Response{RawStop: ch.FinishReason, Usage: Usage{Input: body.Usage.PromptTokens, Output: body.Usage.CompletionTokens}}
	if ch.Message.Content != nil {
		out.Text = *ch.Message.Content
	}
	for i, tc := range ch.Message.ToolCalls {
		if tc.Function.Name == "" {
			return nil, fmt.Errorf("%w: a tool call without a function name", ErrMalformed)
		}
		args := []byte(tc.Function.Arguments)
		// arguments is a JSON string holding JSON; some servers send the
		// object itself.
		var s string
		if json.Unmarshal(args, &s) == nil {
			args = []byte(s)
		}
		in, err := objectInput(tc.Function.Name, args)
		if err != nil {
			return nil, err
		}
		id := tc.ID
		if id == "" {
			id = fmt.Sprintf("call_%d", i) // some local servers give none; any id the answer echoes will do
		}
		out.ToolCalls = append(out.ToolCalls, ToolCall{ID: id, Name: tc.Function.Name, Input: in})
	}
	switch {
	case ch.Message.Refusal != nil && *ch.Message.Refusal != "":
		out.Stop, out.Refusal = StopRefusal, *ch.Message.Refusal
	case ch.FinishReason == "content_filter":
		out.Stop, out.Refusal = StopRefusal, "content_filter"
	case len(out.ToolCalls) > 0:
		// Some servers say "stop" although the message holds calls.
		out.Stop = StopToolUse
	case ch.FinishReason == "tool_calls":
		return nil, fmt.Errorf("%w: finish_reason tool_calls without a tool call", ErrMalformed)
	case ch.FinishReason == "length":
		out.Stop = StopMaxTokens
	case ch.FinishReason == "stop" || ch.FinishReason == "":
		out.Stop = StopEnd
	default:
		out.Stop = ch.FinishReason
	}
	return out, nil
}
