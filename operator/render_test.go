package operator

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestWriteTicket(t *testing.T) {
	d, _ := json.Marshal(Diagnosis{Diagnoser: DiagnoserBoth, Confidence: 0.8, Summary: "slow redis", RootCause: "latency",
		Diagnoses: []Diagnosis{{Diagnoser: DiagnoserRules, Confidence: 0.8, Summary: "slow redis"}, {Diagnoser: DiagnoserLLM, Error: "timeout"}}})
	tk := Ticket{ID: 7, Status: StatusDiagnosed, Key: "high_p99:", Message: "p99 over 50 ms", Occurrences: 3, Diagnosis: d}
	props := []Proposal{{ID: 9, Action: "scale", Status: ProposalPending, Params: map[string]any{"n": 2}, Result: ""}}
	audit := []AuditEntry{{Actor: "monitor", Event: "opened", Detail: json.RawMessage(`{"key":"high_p99:"}`)}}
	var b strings.Builder
	WriteTicket(&b, tk, props, audit)
	for _, want := range []string{
		"ticket 7\tdiagnosed\thigh_p99:\np99 over 50 ms\n",
		", 3 occurrences\n",
		"diagnosis (both, confidence 0.80): slow redis\nroot cause: latency\n",
		"  rules (confidence 0.80): slow redis\n",
		"  llm (confidence 0.00): \n    error: timeout\n",
		"9\tscale\tpending\t{\"n\":2}\t\n",
		"\tmonitor\topened\t{\"key\":\"high_p99:\"}\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("WriteTicket output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	WriteProposals(&b, props)
	if want := "ID\tTICKET\tACTION\tRISK\tAPPROVAL\tSTATUS\tPARAMS\n9\t0\tscale\t\tfalse\tpending\t{\"n\":2}\n"; b.String() != want {
		t.Errorf("WriteProposals = %q; want %q", b.String(), want)
	}
}
