package config

import (
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spf-milter/spf-milter/spf"
)

// The schema below is the one place a key of the config file is written:
// Default, the loader, YAML() and the tests that hold examples/config.yaml
// and docs/configuration.md to it all walk it, so that a key added here is
// parsed, defaulted, printed and required in the documentation at once.

// A setting is one key of the config file.
type setting struct {
	// key is the dotted path, such as "dns.timeout": a key with a dot
	// belongs to the section named before it.
	key string
	// kind names the type of the value, for the reference.
	kind string
	// allowed is the form a value may take: shown after "allowed:" in an
	// error line, and in the reference.
	allowed string
	// doc says in one line what the key is for, for the reference.
	doc string
	// defaultDoc stands for a default that depends on the machine or on
	// another key (the host name); empty means the default is the value
	// print gives for Default().
	defaultDoc string

	setDefault func(c *Config)
	// parse reads the value v of the key, written key in error lines,
	// into the loader's Config, recording its problems.
	parse func(l *loader, key string, v *yaml.Node)
	print func(c *Config) *yaml.Node
}

// name is the key's name within its section.
func (s *setting) name() string {
	_, name, ok := strings.Cut(s.key, ".")
	if !ok {
		return s.key
	}
	return name
}

// section is the section a key belongs to, "" for a key of the file itself.
func (s *setting) section() string {
	sec, _, ok := strings.Cut(s.key, ".")
	if !ok {
		return ""
	}
	return sec
}

// reader reads a value into *dst, leaving it alone and recording a
// problem when the value is bad; allowed is the setting's form.
type reader[T any] func(l *loader, key string, v *yaml.Node, allowed string, dst *T)

// value makes the setting of a key whose value lives at *at(c): def is its
// default, read parses it and write prints it.
func value[T any](key, kind, allowed string, at func(*Config) *T, def T, read reader[T], write func(T) *yaml.Node, doc string) setting {
	return setting{
		key: key, kind: kind, allowed: allowed, doc: doc,
		setDefault: func(c *Config) { *at(c) = fresh(def) },
		parse:      func(l *loader, key string, v *yaml.Node) { read(l, key, v, allowed, at(l.cfg)) },
		print:      func(c *Config) *yaml.Node { return write(*at(c)) },
	}
}

// computed replaces the default of s by one set at each call of Default,
// described in the reference as doc.
func (s setting) computed(doc string, set func(c *Config)) setting {
	s.defaultDoc, s.setDefault = doc, set
	return s
}

// fresh copies a default that is a map or a list, so that a caller
// changing one Config cannot change the next Default.
func fresh[T any](v T) T {
	var c any
	switch x := any(v).(type) {
	case map[spf.Result]Action:
		c = maps.Clone(x)
	case map[spf.Result]string:
		c = maps.Clone(x)
	case []netip.Prefix:
		c = slices.Clone(x)
	case []string:
		c = slices.Clone(x)
	default:
		return v
	}
	return c.(T)
}

// A section groups keys under one name, such as dns:.
type section struct {
	name string
	// flow writes the section on one line in YAML(), as a short section is
	// written by hand.
	flow bool
	doc  string
}

// sections are the sections of the file; their keys are in schema.
var sections = []section{
	{"dns", false, "The resolver and its cache."},
	{"policy", false, "What to do with a message, per identity and SPF result."},
	{"headers", true, "The header fields written, and the forged ones removed."},
	{"log", true, "The daemon's log."},
	{"session", true, "Bounds on one MTA connection."},
	{"metrics", true, "The HTTP listener for Prometheus metrics and the health check."},
	{"why", false, `The "why" page, which explains a result to the sender's admin.`},
	{"decision_log", true, `The decision log that "spf-milter replay" reads.`},
	{"shadow", false, "A second policy, never enforced, applied to every message and logged beside the real one (docs/rules.md)."},
}

// Defaults of the why page, which the why package also takes when its
// options are left zero.
const (
	// DefaultWhyRate is how many requests a minute one client may make:
	// a person reloading the page now and then, not a script.
	DefaultWhyRate = 20
	// DefaultWhyConcurrent bounds the live checks running at once.
	DefaultWhyConcurrent = 4
	// DefaultWhyCache is how long an answer is served again.
	DefaultWhyCache = time.Minute
)

// WhyURLToken in a reply template stands for the link to the why page
// (why.url with the sender, IP and HELO of the message). It is not an SPF
// macro, which are single letters, so that it cannot clash with one; a
// template that uses it needs why.url.
const WhyURLToken = "{why_url}"

// The forms a value may take that more than one key shares.
const (
	allowedListen     = "inet:HOST:PORT, inet6:[HOST]:PORT, unix:/PATH, inet:PORT@HOST"
	allowedHost       = "a host name such as mx.example.net"
	allowedDuration   = "a Go duration such as 5s or 1m30s"
	allowedBool       = "true, false"
	allowedNetwork    = "an IP network such as 192.0.2.0/24 or 2001:db8::/32, or one IP address"
	allowedActions    = "accept, reject, tempfail, quarantine"
	allowedMacro      = "text with SPF macros such as %{s}, %{i}, %{d}, %{r}, and %% for a %"
	allowedHTTPListen = `HOST:PORT with an IP address or localhost for HOST, such as 127.0.0.1:9095 or [::1]:9095; "" for no listener`
	allowedSizeUnits  = "(KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024)"
)

// Bounds past which a value can only be a typo.
const (
	// Ten million DNS answers would take gigabytes.
	maxCacheSize = 10_000_000
	// Below a megabyte the DNS cache could keep only the smallest answers
	// (each may take 1/64 of the bound).
	minCacheBytes    = 1 << 20
	maxCacheBytes    = 64 << 30
	maxWhyRate       = 10000
	maxWhyConcurrent = 1000
	// A longer why cache would show an answer long after the record was
	// fixed.
	maxWhyCache = time.Hour
	minLogSize  = 1000
	maxLogSize  = 1000 * 1000 * 1000 * 1000
	maxLogKeep  = 1000
)

// schema is every key of the config file, in the order of the file: the
// order of YAML() and of the keys listed after "allowed:".
var schema = []setting{
	value("listen", "socket", allowedListen,
		func(c *Config) *string { return &c.Listen }, "inet:127.0.0.1:8895", readListen, str,
		"The milter socket the MTA connects to; a change needs a restart."),
	value("socket_mode", "octal mode", `an octal mode in quotes, "0000" to "0777"`,
		func(c *Config) *fs.FileMode { return &c.SocketMode }, 0o660, readMode, modeNode,
		"Permissions of a unix socket (ignored for inet)."),
	value("authserv_id", "host name", allowedHost,
		func(c *Config) *string { return &c.AuthservID }, "", readAuthservID, str,
		"The authserv-id of our Authentication-Results header, which downstream filters (OpenDMARC) must trust.").
		computed("this machine's host name", func(c *Config) { c.AuthservID = hostname() }),
	value("receiver", "host name", allowedHost,
		func(c *Config) *string { return &c.Receiver }, "", readReceiver, str,
		"The receiving host named in Received-SPF and by the %{r} macro.").
		computed("authserv_id", func(c *Config) { c.Receiver = c.AuthservID }),

	value("dns.servers", "list of addresses", "an IP address with an optional port, such as 192.0.2.53, 192.0.2.53:53 or [2001:db8::53]:53",
		func(c *Config) *[]string { return &c.DNS.Servers }, nil, listOf(parseServer), stringsNode,
		"Recursive resolvers, port 53 when left out; empty means the nameservers of /etc/resolv.conf."),
	value("dns.timeout", "duration", allowedDuration,
		func(c *Config) *time.Duration { return &c.DNS.Timeout }, spf.DefaultDNSTimeout, (*loader).duration, duration,
		"Time for one query to one server."),
	value("dns.check_timeout", "duration", allowedDuration,
		func(c *Config) *time.Duration { return &c.DNS.CheckTimeout }, spf.DefaultCheckTimeout, (*loader).duration, duration,
		"Time for one whole SPF check; running out of it is a temperror."),
	value("dns.cache_size", "count", fmt.Sprintf("a whole number of entries from 0 (no cache) to %d", maxCacheSize),
		func(c *Config) *int { return &c.DNS.CacheSize }, spf.DefaultCacheSize, upTo(maxCacheSize), integer,
		"DNS answers kept in memory, shared by every session and kept across reloads; 0 turns the cache off."),
	value("dns.cache_bytes", "size", "a size such as 32MiB, 64MB or 1GiB, from 1MiB to 64GiB "+allowedSizeUnits,
		func(c *Config) *int64 { return &c.DNS.CacheBytes }, spf.DefaultCacheBytes, sizeIn(minCacheBytes, maxCacheBytes), sizeNode,
		"Memory those answers may take, as the cache accounts it; past it the least recently used go."),

	value("policy.mailfrom", "result: action", allowedActions,
		func(c *Config) *map[spf.Result]Action { return &c.Policy.MailFrom }, map[spf.Result]Action{
			spf.None: Accept, spf.Neutral: Accept, spf.Pass: Accept, spf.Fail: Reject,
			spf.Softfail: Accept, spf.TempError: Tempfail, spf.PermError: Accept,
		}, readPolicy, policyNode,
		"The action for each SPF result of the MAIL FROM domain; a result left out keeps its default."),
	// A HELO temperror is not worth deferring mail for: the MAIL FROM
	// check, which matters more, follows.
	value("policy.helo", "result: action", allowedActions,
		func(c *Config) *map[spf.Result]Action { return &c.Policy.HELO }, map[spf.Result]Action{
			spf.None: Accept, spf.Neutral: Accept, spf.Pass: Accept, spf.Fail: Reject,
			spf.Softfail: Accept, spf.TempError: Accept, spf.PermError: Accept,
		}, readPolicy, policyNode,
		"The action for each SPF result of the HELO name, checked when it refuses some result or for the null sender."),

	value("trusted_networks", "list of networks", allowedNetwork,
		func(c *Config) *[]netip.Prefix { return &c.TrustedNetworks },
		[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		listOf(parseNetwork), networksNode,
		"Clients that are not checked at all and get no SPF header."),
	value("skip_authenticated", "boolean", allowedBool,
		func(c *Config) *bool { return &c.SkipAuthenticated }, true, (*loader).bool, boolean,
		"No check for clients that authenticated with SMTP AUTH."),
	value("dry_run", "boolean", allowedBool,
		func(c *Config) *bool { return &c.DryRun }, false, (*loader).bool, boolean,
		"Decide, log and write headers as usual, but never reject or tempfail."),

	value("headers.received_spf", "boolean", allowedBool,
		func(c *Config) *bool { return &c.Headers.ReceivedSPF }, true, (*loader).bool, boolean,
		"Write a Received-SPF header field (RFC 7208 section 9.1)."),
	value("headers.authentication_results", "boolean", allowedBool,
		func(c *Config) *bool { return &c.Headers.AuthenticationResults }, true, (*loader).bool, boolean,
		"Write an Authentication-Results header field (RFC 8601)."),
	value("headers.remove_forged", "boolean", allowedBool,
		func(c *Config) *bool { return &c.Headers.RemoveForged }, true, (*loader).bool, boolean,
		"Remove incoming Received-SPF fields, and Authentication-Results fields with our authserv_id."),

	value("log.format", "one of", "text, json",
		func(c *Config) *string { return &c.Log.Format }, "text", (*loader).oneOf, str,
		"The form of the daemon's log lines."),
	value("log.level", "one of", "debug, info, warn, error",
		func(c *Config) *string { return &c.Log.Level }, "info", (*loader).oneOf, str,
		"The least important log lines written."),

	value("explanation", "macro-string", allowedMacro,
		func(c *Config) *string { return &c.Explanation }, spf.DefaultExplanation, readExplanation, str,
		"The explanation of a fail result when the domain publishes none (no exp=)."),
	value("replies", "result: macro-string", allowedMacro,
		func(c *Config) *map[spf.Result]string { return &c.Replies }, map[spf.Result]string{}, readReplies, repliesNode,
		"The text of the SMTP reply refusing a message, per SPF result; a result without one gets the built-in text."),
	value("skip_senders", "list of domains", "a domain name such as example.com",
		func(c *Config) *[]string { return &c.SkipSenders }, nil, listOf(parseDomain), stringsNode,
		"Sender domains that are not checked, with their subdomains."),
	value("skip_clients", "list of networks", allowedNetwork,
		func(c *Config) *[]netip.Prefix { return &c.SkipClients }, nil, listOf(parseNetwork), networksNode,
		"Client networks that are not checked, such as forwarders; they get no SPF header."),
	value("relays", "list of networks", allowedNetwork,
		func(c *Config) *[]netip.Prefix { return &c.Relays }, nil, listOf(parseNetwork), networksNode,
		"Hosts that pass mail on to us, such as a filtering gateway or a backup MX: not checked themselves, the client they received the mail from is, read from their Received fields (docs/relays.md)."),
	value("never_refuse", "list of recipients", "a local part such as postmaster, or an address such as abuse@example.net",
		func(c *Config) *[]string { return &c.NeverRefuse }, nil, listOf(parseRecipient), stringsNode,
		"Recipients that are never refused; with any listed, a refusal moves from MAIL FROM to RCPT TO."),

	// Longer than the MTA's own SMTP idle timeout (Postfix's smtpd_timeout
	// is 300s), so that a slow but legal SMTP client never has its milter
	// session cut first.
	value("session.idle_timeout", "duration", allowedDuration,
		func(c *Config) *time.Duration { return &c.Session.IdleTimeout }, 10*time.Minute, (*loader).duration, duration,
		"Close a connection that sends nothing for this long."),
	value("session.max_duration", "duration", allowedDuration,
		func(c *Config) *time.Duration { return &c.Session.MaxDuration }, time.Hour, (*loader).duration, duration,
		"Close a connection open for longer than this."),

	value("metrics.listen", "HTTP listener", allowedHTTPListen,
		func(c *Config) *string { return &c.Metrics.Listen }, "", readHTTPListen, str,
		"Where /metrics and /healthz are served over HTTP; empty means no listener. A change needs a restart."),

	value("why.listen", "HTTP listener", allowedHTTPListen,
		func(c *Config) *string { return &c.Why.Listen }, "", readWhyListen, str,
		"The why page's own listener; empty means the metrics listener, if there is one. A change needs a restart."),
	value("why.url", "URL", `an absolute http or https URL without query or fragment, such as https://mx.example.net/why; "" for no link`,
		func(c *Config) *string { return &c.Why.URL }, "", readWhyURL, str,
		"The page's public address, linked from refusals and {why_url} in replies; empty means no link."),
	value("why.rate", "count", fmt.Sprintf("a whole number of requests a minute per client, from 1 to %d", maxWhyRate),
		func(c *Config) *int { return &c.Why.Rate }, DefaultWhyRate, positiveUpTo(maxWhyRate), integer,
		"Requests a minute one client (an IPv6 client by its /64) may make."),
	value("why.concurrent", "count", fmt.Sprintf("a whole number of checks, from 1 to %d", maxWhyConcurrent),
		func(c *Config) *int { return &c.Why.Concurrent }, DefaultWhyConcurrent, positiveUpTo(maxWhyConcurrent), integer,
		"Live checks running at once; more get 503."),
	value("why.cache", "duration", "a Go duration such as 30s or 5m, at most 1h; 0 for no cache",
		func(c *Config) *time.Duration { return &c.Why.Cache }, DefaultWhyCache, readWhyCache, duration,
		"How long an answer is served again without a new check; 0 turns the cache off."),

	value("decision_log.path", "file path", `an absolute file path such as /var/log/spf-milter/decisions.jsonl; "" for no decision log`,
		func(c *Config) *string { return &c.DecisionLog.Path }, "", readLogPath, str,
		"The file of one JSON line per message; empty means no decision log."),
	// 5 x 100MB when a path is given.
	value("decision_log.max_size", "size", "a size such as 100MB, 512KiB or 2GB, from 1KB to 1TB "+allowedSizeUnits,
		func(c *Config) *int64 { return &c.DecisionLog.MaxSize }, 100*1000*1000, sizeIn(minLogSize, maxLogSize), sizeNode,
		"The size past which the file is rotated to PATH.1, PATH.1 to PATH.2, and so on."),
	value("decision_log.keep", "count", fmt.Sprintf("a whole number of rotated files from 0 (none) to %d", maxLogKeep),
		func(c *Config) *int { return &c.DecisionLog.Keep }, 5, upTo(maxLogKeep), integer,
		"Rotated files kept; 0 starts the file anew when it is full."),

	value("rules", "list of rules", allowedRule,
		func(c *Config) *[]Rule { return &c.Rules }, nil, readRules, rulesNode,
		"Per sender domain, HELO name, client, client name or listener: skip the check or override the policy; the first matching rule applies (docs/rules.md)."),
	value("shadow.policy", "identity: result: action", allowedShadow,
		func(c *Config) *Policy { return &c.Shadow.Policy }, Policy{}, readShadowPolicy, shadowPolicyNode,
		"Overrides of the global policy, for the results named, in the shadow policy."),
	value("shadow.rules", "list of rules", allowedRule,
		func(c *Config) *[]Rule { return &c.Shadow.Rules }, nil, readRules, rulesNode,
		"The shadow policy's rules, in the syntax of rules; the live rules do not apply to it."),
}

// An entry is one key of the file itself: a setting, or a section of them.
type entry struct {
	name string
	// setting is the key's, for a key outside any section.
	setting *setting
	// section and keys are the section's, for a section.
	section *section
	keys    []*setting
}

// layout is the file's keys as entries, in schema order: a section stands
// where its first key is.
var layout = func() []entry {
	var out []entry
	for i := range schema {
		s := &schema[i]
		name := s.section()
		if name == "" {
			out = append(out, entry{name: s.key, setting: s})
			continue
		}
		if n := len(out); n > 0 && out[n-1].name == name {
			out[n-1].keys = append(out[n-1].keys, s)
			continue
		}
		idx := slices.IndexFunc(sections, func(sec section) bool { return sec.name == name })
		if idx < 0 {
			panic("config: key " + s.key + " in a section not in sections")
		}
		if slices.ContainsFunc(out, func(e entry) bool { return e.name == name }) {
			panic("config: the keys of section " + name + " are not together in schema")
		}
		out = append(out, entry{name: name, section: &sections[idx], keys: []*setting{s}})
	}
	return out
}()

// Default returns the built-in configuration: what the daemon runs on when
// no config file exists, and what every key left out of a file keeps.
func Default() *Config {
	c := &Config{}
	for i := range schema {
		schema[i].setDefault(c)
	}
	return c
}

// hostname is the default authserv-id and receiver.
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}
