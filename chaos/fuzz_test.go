package chaos

import (
	"testing"

	"github.com/ratelimiter/ratelimiter/config"
)

// FuzzScenarios loads arbitrary scenario files: an error or scenarios,
// never a panic; and what loads can be selected by name.
func FuzzScenarios(f *testing.F) {
	f.Add(defaultScenarios)
	f.Add([]byte("[[scenario]]\nname = \"x\"\ndetect_within = \"-1s\"\nfault = { kind = \"limit_set\", max_requests = -1 }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Scenarios
		if err := config.Decode("fuzz.toml", data, &s); err != nil {
			return
		}
		for _, sc := range s.Scenario {
			if _, err := Select(s.Scenario, []string{sc.Name}); err != nil {
				t.Fatalf("loaded scenario %q cannot be selected: %v", sc.Name, err)
			}
		}
	})
}
