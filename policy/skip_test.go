package policy

import (
	"net/netip"
	"testing"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/spf"
)

func TestSkip(t *testing.T) {
	trusted := netip.MustParseAddr("127.0.0.1")
	forwarder := netip.MustParseAddr("192.0.2.9")
	client := netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		name      string
		configure func(*config.Config)
		m         Message
		want      Skip
		perClient bool
	}{
		{"checked", nil, Message{ClientIP: client, Sender: "a@example.org"}, NotSkipped, false},
		{"trusted network", nil, Message{ClientIP: trusted, Sender: "a@example.org", Authenticated: true}, SkipTrustedNetworks, true},
		{"skip_clients", nil, Message{ClientIP: forwarder, Sender: "a@skipped.example"}, SkipClients, true},
		{"authenticated", nil, Message{ClientIP: client, Sender: "a@skipped.example", Authenticated: true}, SkipAuthenticated, false},
		{"authenticated, not skipped", func(c *config.Config) { c.SkipAuthenticated = false },
			Message{ClientIP: client, Sender: "a@example.org", Authenticated: true}, NotSkipped, false},
		{"skip_senders subdomain, any case", nil, Message{ClientIP: client, Sender: "a@Mail.Skipped.Example."}, SkipSenders, false},
		{"skip_senders is no suffix match", nil, Message{ClientIP: client, Sender: "a@notskipped.example"}, NotSkipped, false},
		{"null sender never skipped by domain", nil, Message{ClientIP: client}, NotSkipped, false},
		{"no client address", nil, Message{Sender: "a@example.org"}, NotSkipped, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.SkipClients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}
			cfg.SkipSenders = []string{".skipped.example."}
			if tt.configure != nil {
				tt.configure(cfg)
			}
			p := New(cfg)
			if got := p.Skip(tt.m); got != tt.want {
				t.Errorf("Skip = %v, want %v", got, tt.want)
			}
			if got := p.SkipClient(tt.m); (got != NotSkipped) != tt.perClient || (tt.perClient && got != tt.want) {
				t.Errorf("SkipClient = %v, want %v only for a per-client reason", got, tt.want)
			}
			if tt.want.PerClient() != tt.perClient {
				t.Errorf("%v.PerClient() = %v", tt.want, tt.want.PerClient())
			}
		})
	}
}

// TestSkipNames pins the names of the reasons: the decision log, the
// metrics and the log lines write them, and admins search for them.
func TestSkipNames(t *testing.T) {
	tests := []struct {
		s         Skip
		key, text string
	}{
		{NotSkipped, "", ""},
		{SkipTrustedNetworks, "trusted_networks", "trusted network"},
		{SkipClients, "skip_clients", "skip_clients"},
		{SkipAuthenticated, "authenticated", "authenticated"},
		{SkipSenders, "skip_senders", "skip_senders"},
	}
	for _, tt := range tests {
		if tt.s.Key() != tt.key || tt.s.String() != tt.text {
			t.Errorf("Skip %d: Key %q, String %q; want %q, %q", int(tt.s), tt.s.Key(), tt.s.String(), tt.key, tt.text)
		}
	}
}

func TestChecksHELO(t *testing.T) {
	tests := []struct {
		name string
		helo map[spf.Result]config.Action
		want bool
	}{
		{"default refuses a HELO fail", nil, true},
		{"all accept", map[spf.Result]config.Action{spf.Fail: config.Accept}, false},
		{"empty", map[spf.Result]config.Action{}, false},
		{"quarantine acts", map[spf.Result]config.Action{spf.Softfail: config.Quarantine}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.helo != nil {
				cfg.Policy.HELO = tt.helo
			}
			if got := New(cfg).ChecksHELO(); got != tt.want {
				t.Errorf("ChecksHELO = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecideMessage(t *testing.T) {
	helo := func(r spf.Result) *spf.Outcome {
		o := outcomeFor(r)
		o.Identity = spf.IdentityHELO
		return o
	}
	tests := []struct {
		name      string
		configure func(*config.Config)
		mailFrom  *spf.Outcome
		helo      *spf.Outcome
		want      config.Action
		byHELO    bool
	}{
		{"MAIL FROM alone", nil, outcomeFor(spf.Fail), nil, config.Reject, false},
		{"HELO fail beats MAIL FROM pass", nil, outcomeFor(spf.Pass), helo(spf.Fail), config.Reject, true},
		{"HELO fail beats MAIL FROM temperror", nil, outcomeFor(spf.TempError), helo(spf.Fail), config.Reject, true},
		{"tie goes to MAIL FROM", nil, outcomeFor(spf.Fail), helo(spf.Fail), config.Reject, false},
		{"HELO pass never stands in for a refusal", nil, outcomeFor(spf.Fail), helo(spf.Pass), config.Reject, false},
		{"HELO ignored when not checked",
			func(c *config.Config) { c.Policy.HELO = map[spf.Result]config.Action{} },
			outcomeFor(spf.Pass), helo(spf.Fail), config.Accept, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.configure != nil {
				tt.configure(cfg)
			}
			d, by := New(cfg).DecideMessage(Message{}, tt.mailFrom, tt.helo)
			if d.Action != tt.want {
				t.Errorf("action %s, want %s", d.Action, tt.want)
			}
			if want := map[bool]*spf.Outcome{false: tt.mailFrom, true: tt.helo}[tt.byHELO]; by != want {
				t.Errorf("decided by %+v, want %+v", by, want)
			}
		})
	}
}

func TestNeverRefused(t *testing.T) {
	cfg := testConfig()
	cfg.NeverRefuse = []string{"postmaster", "Abuse@Example.net"}
	p := New(cfg)
	tests := []struct {
		rcpt string
		want bool
	}{
		{"postmaster@example.org", true},
		{"PostMaster@other.example", true},
		{"postmaster", true},
		{"abuse@example.NET", true},
		{"abuse@example.org", false},
		{"alice@example.net", false},
	}
	for _, tt := range tests {
		if got := p.NeverRefused(tt.rcpt); got != tt.want {
			t.Errorf("NeverRefused(%q) = %v, want %v", tt.rcpt, got, tt.want)
		}
	}
	if !p.RefusesAtRcpt() || New(testConfig()).RefusesAtRcpt() {
		t.Error("RefusesAtRcpt should follow never_refuse")
	}
}

// TestRelayAndTrusted: relays and trusted_networks as the session asks
// about a client and the address a relay's Received field names.
func TestRelayAndTrusted(t *testing.T) {
	cfg := config.Default()
	cfg.Relays = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:5::/48")}
	p := New(cfg)
	for _, tt := range []struct {
		ip             string
		relay, trusted bool
	}{
		{"198.51.100.7", true, false},
		{"2001:db8:5::25", true, false},
		{"2001:db8:6::25", false, false},
		{"203.0.113.5", false, false},
		{"127.0.0.1", false, true},
		{"::1", false, true},
	} {
		ip := netip.MustParseAddr(tt.ip)
		if got := p.Relay(ip); got != tt.relay {
			t.Errorf("Relay(%s) = %v, want %v", ip, got, tt.relay)
		}
		if got := p.Trusted(ip); got != tt.trusted {
			t.Errorf("Trusted(%s) = %v, want %v", ip, got, tt.trusted)
		}
	}
}
