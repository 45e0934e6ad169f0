package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/decisions"
	"github.com/spf-milter/spf-milter/spf"
)

const replayUsage = `Usage: spf-milter replay --config NEW.yaml [--recheck] [--json] [--top N] DECISIONS.jsonl...

Applies the config NEW.yaml to the decisions the daemon recorded in its
decision log (decision_log.path) and shows what would change: how many
messages would now be refused, tempfailed, accepted or quarantined, by SPF
result and by sender domain, the domains with the most changes first.
Rotated files (PATH.1, PATH.2.gz, ...) may be given too; gzip is read.

The recorded SPF results are reused: NEW.yaml's policy, trusted_networks,
skip_clients, skip_authenticated, skip_senders and rules apply to them as
the daemon would apply them (a rule's until at the time of the record; its
listener and client_name conditions with the values the log recorded, which
it does when the recording config's rules used them). With --recheck every message is checked again,
live, with NEW.yaml's DNS settings: results that changed since recording
are shown, and messages skipped when recorded are decided too.

Lines that are not decision records are counted and listed, never fatal.
Exit status: 0 when the replay ran, 1 when the config or a file cannot be
read, 2 for a bad command line.

Flags:
`

// maxParallel bounds --parallel: more live checks at once would only
// hammer the resolver.
const maxParallel = 256

type replayOptions struct {
	configPath string
	recheck    bool
	json       bool
	top        int
	parallel   int
	files      []string
}

func parseReplay(args []string, stdout io.Writer) (*replayOptions, error) {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &replayOptions{}
	fs.StringVar(&o.configPath, "config", "", "the config `file` to try (required)")
	fs.BoolVar(&o.recheck, "recheck", false, "check SPF again, live, with the config's DNS settings, instead of reusing the recorded results")
	fs.BoolVar(&o.json, "json", false, "print the report as one JSON document")
	fs.IntVar(&o.top, "top", decisions.DefaultTop, "list this many sender `domains`, most changes first; 0 lists all")
	fs.IntVar(&o.parallel, "parallel", decisions.DefaultParallel, "with --recheck, the `checks` run at once")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, replayUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return nil, err
	}
	o.files = fs.Args()
	switch {
	case o.configPath == "":
		return nil, errors.New("--config is required: the config to try")
	case len(o.files) == 0:
		return nil, errors.New("no decision log given")
	case o.top < 0:
		return nil, fmt.Errorf("bad --top %d: want 0 (all) or more", o.top)
	case o.parallel < 1 || o.parallel > maxParallel:
		return nil, fmt.Errorf("bad --parallel %d: want 1 to %d", o.parallel, maxParallel)
	}
	return o, nil
}

func runReplay(args []string, stdout, stderr io.Writer) int {
	o, err := parseReplay(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return usageError(stderr, "replay", "%v", err)
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "spf-milter replay: %s\n", oneLine(err))
		return 1
	}
	cfg, err := config.Load(o.configPath)
	if err != nil {
		return fail(err)
	}
	opts := decisions.ReplayOptions{Config: cfg, Parallel: o.parallel, Top: o.top}
	if o.top == 0 {
		opts.Top = -1
	}
	if o.recheck {
		resolver, err := spf.NewDNSResolver(spf.DNSOptions{
			Servers: cfg.DNS.Servers,
			// A dead server must leave time to ask the next one.
			Timeout:    min(cfg.DNS.Timeout, cfg.DNS.CheckTimeout),
			CacheSize:  cfg.DNS.CacheSize,
			CacheBytes: cfg.DNS.CacheBytes,
		})
		if err != nil {
			return fail(fmt.Errorf("dns: %w", err))
		}
		opts.Checker = &spf.Checker{
			Resolver:    resolver,
			Receiver:    cfg.Receiver,
			Explanation: cfg.Explanation,
			Timeout:     cfg.DNS.CheckTimeout,
		}
	}
	// Every file opens before anything is read: a typo in the last name
	// should not cost a long recheck first.
	var inputs []decisions.Input
	for _, name := range o.files {
		rc, err := decisions.Open(name)
		if err != nil {
			for _, in := range inputs {
				in.R.(io.Closer).Close()
			}
			return fail(err)
		}
		inputs = append(inputs, decisions.Input{Name: name, R: rc})
	}
	defer func() {
		for _, in := range inputs {
			in.R.(io.Closer).Close()
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := decisions.Replay(ctx, opts, inputs...)
	if err != nil {
		return fail(err)
	}
	rep.Config = o.configPath
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(err)
		}
		return 0
	}
	writeReplayText(stdout, rep)
	return 0
}

// writeReplayText prints a report for a person. Domains, results and
// reasons come from the log, which comes from SMTP clients: they are
// escaped.
func writeReplayText(w io.Writer, r *decisions.Report) {
	source := "the recorded SPF results"
	if r.Recheck {
		source = "SPF checked again, live"
	}
	files := strings.Join(r.Files, ", ")
	if r.Decisions == 0 {
		fmt.Fprintf(w, "No decisions in %s.\n", printable(files))
	} else {
		fmt.Fprintf(w, "Replayed %d decisions from %s (%s to %s)\nunder %s, with %s.\n",
			r.Decisions, printable(files), timeText(*r.First), timeText(*r.Last), printable(r.Config), source)
	}
	if r.Replayed > 0 {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "%-12s %8s %8s %8s\n", "Action", "recorded", "now", "change")
		for _, a := range decisions.Actions {
			was, now := r.Recorded.Get(a), r.Now.Get(a)
			fmt.Fprintf(w, "%-12s %8d %8d %8s\n", a, was, now, signed(now-was))
		}
		fmt.Fprintf(w, "%-12s %8d %8d\n", "total", r.Replayed, r.Replayed)

		fmt.Fprintf(w, "\n%d of %d messages would be treated differently.\n", r.Changed, r.Replayed)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		for _, row := range []struct {
			label string
			to    string
			n     int
		}{
			{"Now refused:", "reject", r.NowRefused},
			{"Now tempfailed:", "tempfail", r.NowTempfailed},
			{"Now accepted:", "accept", r.NowAccepted},
			{"Now quarantined:", "quarantine", r.NowQuarantined},
		} {
			fmt.Fprintf(tw, "  %s\t%5d", row.label, row.n)
			var from []string
			for _, t := range r.Transitions {
				if string(t.To) == row.to {
					from = append(from, fmt.Sprintf("%s %d", wasWord(string(t.From)), t.Count))
				}
			}
			if len(from) > 0 {
				fmt.Fprintf(tw, "  (were %s)", strings.Join(from, ", "))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	if len(r.Transitions) > 0 {
		fmt.Fprintln(w, "\nChanges, with the results that decide them now:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range r.Transitions {
			fmt.Fprintf(tw, "  %s -> %s\t%5d\t%s\n", t.From, t.To, t.Count, countsText(t.Results))
		}
		tw.Flush()
	}
	if len(r.Results) > 0 {
		fmt.Fprintln(w, "\nBy result under the new config:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, g := range r.Results {
			fmt.Fprintf(tw, "  %s\t%5d messages\t%s\n", printable(g.Result), g.Messages, changesText(g.Group, false))
		}
		tw.Flush()
	}
	if r.DomainsChanged > 0 {
		fmt.Fprintf(w, "\nSender domains with changes, most first (%d of %d domains with changes, of %d in all):\n",
			len(r.Domains), r.DomainsChanged, r.DomainsTotal)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, d := range r.Domains {
			fmt.Fprintf(tw, "  %s\t%5d of %d\t%s\n", printable(d.Domain), d.Changed, d.Messages, changesText(d.Group, true))
		}
		tw.Flush()
	}
	if len(r.ResultChanges) > 0 {
		fmt.Fprintln(w, "\nMAIL FROM results that changed since recording:")
		for _, c := range r.ResultChanges {
			fmt.Fprintf(w, "  %s -> %s  %d\n", c.From, c.To, c.Count)
		}
	}
	if r.HELOUnknown > 0 {
		fmt.Fprintf(w, "\n%d messages have no recorded HELO result, which the new config would check;\n"+
			"they were decided on MAIL FROM alone (--recheck checks HELO too).\n", r.HELOUnknown)
	}
	if r.Undecided > 0 {
		fmt.Fprintf(w, "\n%d messages could not be decided again:\n", r.Undecided)
		for _, u := range r.UndecidedReasons {
			fmt.Fprintf(w, "  %d %s\n", u.Count, printable(u.Reason))
		}
	}
	if r.Malformed > 0 {
		fmt.Fprintf(w, "\n%d lines are not decision records and were skipped", r.Malformed)
		if len(r.MalformedLines) < r.Malformed {
			fmt.Fprintf(w, "; the first %d", len(r.MalformedLines))
		}
		fmt.Fprintln(w, ":")
		for _, m := range r.MalformedLines {
			fmt.Fprintf(w, "  %s\n", printable(m.Error()))
		}
	}
}

// timeText shows a record's time to the second, in UTC as recorded.
func timeText(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func signed(n int) string {
	if n > 0 {
		return fmt.Sprintf("+%d", n)
	}
	return fmt.Sprint(n)
}

// wasWord puts an action in the past, for "(were accepted 25)".
func wasWord(a string) string {
	switch a {
	case "accept":
		return "accepted"
	case "reject":
		return "refused"
	case "tempfail":
		return "tempfailed"
	}
	return "quarantined"
}

func countsText(cs []decisions.Count) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s %d", printable(c.Result), c.Count)
	}
	return strings.Join(parts, ", ")
}

// changesText lists a group's transitions, with the deciding results when
// withResults.
func changesText(g decisions.Group, withResults bool) string {
	if g.Changed == 0 {
		return "no change"
	}
	parts := make([]string, len(g.Transitions))
	for i, t := range g.Transitions {
		parts[i] = fmt.Sprintf("%s -> %s %d", t.From, t.To, t.Count)
		if withResults {
			parts[i] += " (" + countsText(t.Results) + ")"
		}
	}
	return strings.Join(parts, ", ")
}
