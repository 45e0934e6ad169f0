// Package config reads the spf-milter YAML file: typed, with defaults, and
// validated strictly, so that a mistake is refused at load time with its
// file, line, key, bad value and the values allowed.
package config

import (
	"io/fs"
	"net/netip"
	"time"

	"github.com/spf-milter/spf-milter/spf"
)

// DefaultPath is where the daemon looks for its config file.
const DefaultPath = "/etc/spf-milter/config.yaml"

// Action is what the milter does with a message after its SPF result.
type Action string

// The actions a policy can name.
const (
	Accept     Action = "accept"
	Reject     Action = "reject"
	Tempfail   Action = "tempfail"
	Quarantine Action = "quarantine"
)

// Config is the whole configuration, defaults filled in.
type Config struct {
	// Listen is the milter socket: inet:HOST:PORT, inet6:[HOST]:PORT,
	// unix:/path, or Sendmail's inet:PORT@HOST.
	Listen string
	// SocketMode is applied to a unix socket.
	SocketMode fs.FileMode
	// AuthservID names us in Authentication-Results; default: host name.
	AuthservID string
	// Receiver names us in Received-SPF and %{r}; default: AuthservID.
	Receiver string
	DNS      DNS
	Policy   Policy
	// TrustedNetworks are clients that are not checked and get no header.
	TrustedNetworks []netip.Prefix
	// SkipAuthenticated skips clients that authenticated ({auth_authen}).
	SkipAuthenticated bool
	// DryRun decides and logs but never rejects or tempfails.
	DryRun  bool
	Headers Headers
	Log     Log
	// Replies are SMTP reply text templates per result (SPF macro syntax,
	// expanded for the refused message); a result without one uses the
	// built-in text carrying the explanation.
	Replies map[spf.Result]string
	// Explanation is the macro-string given as spf.Checker.Explanation:
	// the explanation of a fail result when the domain publishes none.
	Explanation string
	// SkipSenders are MAIL FROM domains (and their subdomains) not checked.
	SkipSenders []string
	// SkipClients are client networks not checked, such as known
	// forwarders; like trusted networks they get no header, but the log
	// names the skip list as the reason.
	SkipClients []netip.Prefix
	// Relays are hosts that pass mail on to us (a filtering gateway, a
	// backup MX): a client among them is not checked, the client it
	// received the message from is, read from the Received fields of the
	// relays at the end of the headers.
	Relays []netip.Prefix
	// NeverRefuse are recipients that are never refused: local parts
	// ("postmaster") or whole addresses ("abuse@example.net"). A refusal
	// then moves from MAIL FROM to RCPT TO for the other recipients.
	NeverRefuse []string
	// Session bounds one MTA connection.
	Session Session
	// Metrics configures the HTTP listener for metrics and health checks.
	Metrics Metrics
	// Why configures the "why" page, which explains a result to the
	// sender's admin, and the link to it in refusals.
	Why Why
	// DecisionLog configures the decision log, which "spf-milter replay"
	// reads.
	DecisionLog DecisionLog
	// Rules select messages by sender domain, HELO name, client, client
	// name and listener, and skip them or override the matrix for them;
	// the first that matches applies.
	Rules []Rule
	// Shadow is a second policy applied to every message and never
	// enforced.
	Shadow Shadow
}

// DNS configures the resolver.
type DNS struct {
	// Servers are host:port; empty means /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query; CheckTimeout one whole check.
	Timeout      time.Duration
	CheckTimeout time.Duration
	// CacheSize bounds the answers the resolver keeps, shared by every
	// session; 0 turns the cache off.
	CacheSize int
	// CacheBytes bounds the memory those answers take, in bytes as the
	// resolver accounts them; an answer over 1/64 of it is used but not
	// kept, and the parsed records kept beside the answers take at most
	// 1/8 of it more. It has no effect when CacheSize is 0.
	CacheBytes int64
}

// Policy maps each identity's SPF result to an action.
type Policy struct {
	MailFrom map[spf.Result]Action
	HELO     map[spf.Result]Action
}

// Headers selects the headers written and whether forged copies of ours
// are removed.
type Headers struct {
	ReceivedSPF           bool
	AuthenticationResults bool
	RemoveForged          bool
}

// Log configures logging: format text or json, level debug, info, warn or
// error.
type Log struct {
	Format string
	Level  string
}

// Session bounds one MTA connection so that a stuck peer cannot pin
// resources.
type Session struct {
	// IdleTimeout closes a connection that sends nothing for this long.
	IdleTimeout time.Duration
	// MaxDuration closes a connection open for longer than this.
	MaxDuration time.Duration
}

// Metrics configures the optional HTTP listener that serves Prometheus
// metrics and the health check.
type Metrics struct {
	// Listen is "host:port" with an IP address or localhost for host;
	// empty means no listener.
	Listen string
}

// Why configures the "why" page: an HTTP page that runs a check live and
// explains its result, and the link to it in refusal replies.
type Why struct {
	// Listen is the page's own listener, "host:port" as for
	// metrics.listen. Empty means the metrics listener, if there is one;
	// with neither, no page is served.
	Listen string
	// URL is the page's public address, an absolute http or https URL
	// such as https://mx.example.net/why; refusals link to it with the
	// sender, IP and HELO. Empty means no link.
	URL string
	// Rate is how many requests a minute one client may make.
	Rate int
	// Concurrent bounds the live checks running at once.
	Concurrent int
	// Cache is how long an answer is served again without a new check; 0
	// turns the cache off.
	Cache time.Duration
}

// DecisionLog configures the decision log: one JSON line per message,
// opt-in, rotated by size.
type DecisionLog struct {
	// Path is the file; empty means no decision log.
	Path string
	// MaxSize is the size in bytes past which the file is rotated: it
	// becomes PATH.1, PATH.1 becomes PATH.2, and so on.
	MaxSize int64
	// Keep is how many rotated files are kept; 0 starts the file anew
	// when it is full.
	Keep int
}

// Rule is one entry of rules (or shadow.rules): a policy for the messages
// its When selects, until a date. The first rule that matches a message
// applies; the policy package compiles the list into matchers.
type Rule struct {
	// Name is unique within its list, and shown wherever the rule is.
	Name string
	// When are the conditions, all of which must hold; a rule without
	// any matches every message.
	When When
	// Until is the day (00:00 UTC) from which the rule no longer
	// applies; zero for no end.
	Until time.Time
	// Skip lets the message through unchecked, with no header, as
	// trusted_networks does.
	Skip bool
	// MailFrom and HELO replace the global matrix for the results they
	// name; nil when they name none.
	MailFrom map[spf.Result]Action
	HELO     map[spf.Result]Action
}

// When is a rule's conditions. A nil list is a condition not given; a
// given one has at least one item, any of which may match.
type When struct {
	// SenderDomain, HELO and ClientName are domains in lower case and
	// A-label form, without a final dot: "example.com" is that name
	// exactly, ".example.com" its subdomains (not itself).
	SenderDomain []string
	HELO         []string
	// Client are IP networks, a single address as a /32 or /128.
	Client []netip.Prefix
	// ClientName is matched against the forward-confirmed reverse DNS
	// name of the client.
	ClientName []string
	// Listener are values of the MTA's {daemon_name} macro, compared
	// exactly.
	Listener []string
}

// Empty reports whether w has no condition, so that it matches every
// message.
func (w When) Empty() bool {
	return w.SenderDomain == nil && w.HELO == nil && w.Client == nil && w.ClientName == nil && w.Listener == nil
}

// Shadow is a second policy, never enforced: its action on every live
// message is logged, recorded and counted beside the real one.
type Shadow struct {
	// Policy holds overrides of the global matrix, for the results it
	// names only (nil maps when none).
	Policy Policy
	// Rules are the shadow's own rules, in the syntax of rules; the live
	// rules do not apply to the shadow.
	Rules []Rule
}

// Enabled reports whether a shadow policy is configured.
func (s Shadow) Enabled() bool {
	return len(s.Policy.MailFrom) > 0 || len(s.Policy.HELO) > 0 || len(s.Rules) > 0
}
