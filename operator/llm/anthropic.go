package llm

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The Messages API: content is a list of blocks; the assistant asks for a
// tool with a tool_use block (id, name, input object) and stops with
// stop_reason "tool_use"; the next user turn answers every call with a
// tool_result block (tool_use_id, content, is_error), results first.

type anthropicBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   string          `json:"content,omitempty"`
	IsError   bool            `json:"is_error,omitempty"`
}

type anthropicMessage struct {
	Role    string           `json:"role"`
	Content []anthropicBlock `json:"content"`
}

type anthropicRequest struct {
	Model     string             `json:"model"`
	MaxTokens int                `json:"max_tokens"`
	System    string             `json:"system,omitempty"`
	Messages  []anthropicMessage `json:"messages"`
	Tools     []Tool             `json:"tools,omitempty"` // name, description, input_schema
}

// anthropicBody builds the request. The API refuses a message with no
// content ("content": null or []) and a text block of only whitespace,
// and wants the roles to alternate: a turn that says nothing (a model that
// ended its turn without a word) is left out, and the turns around it,
// now of the same role, become one.
func anthropicBody(model string, r Request) anthropicRequest {
	out := anthropicRequest{Model: model, MaxTokens: r.MaxTokens, System: r.System, Tools: r.Tools}
	for _, m := range r.Messages {
		var blocks []anthropicBlock
		for _, res := range m.Results {
			blocks = append(blocks, anthropicBlock{Type: "tool_result", ToolUseID: res.CallID, Content: res.Content, IsError: res.IsError})
		}
		if strings.TrimSpace(m.Text) != "" {
			blocks = append(blocks, anthropicBlock{Type: "text", Text: m.Text})
		}
		for _, c := range m.ToolCalls {
			blocks = append(blocks, anthropicBlock{Type: "tool_use", ID: c.ID, Name: c.Name, Input: c.Input})
		}
		switch n := len(out.Messages); {
		case len(blocks) == 0:
		case n > 0 && out.Messages[n-1].Role == m.Role:
			// Results answer the assistant turn just before, so they are
			// never behind another block of a merged turn.
			out.Messages[n-1].Content = append(out.Messages[n-1].Content, blocks...)
		default:
			out.Messages = append(out.Messages, anthropicMessage{Role: m.Role, Content: blocks})
		}
	}
	return out
}

func anthropicDecode(data []byte) (*Response, error) {
	var body struct {
		Type    string `json:"type"`
		Content []struct {
			Type  string          `json:"type"`
			Text  string          `json:"text"`
			ID    string          `json:"id"`
			Name  string          `json:"name"`
			Input json.RawMessage `json:"input"`
		} `json:"content"`
		StopReason string `json:"stop_reason"`
		Usage      struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, fmt.Errorf("%w: %v: %s", ErrMalformed, err, truncate(data, 200))
	}
	if body.Type != "message" || body.StopReason == "" {
		return nil, fmt.Errorf("%w: not a message (type %q, stop_reason %q): %s", ErrMalformed, body.Type, body.StopReason, truncate(data, 200))
	}
	out := &Response{RawStop: body.StopReason, Usage: Usage{Input: body.Usage.InputTokens, Output: body.Usage.OutputTokens}}
	var text []string
	for _, b := range body.Content {
		switch b.Type {
		case "text":
			text = append(text, b.Text)
		case "tool_use":
			if b.ID == "" || b.Name == "" {
				return nil, fmt.Errorf("%w: a tool_use block without id or name", ErrMalformed)
			}
			in, err := objectInput(b.Name, b.Input)
			if err != nil {
				return nil, err
			}
			out.ToolCalls = append(out.ToolCalls, ToolCall{ID: b.ID, Name: b.Name, Input: in})
		}
	}
	out.Text = strings.Join(text, "\n")
	switch body.StopReason {
	case "end_turn", "stop_sequence":
		out.Stop = StopEnd
	case "tool_use":
		out.Stop = StopToolUse
		if len(out.ToolCalls) == 0 {
			return nil, fmt.Errorf("%w: stop_reason tool_use without a tool_use block", ErrMalformed)
		}
	case "max_tokens":
		out.Stop = StopMaxTokens
	case "refusal":
		out.Stop, out.Refusal = StopRefusal, out.Text
	default:
		out.Stop = body.StopReason
	}
	return out, nil
}
