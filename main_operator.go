package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ratelimiter/ratelimiter/config"
	"github.com/ratelimiter/ratelimiter/operator"
)

// lookup returns the value of a flag set on this command or any parent, so
// `operator --db X run` and `operator run --db X` both work.
func lookup(c *cli.Context, name string) (string, bool) {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc.String(name), true
		}
	}
	return "", false
}

func lookupSlice(c *cli.Context, name string) ([]string, bool) {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc.StringSlice(name), true
		}
	}
	return nil, false
}

// prefixed puts prefix before the TOML path of every problem in err.
func prefixed(prefix string, err error) error {
	var p config.Problems
	p.Merge(prefix, err)
	return p.Err()
}

func operatorFlags() []cli.Flag {
	return append(logFlags(),
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "TOML file (default: the embedded config.toml)"},
		&cli.StringFlag{Name: "subject", Usage: "subject to operate (default: [operator].subject)"},
		&cli.StringFlag{Name: "db", Usage: "SQLite file for tickets and the audit log"},
		&cli.DurationFlag{Name: "interval", Usage: "loop interval"},
		&cli.StringFlag{Name: "mode", Usage: "observe, approve or auto"},
		&cli.StringFlag{Name: "diagnoser", Usage: "rules, llm or both (llm and both need [operator.llm]; docs/llm.md)"},
		&cli.StringSliceFlag{Name: "subject-url", Usage: "override the subject's base URLs (repeatable)"},
		&cli.BoolFlag{Name: "json", Usage: "JSON output for list and show"},
		&cli.StringFlag{Name: "http", Usage: "serve the read-only status page, its JSON and /metrics on this address (run only)"},
	)
}

// operatorEnv is what every operator command needs.
type operatorEnv struct {
	cfg   operator.Config
	subj  operator.Subject
	urls  []string
	store *operator.Store
	op    *operator.Operator
	json  bool
	out   io.Writer
}

func openOperator(c *cli.Context) (*operatorEnv, error) {
	path, _ := lookup(c, "config")
	f, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	env := &operatorEnv{cfg: f.Operator, out: c.App.Writer}
	if v, ok := lookup(c, "subject"); ok {
		env.cfg.Subject = v
	}
	if v, ok := lookup(c, "db"); ok {
		env.cfg.DB = v
	}
	if v, ok := lookup(c, "mode"); ok {
		env.cfg.Mode = v
	}
	if v, ok := lookup(c, "interval"); ok {
		if env.cfg.Interval.Duration, err = time.ParseDuration(v); err != nil {
			return nil, fmt.Errorf("invalid --interval: %w", err)
		}
	}
	if v, ok := lookup(c, "diagnoser"); ok {
		env.cfg.Diagnoser = v
	}
	// The flags may have made a valid file's [operator] invalid (--diagnoser
	// llm without [operator.llm]): say so with the TOML paths to fix.
	var p config.Problems
	p.Merge("operator", env.cfg.Validate())
	if err := p.Err(); err != nil {
		return nil, fmt.Errorf("invalid configuration with the flags given:\n%w", err)
	}
	for _, cc := range c.Lineage() {
		if cc.IsSet("subject-url") {
			env.urls = cc.StringSlice("subject-url")
			break
		}
		if cc.IsSet("json") {
			env.json = cc.Bool("json")
		}
	}
	for _, cc := range c.Lineage() {
		if cc.IsSet("json") {
			env.json = cc.Bool("json")
			break
		}
	}
	subj, ok := f.Subjects[env.cfg.Subject]
	if !ok {
		return nil, fmt.Errorf("no subject %q in the configuration (have %s)", env.cfg.Subject, strings.Join(subjectNames(f), ", "))
	}
	env.subj = subj
	log, err := newLogger(c)
	if err != nil {
		return nil, err
	}
	if env.store, err = operator.OpenStore(env.cfg.DB); err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", env.cfg.DB, err)
	}
	if env.op, err = operator.New(env.cfg, subj, env.urls, env.store, operator.ResolveSecrets(env.cfg, subj, os.Getenv), log, time.Now); err != nil {
		env.store.Close()
		return nil, err
	}
	return env, nil
}

func subjectNames(f *fileConfig) []string {
	names := make([]string, 0, len(f.Subjects))
	for n := range f.Subjects {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// withOperator runs f with an opened operator and closes it after.
func withOperator(f func(c *cli.Context, env *operatorEnv) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		// The CLI stops reading flags at the first argument: a flag after
		// one would be silently ignored and the command would act on the
		// default database.
		for _, a := range c.Args().Slice() {
			if strings.HasPrefix(a, "-") {
				return fmt.Errorf("%q comes after an argument: put flags before arguments", a)
			}
		}
		env, err := openOperator(c)
		if err != nil {
			return err
		}
		defer env.store.Close()
		return f(c, env)
	}
}

func (e *operatorEnv) print(v any, text func(w io.Writer)) error {
	if e.json {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.out, 2, 4, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

func argID(c *cli.Context) (int64, error) {
	if c.NArg() != 1 {
		return 0, fmt.Errorf("want exactly one ID, got %q (flags go before the ID)", c.Args().Slice())
	}
	id, err := strconv.ParseInt(c.Args().First(), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("want a numeric ID, got %q", c.Args().First())
	}
	return id, nil
}

func operatorCommand() *cli.Command {
	run := withOperator(func(c *cli.Context, env *operatorEnv) error {
		addr, ok := lookup(c, "http")
		if !ok {
			return env.op.Run(c.Context)
		}
		return serveWhile(c.Context, addr, env.op.StatusHandler(), env.op.Run)
	})
	return &cli.Command{
		Name:   "operator",
		Usage:  "watch a subject, open tickets, diagnose and act (default: run)",
		Flags:  operatorFlags(),
		Action: run,
		Subcommands: []*cli.Command{
			{Name: "run", Usage: "run the monitor loop", Flags: operatorFlags(), Action: run},
			{Name: "check", Usage: "validate the configuration and exit", Flags: operatorFlags(), Action: func(c *cli.Context) error {
				path, _ := lookup(c, "config")
				f, err := loadConfig(path)
				if err != nil {
					return err
				}
				name := f.Operator.Subject
				if v, ok := lookup(c, "subject"); ok {
					name = v
				}
				subj, ok := f.Subjects[name]
				if !ok {
					return fmt.Errorf("no subject %q in the configuration", name)
				}
				if urls, ok := lookupSlice(c, "subject-url"); ok {
					// Check every expression against what the live subject reports.
					sample, err := operator.Sample(c.Context, subj, urls)
					if err != nil {
						return fmt.Errorf("cannot sample the subject at %v: %w", urls, err)
					}
					if err := subj.CheckNames(sample); err != nil {
						return fmt.Errorf("invalid configuration (against the live subject at %v):\n%w", urls, prefixed("subjects."+name, err))
					}
					fmt.Fprintf(c.App.Writer, "expressions checked against the live subject at %s\n", strings.Join(urls, ", "))
				}
				fmt.Fprintf(c.App.Writer, "configuration valid: subjects %s\n", strings.Join(subjectNames(f), ", "))
				return nil
			}},
			{Name: "observe", Usage: "print what the operator sees now, and the SLOs", Flags: operatorFlags(),
				Action: withOperator(func(c *cli.Context, env *operatorEnv) error {
					obs, err := env.op.Observe(c.Context)
					if err != nil {
						return err
					}
					slos := env.op.SLOs(obs)
					return env.print(map[string]any{"observations": obs, "slos": slos}, func(w io.Writer) {
						names := make([]string, 0, len(obs))
						for n := range obs {
							names = append(names, n)
						}
						sort.Strings(names)
						for _, n := range names {
							b, _ := json.Marshal(obs[n])
							fmt.Fprintf(w, "%s\t%s\n", n, b)
						}
						fmt.Fprintln(w)
						fmt.Fprintln(w, "SLO\tVALUE\tTARGET\tSTATUS")
						for _, s := range slos {
							fmt.Fprintf(w, "%s\t%g %s\t%g %s\t%s%s\n", s.Name, s.Value, s.Unit, s.Target, s.Unit, s.Status, s.Error)
						}
					})
				})},
			ticketsCommand(), actionsCommand(),
			{Name: "act", Usage: "run an action now: act NAME key=value… (refused in observe mode or past the caps unless --force)", ArgsUsage: "NAME key=value…",
				Flags: append(operatorFlags(), &cli.BoolFlag{Name: "force", Usage: "run it despite the kill switch and the caps (audited as forced)"}),
				Action: withOperator(func(c *cli.Context, env *operatorEnv) error {
					if c.NArg() < 1 {
						return errors.New("usage: operator act NAME key=value…")
					}
					params := map[string]any{}
					for _, kv := range c.Args().Slice()[1:] {
						k, v, ok := strings.Cut(kv, "=")
						if !ok {
							return fmt.Errorf("parameter %q is not key=value", kv)
						}
						params[k] = v
					}
					p, err := env.op.Act(c.Context, c.Args().First(), params, "cli", c.Bool("force"))
					if err != nil {
						return err
					}
					if err := env.print(p, func(w io.Writer) { fmt.Fprintf(w, "proposal %d: %s %s\n", p.ID, p.Status, p.Result) }); err != nil {
						return err
					}
					if p.Status != operator.ProposalSucceeded {
						return fmt.Errorf("action %s %s", p.Action, p.Status)
					}
					return nil
				})},
			{Name: "mode", Usage: "show or set the mode: mode [observe|approve|auto] (observe is the kill switch)", Flags: operatorFlags(),
				Action: withOperator(func(c *cli.Context, env *operatorEnv) error {
					if c.NArg() == 0 {
						m, ok, err := env.store.Mode(c.Context)
						if err != nil {
							return err
						}
						if !ok {
							m = env.cfg.Mode + " (from the configuration)"
						}
						fmt.Fprintln(env.out, m)
						return nil
					}
					if c.NArg() > 1 {
						return fmt.Errorf("want one mode, got %q (flags go before the mode)", c.Args().Slice())
					}
					m := c.Args().First()
					if m != operator.ModeObserve && m != operator.ModeApprove && m != operator.ModeAuto {
						return fmt.Errorf("mode must be observe, approve or auto, got %q", m)
					}
					if err := env.store.SetMode(c.Context, m, "cli"); err != nil {
						return err
					}
					fmt.Fprintf(env.out, "mode set to %s\n", m)
					return nil
				})},
		},
	}
}

func ticketsCommand() *cli.Command {
	// status moves a ticket by hand. The model (operator's ticketMoves)
	// refuses illegal moves; from narrows them further (unhold only undoes
	// a hold).
	status := func(to string, from []string) cli.ActionFunc {
		return withOperator(func(c *cli.Context, env *operatorEnv) error {
			id, err := argID(c)
			if err != nil {
				return err
			}
			if to == operator.StatusResolved {
				return env.store.Resolve(c.Context, id, "cli", "resolved by hand", time.Now())
			}
			ok, err := env.store.SetStatus(c.Context, id, from, to, "cli", "set by hand")
			if err == nil && !ok {
				err = fmt.Errorf("ticket %d cannot move to %s from its current status", id, to)
			}
			return err
		})
	}
	return &cli.Command{Name: "tickets", Usage: "list|show|resolve|hold|unhold", Subcommands: []*cli.Command{
		{Name: "list", Usage: "list the unresolved tickets", Flags: append(operatorFlags(), &cli.BoolFlag{Name: "all", Usage: "include resolved tickets"}),
			Action: withOperator(func(c *cli.Context, env *operatorEnv) error {
				ts, err := env.store.Tickets(c.Context, operator.TicketFilter{Unresolved: !c.Bool("all"), Limit: 200})
				if err != nil {
					return err
				}
				return env.print(ts, func(w io.Writer) { operator.WriteTickets(w, ts) })
			})},
		{Name: "show", ArgsUsage: "ID", Usage: "show a ticket with its proposals and audit trail", Flags: operatorFlags(), Action: withOperator(func(c *cli.Context, env *operatorEnv) error {
			id, err := argID(c)
			if err != nil {
				return err
			}
			t, err := env.store.Ticket(c.Context, id)
			if err != nil {
				return err
			}
			props, err := env.store.Proposals(c.Context, operator.ProposalFilter{TicketID: id})
			if err != nil {
				return err
			}
			audit, err := env.store.AuditLog(c.Context, id, 500)
			if err != nil {
				return err
			}
			return env.print(map[string]any{"ticket": t, "proposals": props, "audit": audit}, func(w io.Writer) {
				operator.WriteTicket(w, t, props, audit)
			})
		})},
		{Name: "resolve", ArgsUsage: "ID", Usage: "resolve a ticket by hand; its pending and approved actions are skipped", Flags: operatorFlags(), Action: status(operator.StatusResolved, nil)},
		{Name: "hold", ArgsUsage: "ID", Usage: "stop the operator acting on a ticket", Flags: operatorFlags(), Action: status(operator.StatusHeld, nil)},
		{Name: "unhold", ArgsUsage: "ID", Usage: "let the operator act on a held ticket again", Flags: operatorFlags(), Action: status(operator.StatusDiagnosed, []string{operator.StatusHeld})},
	}}
}

func actionsCommand() *cli.Command {
	decide := func(to string) cli.ActionFunc {
		return withOperator(func(c *cli.Context, env *operatorEnv) error {
			id, err := argID(c)
			if err != nil {
				return err
			}
			ok, err := env.store.Transition(c.Context, id, operator.ProposalPending, to, "cli", "", time.Now())
			if err == nil && !ok {
				err = fmt.Errorf("proposal %d is not pending", id)
			}
			if err == nil {
				fmt.Fprintf(env.out, "proposal %d %s\n", id, to)
			}
			return err
		})
	}
	return &cli.Command{Name: "actions", Usage: "list|show|approve|reject", Subcommands: []*cli.Command{
		{Name: "list", Usage: "list the proposals still to run or verify", Flags: append(operatorFlags(), &cli.BoolFlag{Name: "all", Usage: "include finished proposals"}),
			Action: withOperator(func(c *cli.Context, env *operatorEnv) error {
				f := operator.ProposalFilter{Limit: 200}
				if !c.Bool("all") {
					f.Status = []string{operator.ProposalPending, operator.ProposalApproved, operator.ProposalExecuting}
				}
				ps, err := env.store.Proposals(c.Context, f)
				if err != nil {
					return err
				}
				return env.print(ps, func(w io.Writer) { operator.WriteProposals(w, ps) })
			})},
		{Name: "show", ArgsUsage: "ID", Usage: "show a proposal: its action, parameters, risk, reason and result", Flags: operatorFlags(), Action: withOperator(func(c *cli.Context, env *operatorEnv) error {
			id, err := argID(c)
			if err != nil {
				return err
			}
			p, err := env.store.Proposal(c.Context, id)
			if err != nil {
				return err
			}
			return env.print(p, func(w io.Writer) { operator.WriteProposal(w, p) })
		})},
		{Name: "approve", ArgsUsage: "ID", Usage: "approve a pending proposal; the loop runs it on its next pass", Flags: operatorFlags(), Action: decide(operator.ProposalApproved)},
		{Name: "reject", ArgsUsage: "ID", Usage: "reject a pending proposal; it never runs", Flags: operatorFlags(), Action: decide(operator.ProposalRejected)},
	}}
}

// serveWhile serves h on addr for as long as run runs, and stops serving
// when it returns.
func serveWhile(ctx context.Context, addr string, h http.Handler, run func(context.Context) error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	runErr := run(ctx)
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shut)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) && runErr == nil {
		return err
	}
	return runErr
}
