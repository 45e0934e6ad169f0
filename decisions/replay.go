package decisions

import (
	"cmp"
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// Defaults of ReplayOptions.
const (
	DefaultParallel     = 8
	DefaultTop          = 10
	DefaultMaxMalformed = 10
)

// ReplayOptions says how to replay a decision log.
type ReplayOptions struct {
	// Config is the config tried: its policy, trusted_networks,
	// skip_clients, skip_authenticated, skip_senders, rules (with the
	// listener and client name the records carry, at each record's time).
	Config *config.Config
	// Checker, when set, checks SPF again, live, instead of reusing the
	// recorded results: build it on Config's DNS settings. Each message
	// gets Config.DNS.CheckTimeout, as in the daemon.
	Checker *spf.Checker
	// Parallel bounds the live checks in flight (DefaultParallel when 0).
	Parallel int
	// Top bounds the sender domains listed (DefaultTop when 0, every one
	// when negative); all are counted.
	Top int
	// MaxMalformed bounds the malformed lines listed (DefaultMaxMalformed
	// when 0); all are counted.
	MaxMalformed int
}

// Input is one decision log to replay.
type Input struct {
	// Name names it in Malformed lines.
	Name string
	R    io.Reader
}

// Report is what a replay found: how the recorded decisions compare with
// those the new config would take. Its JSON form is the output of
// "spf-milter replay --json".
type Report struct {
	// Config names the config tried; Replay leaves it for the caller.
	Config  string   `json:"config"`
	Files   []string `json:"files"`
	Recheck bool     `json:"recheck"`
	// First and Last are the times of the oldest and newest record.
	First *time.Time `json:"first,omitempty"`
	Last  *time.Time `json:"last,omitempty"`
	// Decisions counts the records read; Replayed those decided again
	// and Undecided the others (see UndecidedReasons). The counts below
	// are about the replayed ones.
	Decisions int `json:"decisions"`
	Replayed  int `json:"replayed"`
	Undecided int `json:"undecided"`
	Changed   int `json:"changed"`
	Unchanged int `json:"unchanged"`
	// Recorded and Now count the replayed messages by action, as recorded
	// and under the new config.
	Recorded ActionCounts `json:"recorded"`
	Now      ActionCounts `json:"now"`
	// NowRefused and the others count the messages that would get that
	// action and did not before.
	NowRefused     int `json:"now_refused"`
	NowTempfailed  int `json:"now_tempfailed"`
	NowAccepted    int `json:"now_accepted"`
	NowQuarantined int `json:"now_quarantined"`
	// Transitions are the changes, most frequent first, each with the
	// results that now decide.
	Transitions []Transition `json:"transitions"`
	// Results groups the replayed messages by the result that decides
	// them under the new config: "softfail" (MAIL FROM), "helo fail", or
	// "skipped: skip_senders" and the like ("skipped: rule NAME").
	Results []ResultGroup `json:"results"`
	// Domains are the sender domains with changes, most changes first,
	// Top of them; DomainsChanged counts all that have changes and
	// DomainsTotal all the domains seen.
	Domains        []DomainGroup `json:"domains"`
	DomainsChanged int           `json:"domains_changed"`
	DomainsTotal   int           `json:"domains_total"`
	// HELOUnknown counts messages decided without a HELO result that
	// the new config would check: it was not checked when recorded, and
	// only --recheck can tell whether it would refuse them.
	HELOUnknown int `json:"helo_unknown"`
	// UndecidedReasons says why messages could not be decided again.
	UndecidedReasons []Reason `json:"undecided_reasons,omitempty"`
	// ResultChanges are the MAIL FROM results that a live check found
	// changed since recording, with --recheck.
	ResultChanges []ResultChange `json:"result_changes,omitempty"`
	// Malformed counts the lines that are not records; MalformedLines
	// lists the first of them.
	Malformed      int         `json:"malformed"`
	MalformedLines []Malformed `json:"malformed_lines,omitempty"`
}

// ActionCounts counts messages by action.
type ActionCounts struct {
	Accept     int `json:"accept"`
	Reject     int `json:"reject"`
	Tempfail   int `json:"tempfail"`
	Quarantine int `json:"quarantine"`
}

// Get returns the count of action a.
func (c ActionCounts) Get(a config.Action) int {
	switch a {
	case config.Reject:
		return c.Reject
	case config.Tempfail:
		return c.Tempfail
	case config.Quarantine:
		return c.Quarantine
	}
	return c.Accept
}

func (c *ActionCounts) add(a config.Action) {
	switch a {
	case config.Reject:
		c.Reject++
	case config.Tempfail:
		c.Tempfail++
	case config.Quarantine:
		c.Quarantine++
	default:
		c.Accept++
	}
}

// Actions lists the actions in the order reports show them.
var Actions = []config.Action{config.Accept, config.Reject, config.Tempfail, config.Quarantine}

// Transition is one change of action and how many messages it concerns.
type Transition struct {
	From  config.Action `json:"from"`
	To    config.Action `json:"to"`
	Count int           `json:"count"`
	// Results are the results that decide under the new config, most
	// frequent first.
	Results []Count `json:"results"`
}

// Count is a number of messages with a name.
type Count struct {
	Result string `json:"result"`
	Count  int    `json:"count"`
}

// Group is the messages of one domain or result.
type Group struct {
	Messages    int          `json:"messages"`
	Changed     int          `json:"changed"`
	Transitions []Transition `json:"transitions"`
}

// DomainGroup is the messages of one sender domain.
type DomainGroup struct {
	Domain string `json:"domain"`
	Group
}

// ResultGroup is the messages one result decides.
type ResultGroup struct {
	Result string `json:"result"`
	Group
}

// Reason is a number of messages with why.
type Reason struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// ResultChange is a MAIL FROM result that changed since recording.
type ResultChange struct {
	From  spf.Result `json:"from"`
	To    spf.Result `json:"to"`
	Count int        `json:"count"`
}

// Replay decides the recorded messages of inputs again under opts.Config
// and reports what would change. Lines that are not records are counted
// and listed, never the end of the replay; only ctx ends it early, with
// ctx's error.
func Replay(ctx context.Context, opts ReplayOptions, inputs ...Input) (*Report, error) {
	if opts.Config == nil {
		return nil, errors.New("replay: no config")
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultParallel
	}
	if opts.Top == 0 {
		opts.Top = DefaultTop
	}
	if opts.MaxMalformed <= 0 {
		opts.MaxMalformed = DefaultMaxMalformed
	}
	agg := newAggregate(opts.MaxMalformed)
	rp := &replayer{opts: opts, policy: policy.New(opts.Config)}

	jobs := make(chan Record, opts.Parallel)
	var wg sync.WaitGroup
	workers := 1
	if opts.Checker != nil {
		workers = opts.Parallel
	}
	for range workers {
		wg.Go(func() {
			for rec := range jobs {
				v := rp.decide(ctx, &rec)
				agg.add(&rec, v)
			}
		})
	}
	var files []string
read:
	for _, in := range inputs {
		files = append(files, in.Name)
		r := NewReader(in.R, in.Name)
		for {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			var m *Malformed
			if errors.As(err, &m) {
				agg.malformed(*m)
				continue
			}
			select {
			case jobs <- rec:
			case <-ctx.Done():
				break read
			}
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := agg.report(opts.Top)
	rep.Files, rep.Recheck = files, opts.Checker != nil
	return rep, nil
}

type replayer struct {
	opts ReplayOptions
	// policy is opts.Config's, the one the messages are decided by again.
	policy *policy.Policy
}

// verdict is one message decided again.
type verdict struct {
	// undecided says why the message could not be decided; the rest is
	// then unset.
	undecided string
	action    config.Action
	// label names what decides: the result, "helo RESULT", or
	// "skipped: KEY".
	label       string
	heloUnknown bool
	// mailFromWas and mailFromNow are set when a live check found a
	// MAIL FROM result other than the recorded one.
	mailFromWas, mailFromNow spf.Result
}

// decide applies the new config to rec as a session would: skip lists
// first, then the policy on the MAIL FROM and HELO outcomes together.
func (rp *replayer) decide(ctx context.Context, rec *Record) verdict {
	msg := rec.message()
	if skip := rp.policy.Skip(msg); skip != policy.NotSkipped {
		label := "skipped: " + skip.Key()
		if skip == policy.SkipRule {
			label += " " + rp.policy.Rule(msg).Name
		}
		return verdict{action: config.Accept, label: label}
	}
	var v verdict
	mailFrom, helo := rec.outcomes()
	switch {
	case rp.opts.Checker != nil:
		was := mailFrom
		mailFrom, helo = rp.check(ctx, rec)
		if was != nil && was.Result != mailFrom.Result {
			v.mailFromWas, v.mailFromNow = was.Result, mailFrom.Result
		}
	case mailFrom == nil:
		return verdict{undecided: "skipped (" + rec.Skipped + ") when recorded but checked under the new config; --recheck decides them"}
	case !rp.policy.ChecksHELO():
		helo = nil
	case helo == nil && rec.HELO != "":
		v.heloUnknown = true
	}
	d, by := rp.policy.DecideMessage(msg, mailFrom, helo)
	v.action, v.label = d.Action, string(by.Result)
	if by.Identity == spf.IdentityHELO {
		v.label = "helo " + v.label
	}
	return v
}

// check runs the checks of rec live, as the daemon would under the new
// config.
func (rp *replayer) check(ctx context.Context, rec *Record) (mailFrom, helo *spf.Outcome) {
	cfg := rp.opts.Config
	if t := cfg.DNS.CheckTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	ip := rec.ip()
	if rp.policy.ChecksHELO() && rec.HELO != "" {
		helo = rp.opts.Checker.CheckHELO(ctx, ip, rec.HELO)
	}
	return rp.opts.Checker.CheckMailFrom(ctx, ip, rec.Sender, rec.HELO), helo
}

// transKey is a change of action.
type transKey struct{ from, to config.Action }

// transAgg counts one transition by the result that decides.
type transAgg struct {
	count   int
	results map[string]int
}

// groupAgg counts the messages of a domain or result.
type groupAgg struct {
	messages, changed int
	trans             map[transKey]*transAgg
}

func (g *groupAgg) add(from, to config.Action, label string) {
	g.messages++
	if from == to {
		return
	}
	g.changed++
	if g.trans == nil {
		g.trans = map[transKey]*transAgg{}
	}
	t := g.trans[transKey{from, to}]
	if t == nil {
		t = &transAgg{results: map[string]int{}}
		g.trans[transKey{from, to}] = t
	}
	t.count++
	t.results[label]++
}

// aggregate sums up the verdicts; workers add to it concurrently.
type aggregate struct {
	mu           sync.Mutex
	maxMalformed int
	decisions    int
	first, last  time.Time
	recorded     ActionCounts
	now          ActionCounts
	all          groupAgg
	domains      map[string]*groupAgg
	results      map[string]*groupAgg
	undecided    map[string]int
	heloUnknown  int
	resultChange map[[2]spf.Result]int
	malformedN   int
	malformedL   []Malformed
}

func newAggregate(maxMalformed int) *aggregate {
	return &aggregate{
		maxMalformed: maxMalformed,
		domains:      map[string]*groupAgg{},
		results:      map[string]*groupAgg{},
		undecided:    map[string]int{},
		resultChange: map[[2]spf.Result]int{},
	}
}

func (a *aggregate) malformed(m Malformed) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.malformedN++
	if len(a.malformedL) < a.maxMalformed {
		a.malformedL = append(a.malformedL, m)
	}
}

func (a *aggregate) add(rec *Record, v verdict) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.decisions++
	if a.first.IsZero() || rec.Time.Before(a.first) {
		a.first = rec.Time
	}
	if rec.Time.After(a.last) {
		a.last = rec.Time
	}
	if v.undecided != "" {
		a.undecided[v.undecided]++
		return
	}
	if v.heloUnknown {
		a.heloUnknown++
	}
	if v.mailFromWas != "" {
		a.resultChange[[2]spf.Result{v.mailFromWas, v.mailFromNow}]++
	}
	a.recorded.add(rec.Action)
	a.now.add(v.action)
	a.all.add(rec.Action, v.action, v.label)
	domain := rec.Domain
	if domain == "" {
		domain = "(none)"
	}
	for _, g := range []struct {
		m   map[string]*groupAgg
		key string
	}{{a.domains, domain}, {a.results, v.label}} {
		ga := g.m[g.key]
		if ga == nil {
			ga = &groupAgg{}
			g.m[g.key] = ga
		}
		ga.add(rec.Action, v.action, v.label)
	}
}

func (a *aggregate) report(top int) *Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &Report{
		Decisions:      a.decisions,
		Replayed:       a.all.messages,
		Undecided:      a.decisions - a.all.messages,
		Changed:        a.all.changed,
		Unchanged:      a.all.messages - a.all.changed,
		Recorded:       a.recorded,
		Now:            a.now,
		Transitions:    transitions(a.all.trans),
		HELOUnknown:    a.heloUnknown,
		DomainsTotal:   len(a.domains),
		Malformed:      a.malformedN,
		MalformedLines: a.malformedL,
	}
	if a.decisions > 0 {
		first, last := a.first, a.last
		r.First, r.Last = &first, &last
	}
	for _, t := range r.Transitions {
		switch t.To {
		case config.Reject:
			r.NowRefused += t.Count
		case config.Tempfail:
			r.NowTempfailed += t.Count
		case config.Quarantine:
			r.NowQuarantined += t.Count
		default:
			r.NowAccepted += t.Count
		}
	}
	r.Results = []ResultGroup{}
	for label, g := range a.results {
		r.Results = append(r.Results, ResultGroup{Result: label, Group: g.group()})
	}
	slices.SortFunc(r.Results, func(x, y ResultGroup) int {
		return cmp.Or(byChanges(x.Group, y.Group), cmp.Compare(x.Result, y.Result))
	})
	r.Domains = []DomainGroup{}
	for d, g := range a.domains {
		if g.changed > 0 {
			r.Domains = append(r.Domains, DomainGroup{Domain: d, Group: g.group()})
		}
	}
	slices.SortFunc(r.Domains, func(x, y DomainGroup) int {
		return cmp.Or(byChanges(x.Group, y.Group), cmp.Compare(x.Domain, y.Domain))
	})
	r.DomainsChanged = len(r.Domains)
	if top > 0 && len(r.Domains) > top {
		r.Domains = r.Domains[:top]
	}
	for why, n := range a.undecided {
		r.UndecidedReasons = append(r.UndecidedReasons, Reason{Reason: why, Count: n})
	}
	slices.SortFunc(r.UndecidedReasons, func(x, y Reason) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Reason, y.Reason))
	})
	for k, n := range a.resultChange {
		r.ResultChanges = append(r.ResultChanges, ResultChange{From: k[0], To: k[1], Count: n})
	}
	slices.SortFunc(r.ResultChanges, func(x, y ResultChange) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.From, y.From), cmp.Compare(x.To, y.To))
	})
	return r
}

// byChanges puts the group with more changes first, then the one with
// more messages.
func byChanges(x, y Group) int {
	return cmp.Or(cmp.Compare(y.Changed, x.Changed), cmp.Compare(y.Messages, x.Messages))
}

func (g *groupAgg) group() Group {
	return Group{Messages: g.messages, Changed: g.changed, Transitions: transitions(g.trans)}
}

// transitions lists the transitions most frequent first, each with its
// results most frequent first; ties in the order of Actions.
func transitions(m map[transKey]*transAgg) []Transition {
	out := []Transition{}
	for k, t := range m {
		tr := Transition{From: k.from, To: k.to, Count: t.count, Results: []Count{}}
		for label, n := range t.results {
			tr.Results = append(tr.Results, Count{Result: label, Count: n})
		}
		slices.SortFunc(tr.Results, func(x, y Count) int {
			return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Result, y.Result))
		})
		out = append(out, tr)
	}
	slices.SortFunc(out, func(x, y Transition) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count),
			cmp.Compare(slices.Index(Actions, x.From), slices.Index(Actions, y.From)),
			cmp.Compare(slices.Index(Actions, x.To), slices.Index(Actions, y.To)))
	})
	return out
}
