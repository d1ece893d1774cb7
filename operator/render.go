package operator

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// The text forms of tickets, proposals and the audit log, for the CLI
// (`operator tickets`, `operator actions`); w is usually a tabwriter. The
// JSON forms are the types themselves.

// WriteTickets writes one line per ticket.
func WriteTickets(w io.Writer, ts []Ticket) {
	fmt.Fprintln(w, "ID\tSTATUS\tSEVERITY\tKEY\tSEEN\tLAST\tMESSAGE")
	for _, t := range ts {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", t.ID, t.Status, t.Severity, t.Key, t.Occurrences,
			t.LastSeen.Local().Format(time.TimeOnly), t.Message)
	}
}

// WriteTicket writes a ticket with its diagnosis, its proposals and its
// audit log.
func WriteTicket(w io.Writer, t Ticket, props []Proposal, audit []AuditEntry) {
	fmt.Fprintf(w, "ticket %d\t%s\t%s\n%s\n", t.ID, t.Status, t.Key, t.Message)
	fmt.Fprintf(w, "first seen %s, last seen %s, %d occurrences\n", t.FirstSeen.Local().Format(time.DateTime), t.LastSeen.Local().Format(time.DateTime), t.Occurrences)
	if len(t.Diagnosis) > 0 {
		var d Diagnosis
		_ = json.Unmarshal(t.Diagnosis, &d)
		fmt.Fprintf(w, "\ndiagnosis (%s, confidence %.2f): %s\nroot cause: %s\n", d.Diagnoser, d.Confidence, d.Summary, d.RootCause)
		if d.Error != "" {
			fmt.Fprintf(w, "error: %s\n", d.Error)
		}
		if d.Turns > 0 {
			fmt.Fprintf(w, "model: %d turns, %d tokens\n", d.Turns, d.Tokens)
		}
		for _, sub := range d.Diagnoses { // diagnoser both: each one's view
			fmt.Fprintf(w, "  %s (confidence %.2f): %s\n", sub.Diagnoser, sub.Confidence, sub.Summary)
			if sub.Error != "" {
				fmt.Fprintf(w, "    error: %s\n", sub.Error)
			}
		}
	}
	fmt.Fprintln(w, "\nPROPOSAL\tACTION\tSTATUS\tPARAMS\tRESULT")
	for _, p := range props {
		b, _ := json.Marshal(p.Params)
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", p.ID, p.Action, p.Status, b, p.Result)
	}
	fmt.Fprintln(w, "\nAT\tACTOR\tEVENT\tDETAIL")
	for _, a := range audit {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", a.At.Local().Format(time.TimeOnly), a.Actor, a.Event, a.Detail)
	}
}

// WriteProposals writes one line per proposal.
func WriteProposals(w io.Writer, ps []Proposal) {
	fmt.Fprintln(w, "ID\tTICKET\tACTION\tRISK\tAPPROVAL\tSTATUS\tPARAMS")
	for _, p := range ps {
		b, _ := json.Marshal(p.Params)
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%v\t%s\t%s\n", p.ID, p.TicketID, p.Action, p.RiskLevel, p.RequiresApproval, p.Status, b)
	}
}

// WriteProposal writes one proposal in full.
func WriteProposal(w io.Writer, p Proposal) {
	b, _ := json.Marshal(p.Params)
	fmt.Fprintf(w, "proposal %d\tticket %d\n%s %s\nstatus %s, risk %s, requires approval %v\nreason: %s\nresult: %s\n",
		p.ID, p.TicketID, p.Action, b, p.Status, p.RiskLevel, p.RequiresApproval, p.Reason, p.Result)
}
