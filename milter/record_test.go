package milter

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// recorder keeps the decisions a session hands to the decision log.
type recorder struct {
	mu  sync.Mutex
	got []policy.MessageDecision
}

func (r *recorder) RecordDecision(d policy.MessageDecision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, d)
}

func (r *recorder) decisions() []policy.MessageDecision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// describe puts what the decision log needs of a decision on one line.
func describe(d policy.MessageDecision) string {
	check := func(o *spf.Outcome) string {
		if o == nil {
			return "-"
		}
		return string(o.Identity) + "=" + string(o.Result)
	}
	by := "-"
	if d.DecidedBy != nil {
		by = string(d.DecidedBy.Identity)
	}
	return fmt.Sprintf("q=%s ip=%s helo=%s sender=%s auth=%v skipped=%s mailfrom=%s helo_check=%s action=%s by=%s at_rcpt=%v reply=%q",
		d.QueueID, d.ClientIP, d.HELO, d.Sender, d.Authenticated, d.Skipped.Key(), check(d.MailFrom), check(d.HELOCheck),
		d.Decision.Action, by, d.AtRcpt, d.Decision.Reply())
}

// TestDecisionRecorded checks that a session hands every message, checked
// or skipped, refused or passed, aborted or not, to the decision log
// once, with the data a replay needs.
func TestDecisionRecorded(t *testing.T) {
	tests := []struct {
		name      string
		configure func(*config.Config)
		ip, helo  string
		messages  []message
		// abort sends MAIL FROM of one more message and aborts it.
		abort string
		want  []string
	}{
		{"checked, refused at MAIL FROM and passed", nil, clientIP, passHELO,
			[]message{{from: "alice@fail.example", rcpts: []string{"bob@example.net"}}, {from: "alice@softfail.example", rcpts: []string{"bob@example.net"}}},
			"",
			[]string{
				`q= ip=192.0.2.1 helo=mx.pass.example sender=alice@fail.example auth=false skipped= mailfrom=mailfrom=fail helo_check=helo=pass action=reject by=mailfrom at_rcpt=false reply="550 5.7.23 SPF fail: fail.example does not designate 192.0.2.1 as a permitted sender"`,
				`q=QID0 ip=192.0.2.1 helo=mx.pass.example sender=alice@softfail.example auth=false skipped= mailfrom=mailfrom=softfail helo_check=helo=pass action=accept by=mailfrom at_rcpt=false reply=""`,
			}},
		{"HELO decides, refusal at RCPT", func(c *config.Config) { c.NeverRefuse = []string{"postmaster"} }, clientIP, failHELO,
			[]message{{from: "alice@pass.example", rcpts: []string{"bob@example.net"}}},
			"",
			[]string{
				`q=QID0 ip=192.0.2.1 helo=mx.fail.example sender=alice@pass.example auth=false skipped= mailfrom=mailfrom=pass helo_check=helo=fail action=reject by=helo at_rcpt=true reply="550 5.7.23 SPF fail: mx.fail.example does not designate 192.0.2.1 as a permitted sender"`,
			}},
		{"HELO not checked when its policy cannot refuse, aborted message", func(c *config.Config) {
			for r := range c.Policy.HELO {
				c.Policy.HELO[r] = config.Accept
			}
		}, clientIP, failHELO, nil, "alice@neutral.example",
			[]string{
				`q=QABORT ip=192.0.2.1 helo=mx.fail.example sender=alice@neutral.example auth=false skipped= mailfrom=mailfrom=neutral helo_check=- action=accept by=mailfrom at_rcpt=false reply=""`,
			}},
		{"trusted client, each message", nil, "127.0.0.1", passHELO,
			[]message{{from: "a@fail.example", rcpts: []string{"bob@example.net"}}, {from: "", rcpts: []string{"bob@example.net"}}},
			"",
			[]string{
				`q=QID0 ip=127.0.0.1 helo=mx.pass.example sender=a@fail.example auth=false skipped=trusted_networks mailfrom=- helo_check=- action= by=- at_rcpt=false reply=""`,
				`q=QID0 ip=127.0.0.1 helo=mx.pass.example sender= auth=false skipped=trusted_networks mailfrom=- helo_check=- action= by=- at_rcpt=false reply=""`,
			}},
		{"skip_clients", func(c *config.Config) {
			c.SkipClients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}, clientIP, passHELO, []message{{from: "a@fail.example", rcpts: []string{"bob@example.net"}}}, "",
			[]string{`q=QID0 ip=192.0.2.1 helo=mx.pass.example sender=a@fail.example auth=false skipped=skip_clients mailfrom=- helo_check=- action= by=- at_rcpt=false reply=""`}},
		{"authenticated and skipped senders", func(c *config.Config) { c.SkipSenders = []string{"fail.example"} }, clientIP, passHELO,
			[]message{
				{from: "a@softfail.example", mailMacro: []string{"{auth_authen}", "alice"}, rcpts: []string{"bob@example.net"}},
				{from: "a@fail.example", rcpts: []string{"bob@example.net"}},
			}, "",
			[]string{
				`q=QID0 ip=192.0.2.1 helo=mx.pass.example sender=a@softfail.example auth=true skipped=authenticated mailfrom=- helo_check=- action= by=- at_rcpt=false reply=""`,
				`q=QID0 ip=192.0.2.1 helo=mx.pass.example sender=a@fail.example auth=false skipped=skip_senders mailfrom=- helo_check=- action= by=- at_rcpt=false reply=""`,
			}},
		{"authenticated and checked", func(c *config.Config) { c.SkipAuthenticated = false }, clientIP, passHELO,
			[]message{{from: "a@pass.example", mailMacro: []string{"{auth_authen}", "alice"}, rcpts: []string{"bob@example.net"}}}, "",
			[]string{`q=QID0 ip=192.0.2.1 helo=mx.pass.example sender=a@pass.example auth=true skipped= mailfrom=mailfrom=pass helo_check=helo=pass action=accept by=mailfrom at_rcpt=false reply=""`}},
	}
	z := testZone(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			srv := dnstest.StartServer(t, z)
			r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			logs := &logBuffer{}
			rt := &Runtime{
				Config:    cfg,
				Checker:   &spf.Checker{Resolver: r, Receiver: cfg.Receiver, Timeout: 10 * time.Second},
				Log:       slog.New(slog.NewJSONHandler(logs, nil)),
				Decisions: rec,
			}
			h := startServer(t, func() *Runtime { return rt }, srv, logs)
			// An MTA that waits for the reply to HELO: see the end.
			h.offer = 0
			start := time.Now()
			cs := h.connect(tt.ip, tt.helo)
			for _, m := range tt.messages {
				h.send(cs, m)
			}
			if tt.abort != "" {
				if err := cs.Macros(gomilter.CodeMail, "i", "QABORT"); err != nil {
					t.Fatal(err)
				}
				h.mustContinue("mail", must(t)(cs.Mail(tt.abort, nil)))
				if err := cs.Abort(); err != nil {
					t.Fatal(err)
				}
			}
			// One more command, answered after the previous ones were
			// handled: the last message has been recorded by then.
			if _, err := cs.Helo(tt.helo); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range rec.decisions() {
				got = append(got, describe(d))
				if d.Time.Before(start) || d.Time.After(time.Now()) {
					t.Errorf("decision time %v is not now", d.Time)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("recorded:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}
