package operator

import (
	"os"
	"testing"
	"time"

	"github.com/ratelimiter/ratelimiter/config"
)

// FuzzSubject loads arbitrary files as the operator's configuration: an
// error or a subject, never a panic; and a subject that validates compiles
// into the evaluator and the playbook rules the loop runs.
func FuzzSubject(f *testing.F) {
	data, err := os.ReadFile("../config.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("[subjects.x]\nbase_urls = [\"http://127.0.0.1:1\"]\n[[subjects.x.invariants]]\nname = \"i\"\nexpr = \"1 +\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tf := testFile{Operator: DefaultConfig()}
		if err := config.Decode("fuzz.toml", data, &tf); err != nil {
			return
		}
		for name, s := range tf.Subjects {
			if s.Validate() != nil {
				continue
			}
			e, err := newEvaluator(&s, s.templates(), nil, tf.Operator.Interval.Duration)
			if err != nil {
				t.Fatalf("subject %s validates but does not compile: %v", name, err)
			}
			newRules(&s, s.templates(), e.hist, time.Now)
		}
	})
}
