package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

const checkUsage = `Usage: spf-milter check --ip IP [--sender ADDR] [--helo NAME] [flags]

Checks whether IP may send mail for the sender's domain (or, with
--identity helo, use NAME in HELO), and explains the result.

--sender "" or "<>" is the null sender, checked as postmaster@<HELO name>.
With --config, the check uses the file's DNS servers, timeouts, receiver
and explanation (flags given override them) and also shows the action,
SMTP reply and header fields the milter would produce under that config,
the rule that applies and the shadow policy's action. Its rules may need
the listener ({daemon_name}: --listener) and the client's confirmed name
(looked up as the daemon does, unless --client-name gives it).
The check exits 0 whatever the SPF result; 1 means it could not be set up
(such as a bad config file); 2 means a bad command line.

Flags:
`

// serverList collects a repeatable --dns flag.
type serverList []string

func (s *serverList) String() string { return strings.Join(*s, ",") }

func (s *serverList) Set(v string) error {
	if v == "" {
		return errors.New("empty server address")
	}
	*s = append(*s, v)
	return nil
}

// checkOptions is a parsed check command line.
type checkOptions struct {
	ip        netip.Addr
	sender    string
	helo      string
	identity  spf.Identity
	receiver  string
	servers   []string
	timeout   time.Duration
	trace     bool
	json      bool
	nullInput bool // the sender given was the null sender
	// configPath is the --config file, "" for none; receiverGiven and
	// timeoutGiven tell which of its settings the command line overrides.
	configPath    string
	receiverGiven bool
	timeoutGiven  bool
	// listener and clientName are the facts the config's rules may
	// select on; clientNameGiven tells that no lookup is to be made.
	listener        string
	clientName      string
	clientNameGiven bool
}

// parseCheck turns args into options, or returns an error that is the
// one-line usage message. A request for help gives flag.ErrHelp.
func parseCheck(args []string, stdout io.Writer) (*checkOptions, error) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	// The flag package would print its error and the whole usage on
	// stderr; the caller prints one line instead.
	fs.SetOutput(io.Discard)
	ip := fs.String("ip", "", "client `IP` address to check (required)")
	sender := fs.String("sender", "", "MAIL FROM `address`; \"\" or \"<>\" for the null sender")
	helo := fs.String("helo", "", "HELO/EHLO `name` the client gave")
	identity := fs.String("identity", "mailfrom", "identity to check: `mailfrom` or helo")
	receiver := fs.String("receiver", "", "receiving host `name` for %{r} and the headers (default: this host's name)")
	var servers serverList
	fs.Var(&servers, "dns", "recursive DNS server `HOST:PORT` to ask; repeatable (default: those of /etc/resolv.conf)")
	timeout := fs.Duration("timeout", spf.DefaultCheckTimeout, "time limit for the whole `duration` of the check")
	trace := fs.Bool("trace", false, "show the evaluation step by step")
	asJSON := fs.Bool("json", false, "print one JSON object instead of text")
	configPath := fs.String("config", "", "config file `path`: use its settings, and show the action, reply and headers it gives")
	listener := fs.String("listener", "", "with --config: the MTA's {daemon_name} `name` for the rules, such as submission")
	clientName := fs.String("client-name", "", "with --config: the client's confirmed host `name` for the rules, instead of looking it up (\"\" for none)")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, checkUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o := &checkOptions{
		sender:  *sender,
		helo:    *helo,
		servers: servers,
		timeout: *timeout,
		trace:   *trace,
		json:    *asJSON,

		configPath:    *configPath,
		receiverGiven: given["receiver"],
		timeoutGiven:  given["timeout"],
	}
	if given["config"] && o.configPath == "" {
		return nil, errors.New("--config needs a path")
	}
	for _, f := range []string{"listener", "client-name"} {
		if given[f] && o.configPath == "" {
			return nil, fmt.Errorf("--%s needs --config: only a config's rules use it", f)
		}
	}
	o.listener = *listener
	o.clientName, o.clientNameGiven = strings.ToLower(strings.TrimSuffix(*clientName, ".")), given["client-name"]
	if *ip == "" {
		return nil, errors.New("--ip is required")
	}
	addr, err := netip.ParseAddr(*ip)
	if err != nil {
		return nil, fmt.Errorf("bad --ip %q: not an IP address", *ip)
	}
	if addr.Zone() != "" {
		return nil, fmt.Errorf("bad --ip %q: an IPv6 zone is meaningless to SPF", *ip)
	}
	o.ip = addr
	switch id := spf.Identity(strings.ToLower(*identity)); id {
	case spf.IdentityMailFrom:
		if !given["sender"] && o.helo == "" {
			return nil, errors.New("--identity mailfrom needs --sender (\"\" for the null sender) or --helo")
		}
		o.identity = id
	case spf.IdentityHELO:
		if o.helo == "" {
			return nil, errors.New("--identity helo needs --helo")
		}
		o.identity = id
	default:
		return nil, fmt.Errorf("bad --identity %q: want mailfrom or helo", *identity)
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("bad --timeout %v: must be positive", o.timeout)
	}
	o.nullInput = o.sender == "" || o.sender == "<>"
	if given["receiver"] {
		o.receiver = *receiver
	} else if host, err := os.Hostname(); err == nil {
		o.receiver = host
	}
	return o, nil
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	o, err := parseCheck(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return usageError(stderr, "check", "%v", err)
	}
	// A dead server must leave time to ask the next one, and no query may
	// outlast the whole check.
	queryTimeout := min(spf.DefaultDNSTimeout, o.timeout)
	var cfg *config.Config
	if o.configPath != "" {
		if cfg, err = config.Load(o.configPath); err != nil {
			fmt.Fprintf(stderr, "spf-milter check: %s\n", oneLine(err))
			return 1
		}
		// The command line wins over the file.
		cfg = applyCheckFlags(cfg, o)
		if len(o.servers) == 0 {
			o.servers = cfg.DNS.Servers
		}
		o.timeout = cfg.DNS.CheckTimeout
		o.receiver = cfg.Receiver
		queryTimeout = min(cfg.DNS.Timeout, o.timeout)
	}
	resolver, err := spf.NewDNSResolver(spf.DNSOptions{
		Servers: o.servers,
		Timeout: queryTimeout,
	})
	if err != nil {
		if len(o.servers) > 0 {
			return usageError(stderr, "check", "bad --dns: %v", err)
		}
		fmt.Fprintf(stderr, "spf-milter check: %v\n", err)
		return 1
	}
	c := &spf.Checker{Resolver: resolver, Receiver: o.receiver, Timeout: o.timeout}
	if cfg != nil {
		c.Explanation = cfg.Explanation
	}

	var out *spf.Outcome
	if o.identity == spf.IdentityHELO {
		out = c.CheckHELO(context.Background(), o.ip, o.helo)
	} else {
		out = c.CheckMailFrom(context.Background(), o.ip, o.sender, o.helo)
	}

	var pol *checkPolicy
	if cfg != nil {
		pol = decideCheck(cfg, o, resolver, out, stderr)
	}
	if o.json {
		if err := writeCheckJSON(stdout, o, out, pol); err != nil {
			fmt.Fprintf(stderr, "spf-milter check: %v\n", err)
			return 1
		}
		return 0
	}
	writeCheckText(stdout, o, out, pol)
	return 0
}

// applyCheckFlags returns a copy of cfg with the settings the command line
// gives in its place, so that the headers and the reply name the receiver
// the check used.
func applyCheckFlags(cfg *config.Config, o *checkOptions) *config.Config {
	c := *cfg
	if o.receiverGiven {
		c.Receiver = o.receiver
	}
	if o.timeoutGiven {
		c.DNS.CheckTimeout = o.timeout
	}
	return &c
}

// checkPolicy is what a config makes of an outcome: the milter's decision
// and the header fields it would insert.
type checkPolicy struct {
	decision policy.Decision
	headers  []milter.Field
	// skipped is the reason the milter would not check the message
	// (policy.Skip.Key), "" when it would; rule the rule that applies.
	skipped string
	rule    string
	shadow  policy.ShadowDecision
}

// checkJSON is the --json output. Field names are part of the command's
// interface: scripts read them.
type checkJSON struct {
	Result                string     `json:"result"`
	Identity              string     `json:"identity"`
	Domain                string     `json:"domain"`
	Sender                string     `json:"sender"`
	NullSender            bool       `json:"null_sender"`
	IP                    string     `json:"ip"`
	HELO                  string     `json:"helo"`
	Receiver              string     `json:"receiver"`
	Record                string     `json:"record"`
	Mechanism             string     `json:"mechanism"`
	MechanismDomain       string     `json:"mechanism_domain"`
	Explanation           string     `json:"explanation"`
	Problem               string     `json:"problem"`
	DNSLookups            int        `json:"dns_lookups"`
	VoidLookups           int        `json:"void_lookups"`
	DurationMS            float64    `json:"duration_ms"`
	ReceivedSPF           string     `json:"received_spf"`
	AuthenticationResults string     `json:"authentication_results"`
	Trace                 []spf.Step `json:"trace"`
	// Present with --config only.
	*CheckPolicyJSON
}

// CheckPolicyJSON is the part of the --json output that --config adds. It
// is exported only because encoding/json flattens an embedded pointer to
// an exported type alone.
type CheckPolicyJSON struct {
	// Action is what the policy names for the result, even in a dry run.
	Action string `json:"action"`
	// Reply is the reply line the SMTP client reads, "" when the message
	// is not refused.
	Reply string `json:"reply"`
	// DryRun tells that the action is only logged.
	DryRun bool `json:"dry_run"`
	// HoldReason is the reason given to a quarantine.
	HoldReason string `json:"hold_reason,omitempty"`
	// Headers are the fields inserted at the top of the message, in order.
	Headers []headerJSON `json:"headers"`
	// Skipped is why the milter would not check the message at all
	// (trusted_networks, skip_clients, skip_senders, rule), "" when it
	// would; Rule names the rule that applies, "" for none.
	Skipped string `json:"skipped"`
	Rule    string `json:"rule"`
	// ShadowAction is the shadow policy's action, "" without one or when
	// it cannot tell; ShadowRule the shadow rule that applies.
	ShadowAction string `json:"shadow_action"`
	ShadowRule   string `json:"shadow_rule"`
}

// headerJSON is one header field in the --json output.
type headerJSON struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

func writeCheckJSON(w io.Writer, o *checkOptions, out *spf.Outcome, pol *checkPolicy) error {
	ip := ""
	if out.IP.IsValid() {
		ip = out.IP.String()
	}
	trace := out.Trace
	if trace == nil {
		trace = []spf.Step{} // [] rather than null, for simpler consumers
	}
	var pj *CheckPolicyJSON
	if pol != nil {
		pj = &CheckPolicyJSON{
			Action:       string(pol.decision.Action),
			Reply:        pol.decision.ClientReply(),
			DryRun:       pol.decision.DryRun,
			Headers:      []headerJSON{}, // [] rather than null
			Skipped:      pol.skipped,
			Rule:         pol.rule,
			ShadowAction: string(pol.shadow.Action),
			ShadowRule:   pol.shadow.Rule,
		}
		if pol.decision.Action == config.Quarantine {
			pj.HoldReason = pol.decision.Text
		}
		for _, f := range pol.headers {
			pj.Headers = append(pj.Headers, headerJSON{Name: f.Name, Value: f.Value})
		}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(checkJSON{
		CheckPolicyJSON:       pj,
		Result:                string(out.Result),
		Identity:              string(out.Identity),
		Domain:                out.Domain,
		Sender:                out.Sender,
		NullSender:            o.identity == spf.IdentityMailFrom && o.nullInput,
		IP:                    ip,
		HELO:                  out.HELO,
		Receiver:              o.receiver,
		Record:                out.Record,
		Mechanism:             out.Mechanism,
		MechanismDomain:       out.MechanismDomain,
		Explanation:           out.Explanation,
		Problem:               out.Problem,
		DNSLookups:            out.DNSLookups,
		VoidLookups:           out.VoidLookups,
		DurationMS:            math.Round(float64(out.Duration.Microseconds())) / 1000,
		ReceivedSPF:           out.ReceivedSPF(o.receiver),
		AuthenticationResults: spf.AuthenticationResults(o.receiver, out),
		Trace:                 trace,
	})
}

// writeCheckText explains out to a person, in the spirit of the old
// openspf.org "Why?" page: what the result means, the policy, which part
// of it decided, and what a receiver would record.
func writeCheckText(w io.Writer, o *checkOptions, out *spf.Outcome, pol *checkPolicy) {
	// Everything below may come from DNS or the command line: show it
	// without letting control characters reach the terminal.
	domain, ip := printable(out.Domain), "(no address)"
	if out.IP.IsValid() {
		ip = out.IP.String()
	}
	var who string
	if out.Identity == spf.IdentityHELO {
		who = "use the HELO name " + printable(out.HELO)
	} else {
		who = "send mail from " + printable(out.Sender)
	}

	fmt.Fprintf(w, "Result: %s\n", out.Result)
	fmt.Fprintf(w, "  %s\n", describeResult(out.Result, domain, ip, who, out.LookedUp()))
	fmt.Fprintln(w)

	identity := "MAIL FROM " + printable(out.Sender)
	if out.Identity == spf.IdentityHELO {
		identity = "HELO " + printable(out.HELO) + " (as " + printable(out.Sender) + ")"
	} else if o.nullInput {
		identity = "MAIL FROM <> (null sender, checked as " + printable(out.Sender) + ")"
	}
	fmt.Fprintf(w, "Checked:     %s from %s", identity, ip)
	if out.Identity != spf.IdentityHELO && out.HELO != "" {
		fmt.Fprintf(w, ", HELO %s", printable(out.HELO))
	}
	fmt.Fprintln(w)
	switch {
	case out.Record != "":
		fmt.Fprintf(w, "Record:      %s has \"%s\"\n", domain, printable(out.Record))
	case out.Result == spf.None && out.LookedUp():
		fmt.Fprintf(w, "Record:      none found for %s\n", domain)
	case out.Result == spf.TempError || out.Result == spf.PermError:
		fmt.Fprintf(w, "Record:      none usable for %s (see Problem)\n", domain)
	}
	fmt.Fprintf(w, "Decision:    %s\n", describeDecidingTerm(out, ip))
	if out.Explanation != "" {
		fmt.Fprintf(w, "Explanation: %s\n", printable(out.Explanation))
	}
	if out.Problem != "" {
		fmt.Fprintf(w, "Problem:     %s\n", printable(out.Problem))
	}
	fmt.Fprintf(w, "Lookups:     %d DNS (limit 10), %d void (limit 2), in %v\n",
		out.DNSLookups, out.VoidLookups, out.Duration.Round(time.Microsecond))

	if o.trace {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Trace:")
		if len(out.Trace) == 0 {
			fmt.Fprintln(w, "  (no steps)")
		}
		for _, s := range out.Trace {
			fmt.Fprintf(w, "  %s\n", printable(s.String()))
		}
	}
	fmt.Fprintln(w)
	if pol != nil {
		writePolicyText(w, pol)
		return
	}
	// The header is already sanitised by spf; printing it verbatim shows
	// exactly what the milter would add.
	fmt.Fprintf(w, "Received-SPF: %s\n", out.ReceivedSPF(o.receiver))
}

// writePolicyText shows what the config makes of the outcome: the action,
// the reply and the header fields, which are already sanitised and shown
// verbatim, folded as the milter hands them over.
func writePolicyText(w io.Writer, pol *checkPolicy) {
	d := pol.decision
	action := string(d.Action)
	switch {
	case pol.skipped == "rule":
		action += " (skipped: rule " + pol.rule + "; the message is not checked and gets no header)"
	case pol.skipped != "":
		action += " (skipped: " + pol.skipped + "; the message is not checked and gets no header)"
	case d.DryRun && d.Action != config.Accept:
		action += " (dry run: only logged, the message is accepted)"
	}
	fmt.Fprintf(w, "Action: %s\n", action)
	if pol.rule != "" && pol.skipped == "" {
		fmt.Fprintf(w, "Rule: %s%s\n", pol.rule, ruleEffect(d))
	}
	if pol.shadow.Known {
		shadow := string(pol.shadow.Action)
		if pol.shadow.Rule != "" {
			shadow += " (shadow rule " + pol.shadow.Rule + ")"
		}
		fmt.Fprintf(w, "Shadow action: %s (never applied)\n", shadow)
	}
	if r := d.ClientReply(); r != "" {
		fmt.Fprintf(w, "Reply: %s\n", r)
	} else {
		fmt.Fprintln(w, "Reply: (none: the message is not refused)")
	}
	if d.Action == config.Quarantine {
		fmt.Fprintf(w, "Hold reason: %s\n", d.Text)
	}
	fmt.Fprintln(w)
	if len(pol.headers) == 0 {
		fmt.Fprintln(w, "Headers: none (this config adds no header fields)")
	}
	for _, f := range pol.headers {
		fmt.Fprintf(w, "%s: %s\n", f.Name, f.Value)
	}
}

// describeResult says what r means for ip and the identity, in words.
// looked tells whether a record was looked up at all: a none result comes
// either from a domain without a policy or from a name not worth asking.
func describeResult(r spf.Result, domain, ip, who string, looked bool) string {
	switch r {
	case spf.Pass:
		return fmt.Sprintf("%s allows %s to %s.", domain, ip, who)
	case spf.Fail:
		return fmt.Sprintf("%s does not allow %s to %s; a receiver may reject the message.", domain, ip, who)
	case spf.Softfail:
		return fmt.Sprintf("%s says %s is probably not allowed to %s; accept the message but treat it with suspicion.", domain, ip, who)
	case spf.Neutral:
		return fmt.Sprintf("%s says nothing about whether %s may %s.", domain, ip, who)
	case spf.None:
		if !looked {
			return fmt.Sprintf("\"%s\" is not a domain SPF can check, so SPF says nothing about %s.", domain, ip)
		}
		return fmt.Sprintf("%s publishes no SPF policy, so SPF says nothing about %s.", domain, ip)
	case spf.TempError:
		return "The check could not finish because of a temporary error (usually DNS); trying again later may succeed."
	case spf.PermError:
		return fmt.Sprintf("The SPF policy of %s could not be evaluated because it is broken; its owner must fix it.", domain)
	default:
		return "Unknown result."
	}
}

// describeDecidingTerm says which term of which record gave the result.
func describeDecidingTerm(out *spf.Outcome, ip string) string {
	where := printable(out.MechanismDomain)
	if where == "" {
		where = printable(out.Domain)
	}
	via := ""
	if out.MechanismDomain != "" && out.MechanismDomain != out.Domain {
		via = fmt.Sprintf(" (reached from %s through redirect= or include:)", printable(out.Domain))
	}
	mech := printable(out.Mechanism)
	switch {
	case out.Mechanism == "default":
		return fmt.Sprintf("no term of the record of %s matched %s%s, so the result is the default, neutral.", where, ip, via)
	case out.Mechanism != "" && (out.Result == spf.TempError || out.Result == spf.PermError):
		return fmt.Sprintf("evaluation stopped at \"%s\" in the record of %s%s.", mech, where, via)
	case out.Mechanism != "":
		return fmt.Sprintf("\"%s\" in the record of %s%s matched %s, giving %s.", mech, where, via, ip, out.Result)
	case out.Result == spf.None:
		return "no record, so no term applies."
	default:
		return "no term was reached."
	}
}

// printable shows s with every non-printable character (control
// characters, DEL, invalid UTF-8, bidirectional overrides) escaped, so
// that text from DNS cannot drive the terminal.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}
