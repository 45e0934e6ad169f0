package decisions

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

var update = flag.Bool("update", false, "rewrite testdata/decisions.jsonl from recordedSpecs")

// recordedPath is the recorded log of the replay tests: 100 messages from
// 192.0.2.0/24, decided under the default policy, with two malformed
// lines (17 and 61).
var recordedPath = filepath.Join("testdata", "decisions.jsonl")

// recordedSpecs are the messages of recordedPath by sender domain: 60
// pass, 20 softfail, 10 fail, 5 none, 5 permerror. Every HELO name
// (mx0, mx1, mx2.sender.example) gave none.
var recordedSpecs = []struct {
	domain    string
	result    spf.Result
	n         int
	mechanism string
	problem   string
}{
	{"pass-a.example", spf.Pass, 30, "ip4:192.0.2.0/24", ""},
	{"pass-b.example", spf.Pass, 30, "ip4:192.0.2.0/24", ""},
	{"soft-a.example", spf.Softfail, 12, "~all", ""},
	{"soft-b.example", spf.Softfail, 8, "~all", ""},
	{"fail.example", spf.Fail, 10, "-all", ""},
	{"none.example", spf.None, 5, "", ""},
	{"broken-a.example", spf.PermError, 3, "", `unknown mechanism "foo"`},
	{"broken-b.example", spf.PermError, 2, "", `unknown mechanism "foo"`},
}

// recordedDecisions are the decisions of recordedSpecs as a session under
// the default policy hands them to the log, the domains taking turns.
func recordedDecisions() []policy.MessageDecision {
	cfg := config.Default()
	cfg.AuthservID, cfg.Receiver = "mx.example.net", "mx.example.net"
	left := make([]int, len(recordedSpecs))
	for i, s := range recordedSpecs {
		left[i] = s.n
	}
	base := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	var out []policy.MessageDecision
	for k := 0; len(out) < 100; k++ {
		i := k % len(recordedSpecs)
		if left[i] == 0 {
			continue
		}
		left[i]--
		s, n := recordedSpecs[i], len(out)
		ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(n%200 + 1)})
		helo := fmt.Sprintf("mx%d.sender.example", n%3)
		sender := fmt.Sprintf("user%d@%s", n, s.domain)
		mf := &spf.Outcome{
			Result: s.result, Identity: spf.IdentityMailFrom, Domain: s.domain, Sender: sender,
			IP: ip, HELO: helo, Mechanism: s.mechanism, Problem: s.problem,
		}
		h := &spf.Outcome{
			Result: spf.None, Identity: spf.IdentityHELO, Domain: helo, Sender: "postmaster@" + helo,
			IP: ip, HELO: helo,
		}
		d, by := policy.New(cfg).DecideMessage(policy.Message{ClientIP: ip, HELO: helo, Sender: sender}, mf, h)
		out = append(out, policy.MessageDecision{
			Time: base.Add(time.Duration(n) * time.Minute), QueueID: fmt.Sprintf("4Q%04d", n),
			ClientIP: ip, HELO: helo, Sender: sender, MailFrom: mf, HELOCheck: h,
			Decision: d, DecidedBy: by, Duration: time.Duration(n%7+1) * time.Millisecond,
		})
	}
	return out
}

// TestRecordedFile writes testdata/decisions.jsonl with -update, and
// otherwise checks that it is what the Writer makes of recordedDecisions,
// so that the replay tests read the daemon's own format.
func TestRecordedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "d.jsonl")
	w := newTestWriter(t, Options{Path: path}, Settings{})
	for _, d := range recordedDecisions() {
		w.RecordDecision(d)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	lines = slices.Insert(lines, 16, "this line is not JSON\n")
	lines = slices.Insert(lines, 60, lines[60][:70]+"\n") // a line cut short
	want := strings.Join(lines, "")
	if *update {
		if err := os.WriteFile(recordedPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(recordedPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is not what the Writer makes of recordedDecisions; run go test -run TestRecordedFile -update ./decisions/", recordedPath)
	}
}

// strict is the default policy with softfail and permerror refused.
func strict(c *config.Config) {
	c.Policy.MailFrom[spf.Softfail] = config.Reject
	c.Policy.MailFrom[spf.PermError] = config.Reject
}

// summary writes the parts of a report the tests compare, one per line.
func summary(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "decisions %d replayed %d undecided %d changed %d helo_unknown %d malformed %d\n",
		r.Decisions, r.Replayed, r.Undecided, r.Changed, r.HELOUnknown, r.Malformed)
	fmt.Fprintf(&b, "recorded %v now %v\n", r.Recorded, r.Now)
	fmt.Fprintf(&b, "now refused %d tempfailed %d accepted %d quarantined %d\n",
		r.NowRefused, r.NowTempfailed, r.NowAccepted, r.NowQuarantined)
	for _, tr := range r.Transitions {
		fmt.Fprintf(&b, "%s\n", transitionText(tr))
	}
	for _, d := range r.Domains {
		fmt.Fprintf(&b, "domain %s %d/%d", d.Domain, d.Changed, d.Messages)
		for _, tr := range d.Transitions {
			fmt.Fprintf(&b, ", %s", transitionText(tr))
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "domains %d of %d\n", r.DomainsChanged, r.DomainsTotal)
	for _, u := range r.UndecidedReasons {
		fmt.Fprintf(&b, "undecided %d: %s\n", u.Count, u.Reason)
	}
	for _, c := range r.ResultChanges {
		fmt.Fprintf(&b, "result %s -> %s %d\n", c.From, c.To, c.Count)
	}
	return b.String()
}

func transitionText(tr Transition) string {
	var rs []string
	for _, c := range tr.Results {
		rs = append(rs, fmt.Sprintf("%s %d", c.Result, c.Count))
	}
	return fmt.Sprintf("%s->%s %d (%s)", tr.From, tr.To, tr.Count, strings.Join(rs, ", "))
}

func replayRecorded(t *testing.T, opts ReplayOptions, extra ...Input) *Report {
	t.Helper()
	f, err := Open(recordedPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := Replay(context.Background(), opts, append([]Input{{Name: "decisions.jsonl", R: f}}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReplay(t *testing.T) {
	t.Parallel()
	const (
		header    = "decisions 100 replayed 100 undecided 0 changed %d helo_unknown 0 malformed 2\n"
		unchanged = "recorded {90 10 0 0} now {90 10 0 0}\nnow refused 0 tempfailed 0 accepted 0 quarantined 0\ndomains 0 of 8\n"
	)
	tests := []struct {
		name      string
		configure func(*config.Config)
		top       int
		want      string
	}{
		{"default policy changes nothing", nil, 0, fmt.Sprintf(header, 0) + unchanged},
		{"softfail and permerror refused", strict, 0, fmt.Sprintf(header, 25) + `recorded {90 10 0 0} now {65 35 0 0}
now refused 25 tempfailed 0 accepted 0 quarantined 0
accept->reject 25 (softfail 20, permerror 5)
domain soft-a.example 12/12, accept->reject 12 (softfail 12)
domain soft-b.example 8/8, accept->reject 8 (softfail 8)
domain broken-a.example 3/3, accept->reject 3 (permerror 3)
domain broken-b.example 2/2, accept->reject 2 (permerror 2)
domains 4 of 8
`},
		{"top 2 domains", strict, 2, fmt.Sprintf(header, 25) + `recorded {90 10 0 0} now {65 35 0 0}
now refused 25 tempfailed 0 accepted 0 quarantined 0
accept->reject 25 (softfail 20, permerror 5)
domain soft-a.example 12/12, accept->reject 12 (softfail 12)
domain soft-b.example 8/8, accept->reject 8 (softfail 8)
domains 4 of 8
`},
		{"every action at once", func(c *config.Config) {
			c.Policy.MailFrom[spf.Fail] = config.Quarantine
			c.Policy.MailFrom[spf.Softfail] = config.Tempfail
			c.Policy.MailFrom[spf.None] = config.Reject
		}, 0, fmt.Sprintf(header, 35) + `recorded {90 10 0 0} now {65 5 20 10}
now refused 5 tempfailed 20 accepted 0 quarantined 10
accept->tempfail 20 (softfail 20)
reject->quarantine 10 (fail 10)
accept->reject 5 (none 5)
domain soft-a.example 12/12, accept->tempfail 12 (softfail 12)
domain fail.example 10/10, reject->quarantine 10 (fail 10)
domain soft-b.example 8/8, accept->tempfail 8 (softfail 8)
domain none.example 5/5, accept->reject 5 (none 5)
domains 4 of 8
`},
		{"laxer: fail accepted", func(c *config.Config) { c.Policy.MailFrom[spf.Fail] = config.Accept }, 0,
			fmt.Sprintf(header, 10) + `recorded {90 10 0 0} now {100 0 0 0}
now refused 0 tempfailed 0 accepted 10 quarantined 0
reject->accept 10 (fail 10)
domain fail.example 10/10, reject->accept 10 (fail 10)
domains 1 of 8
`},
		{"skip_senders and skip_clients take precedence", func(c *config.Config) {
			strict(c)
			c.SkipSenders = []string{"soft-a.example"}
			// Records 0 to 15, from .1 to .16: the first two turns of the
			// eight domains, two messages each.
			c.SkipClients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28"), netip.MustParsePrefix("192.0.2.16/32")}
		}, 0, fmt.Sprintf(header, 9) + `recorded {90 10 0 0} now {85 15 0 0}
now refused 7 tempfailed 0 accepted 2 quarantined 0
accept->reject 7 (softfail 6, permerror 1)
reject->accept 2 (skipped: skip_clients 2)
domain soft-b.example 6/8, accept->reject 6 (softfail 6)
domain fail.example 2/10, reject->accept 2 (skipped: skip_clients 2)
domain broken-a.example 1/3, accept->reject 1 (permerror 1)
domains 3 of 8
`},
		{"HELO none refused", func(c *config.Config) { c.Policy.HELO[spf.None] = config.Reject }, 0,
			fmt.Sprintf(header, 90) + `recorded {90 10 0 0} now {0 100 0 0}
now refused 90 tempfailed 0 accepted 0 quarantined 0
accept->reject 90 (helo none 90)
domain pass-a.example 30/30, accept->reject 30 (helo none 30)
domain pass-b.example 30/30, accept->reject 30 (helo none 30)
domain soft-a.example 12/12, accept->reject 12 (helo none 12)
domain soft-b.example 8/8, accept->reject 8 (helo none 8)
domain none.example 5/5, accept->reject 5 (helo none 5)
domain broken-a.example 3/3, accept->reject 3 (helo none 3)
domain broken-b.example 2/2, accept->reject 2 (helo none 2)
domains 7 of 8
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			r := replayRecorded(t, ReplayOptions{Config: cfg, Top: tt.top})
			if got := summary(r); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
			wantMalformed := []Malformed{
				{File: "decisions.jsonl", Line: 17, Reason: "not a decision record: invalid character 'h' in literal true (expecting 'r') (at byte 2)"},
				{File: "decisions.jsonl", Line: 61, Reason: "not a decision record: unexpected end of JSON input (at byte 70)"},
			}
			if !slices.Equal(r.MalformedLines, wantMalformed) {
				t.Errorf("malformed lines %+v, want %+v", r.MalformedLines, wantMalformed)
			}
			if r.First.Format(time.RFC3339) != "2026-03-01T08:00:00Z" || r.Last.Format(time.RFC3339) != "2026-03-01T09:39:00Z" {
				t.Errorf("time range %v to %v", r.First, r.Last)
			}
		})
	}
}

// record builds a record line for the replay tests of cases the
// recorded file does not have.
func recordLine(t *testing.T, r Record) string {
	t.Helper()
	if r.Time.IsZero() {
		r.Time = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// TestReplayIncomplete covers records that cannot be replayed as they
// are: a message skipped when recorded but checked now, and a HELO the
// new policy would check but the recorded one did not.
func TestReplayIncomplete(t *testing.T) {
	t.Parallel()
	trusted := Record{ClientIP: "10.1.2.3", HELO: "mx.other.example", Sender: "a@other.example", Domain: "other.example",
		Skipped: "trusted_networks", Action: config.Accept}
	noHELO := Record{ClientIP: "192.0.2.9", HELO: "mx.other.example", Sender: "b@other.example", Domain: "other.example",
		MailFrom: &Check{Domain: "other.example", Result: spf.Pass}, Identity: spf.IdentityMailFrom, Result: spf.Pass, Action: config.Accept}
	authenticated := noHELO
	authenticated.Authenticated = true
	logText := recordLine(t, trusted) + recordLine(t, noHELO) + recordLine(t, authenticated)

	tests := []struct {
		name      string
		configure func(*config.Config)
		want      string
	}{
		{"trusted still, HELO not needed", func(c *config.Config) {
			c.TrustedNetworks = append(c.TrustedNetworks, netip.MustParsePrefix("10.0.0.0/8"))
			c.Policy.HELO[spf.Fail] = config.Accept
		}, `decisions 3 replayed 3 undecided 0 changed 0 helo_unknown 0 malformed 0
recorded {3 0 0 0} now {3 0 0 0}
now refused 0 tempfailed 0 accepted 0 quarantined 0
domains 0 of 1
`},
		{"no longer trusted, HELO checked by default", nil, `decisions 3 replayed 2 undecided 1 changed 0 helo_unknown 1 malformed 0
recorded {2 0 0 0} now {2 0 0 0}
now refused 0 tempfailed 0 accepted 0 quarantined 0
domains 0 of 1
undecided 1: skipped (trusted_networks) when recorded but checked under the new config; --recheck decides them
`},
		{"pass refused, authenticated skipped", func(c *config.Config) {
			c.TrustedNetworks = append(c.TrustedNetworks, netip.MustParsePrefix("10.0.0.0/8"))
			c.Policy.MailFrom[spf.Pass] = config.Reject
		}, `decisions 3 replayed 3 undecided 0 changed 1 helo_unknown 1 malformed 0
recorded {3 0 0 0} now {2 1 0 0}
now refused 1 tempfailed 0 accepted 0 quarantined 0
accept->reject 1 (pass 1)
domain other.example 1/3, accept->reject 1 (pass 1)
domains 1 of 1
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			r, err := Replay(context.Background(), ReplayOptions{Config: cfg}, Input{Name: "x", R: strings.NewReader(logText)})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(r); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// recheckZone publishes the recorded domains as they are now: pass-b
// has dropped the client network since recording, and the HELO names
// still publish nothing.
func recheckZone(t *testing.T) *dnstest.Zone {
	t.Helper()
	z := dnstest.NewZone()
	if err := z.Add(
		// The negative TTL of the HELO names' NXDOMAIN, so that the cache
		// keeps it.
		`sender.example. SOA ns.sender.example. admin.sender.example. 1 3600 600 86400 300`,
		`pass-a.example. TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`pass-b.example. TXT "v=spf1 ip4:198.51.100.0/24 -all"`,
		`soft-a.example. TXT "v=spf1 ~all"`,
		`soft-b.example. TXT "v=spf1 ~all"`,
		`fail.example. TXT "v=spf1 -all"`,
		`none.example. A 192.0.2.99`,
		`broken-a.example. TXT "v=spf1 foo -all"`,
		`broken-b.example. TXT "v=spf1 ip4:192.0.2.0/24 include:"`,
	); err != nil {
		t.Fatal(err)
	}
	return z
}

// TestReplayRecheck checks the recorded messages again against a DNS
// server on loopback where pass-b.example changed its record.
func TestReplayRecheck(t *testing.T) {
	t.Parallel()
	srv := dnstest.StartServer(t, recheckZone(t))
	cfg := config.Default()
	strict(cfg)
	cfg.DNS.Servers = []string{srv.Addr()}
	resolver, err := spf.NewDNSResolver(spf.DNSOptions{Servers: cfg.DNS.Servers, Timeout: 5 * time.Second, CacheSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	checker := &spf.Checker{Resolver: resolver, Receiver: "mx.example.net", Timeout: cfg.DNS.CheckTimeout}
	// A skipped record is checked now too: a client of 10/8, trusted
	// when recorded, sending as pass-a.example.
	trusted := Record{ClientIP: "10.1.2.3", HELO: "mx0.sender.example", Sender: "x@pass-a.example", Domain: "pass-a.example",
		Skipped: "trusted_networks", Action: config.Accept}
	r := replayRecorded(t, ReplayOptions{Config: cfg, Checker: checker, Parallel: 4},
		Input{Name: "extra", R: strings.NewReader(recordLine(t, trusted))})
	want := `decisions 101 replayed 101 undecided 0 changed 56 helo_unknown 0 malformed 2
recorded {91 10 0 0} now {35 66 0 0}
now refused 56 tempfailed 0 accepted 0 quarantined 0
accept->reject 56 (fail 31, softfail 20, permerror 5)
domain pass-b.example 30/30, accept->reject 30 (fail 30)
domain soft-a.example 12/12, accept->reject 12 (softfail 12)
domain soft-b.example 8/8, accept->reject 8 (softfail 8)
domain broken-a.example 3/3, accept->reject 3 (permerror 3)
domain broken-b.example 2/2, accept->reject 2 (permerror 2)
domain pass-a.example 1/31, accept->reject 1 (fail 1)
domains 6 of 8
result pass -> fail 30
`
	if got := summary(r); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if !r.Recheck {
		t.Error("report does not say the results were checked again")
	}
	// The resolver's cache answers most checks: far fewer queries than
	// the 101 messages and 3 HELO names.
	if q := len(srv.Queries()); q == 0 || q > 50 {
		t.Errorf("%d DNS queries for 101 messages", q)
	}
}

// TestReplayCancelled stops a replay whose context ends.
func TestReplayCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f, err := Open(recordedPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Replay(ctx, ReplayOptions{Config: config.Default()}, Input{Name: "d", R: f}); err != context.Canceled {
		t.Errorf("Replay: %v, want %v", err, context.Canceled)
	}
}
