package llm

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ratelimiter/ratelimiter/internal/testkit"
)

// TestHostileAnswerCostBounded: an answer within maxResponseBytes made of
// what costs the most once decoded (empty objects, as content blocks or in
// a tool call's input) costs about its bytes, not many times them.
func TestHostileAnswerCostBounded(t *testing.T) {
	objects := "[" + strings.Repeat("{},", (maxResponseBytes-200)/3-1) + "{}]"
	args, _ := json.Marshal(`{"a":[` + strings.Repeat("{},", (maxResponseBytes-300)/3-1) + `{}]}`)
	f := func(name, provider, body string, refused bool) {
		t.Helper()
		if len(body) > maxResponseBytes {
			t.Fatalf("%s: the answer is %d bytes, over maxResponseBytes", name, len(body))
		}
		status := 200
		if strings.HasPrefix(body, `{"error"`) {
			status = 500
		}
		s := startStandIn(t, reply{status, nil, body})
		c := newClient(t, provider, s.URL)
		var err error
		n, _ := testkit.Allocated(func() { _, err = c.Complete(context.Background(), hello) })
		t.Logf("%s: %d bytes allocated %d MiB, err %v", name, len(body), n>>20, err)
		if status != 200 {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != 500 {
				t.Errorf("%s: error %v; want the HTTP 500", name, err)
			}
		} else if refused && (err == nil || !strings.Contains(err.Error(), "maxResponseValues")) {
			t.Errorf("%s: error %v; want it refused, naming maxResponseValues", name, err)
		}
		if n > 32<<20 {
			t.Errorf("%s: allocated %d MiB; want at most 32 MiB", name, n>>20)
		}
	}
	f("anthropic content of empty blocks", Anthropic, `{"type":"message","stop_reason":"end_turn","content":`+objects+`}`, true)
	f("anthropic tool input of empty objects", Anthropic, `{"type":"message","stop_reason":"tool_use","content":[{"type":"tool_use","id":"t1","name":"read_nodes","input":{"a":`+objects+`}}]}`, true)
	// The arguments are a string: counted as one value, decoded only once
	// they are known to be small enough for the caller to take.
	f("openai arguments of empty objects", OpenAI, `{"choices":[{"message":{"tool_calls":[{"id":"c1","function":{"name":"read_nodes","arguments":`+string(args)+`}}]},"finish_reason":"tool_calls"}]}`, false)
	f("openai error code of empty objects", OpenAI, `{"error":{"message":"m","type":"t","code":`+objects+`}}`, false)
}
