package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/spf-milter/spf-milter/spf"
)

// Problem is one thing wrong in a config file.
type Problem struct {
	File string
	// Line is 1-based; it points at the bad value, or at the key for a
	// problem with the key itself.
	Line int
	// Key is the dotted path of the key, such as "policy.mailfrom.fail";
	// empty for a problem with the file as a whole.
	Key string
	// Value is the bad value as written (a list or mapping is shown in
	// YAML's flow form).
	Value string
	// Reason says what is wrong; Allowed what would be right, when that is
	// a closed set or a form (empty otherwise).
	Reason  string
	Allowed string

	// keyOnly marks a problem with a key (unknown, duplicate) rather than
	// with a value, so that no "bad value" is printed for it.
	keyOnly bool
}

// String formats the problem as
//
//	FILE:LINE: KEY: bad value "VALUE": REASON (allowed: X, Y, Z)
//
// A problem with a key itself (unknown or duplicate) has no value part, and
// one with the file as a whole (a YAML syntax error) has no key part.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
	}
	if p.Line > 0 {
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteByte(':')
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if p.Key != "" {
		b.WriteString(formatKey(p.Key))
		b.WriteString(": ")
	}
	if !p.keyOnly && (p.Key != "" || p.Value != "") {
		b.WriteString("bad value ")
		b.WriteString(quoteValue(p.Value))
		b.WriteString(": ")
	}
	b.WriteString(p.Reason)
	if p.Allowed != "" {
		b.WriteString(" (allowed: ")
		b.WriteString(p.Allowed)
		b.WriteByte(')')
	}
	return b.String()
}

// quoteValue quotes a value for an error line: escaped, so that a value
// holding a newline or a terminal escape cannot break the one-line-per-
// problem layout, and shortened, so that a whole pasted certificate does
// not drown the message.
func quoteValue(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "..."
	}
	return strconv.Quote(s)
}

// formatKey writes a key path as it is when it is made of plain words,
// and quoted otherwise: an unknown key is the file's text, and may hold a
// newline or be as long as a paragraph.
func formatKey(key string) string {
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return quoteValue(key)
		}
	}
	if len(key) > 80 {
		return quoteValue(key)
	}
	return key
}

// Error is every problem found in a config file. Load and Parse return it
// so that an administrator fixes them all in one round.
type Error struct {
	Problems []Problem
}

// Error returns one line per problem, in the order of the file.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Default returns the built-in configuration: what the daemon runs on when
// no config file exists, and what every key left out of a file keeps.
func Default() *Config {
	host := hostname()
	return &Config{
		Listen:     "inet:127.0.0.1:8895",
		SocketMode: 0o660,
		AuthservID: host,
		Receiver:   host,
		DNS: DNS{
			Timeout:      spf.DefaultDNSTimeout,
			CheckTimeout: spf.DefaultCheckTimeout,
			CacheSize:    spf.DefaultCacheSize,
			CacheBytes:   spf.DefaultCacheBytes,
		},
		Policy: Policy{
			MailFrom: map[spf.Result]Action{
				spf.None: Accept, spf.Neutral: Accept, spf.Pass: Accept, spf.Fail: Reject,
				spf.Softfail: Accept, spf.TempError: Tempfail, spf.PermError: Accept,
			},
			// A HELO temperror is not worth deferring mail for: the MAIL
			// FROM check, which matters more, follows.
			HELO: map[spf.Result]Action{
				spf.None: Accept, spf.Neutral: Accept, spf.Pass: Accept, spf.Fail: Reject,
				spf.Softfail: Accept, spf.TempError: Accept, spf.PermError: Accept,
			},
		},
		TrustedNetworks: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
		},
		SkipAuthenticated: true,
		Headers:           Headers{ReceivedSPF: true, AuthenticationResults: true, RemoveForged: true},
		Log:               Log{Format: "text", Level: "info"},
		Replies:           map[spf.Result]string{},
		Explanation:       spf.DefaultExplanation,
		Session: Session{
			// Longer than the MTA's own SMTP idle timeout (Postfix's
			// smtpd_timeout is 300s), so that a slow but legal SMTP client
			// never has its milter session cut first.
			IdleTimeout: 10 * time.Minute,
			MaxDuration: time.Hour,
		},
		// The why package's defaults: a person reloading the page now and
		// then, not a script.
		Why: Why{Rate: 20, Concurrent: 4, Cache: time.Minute},
		// Off unless a path is given; 5 x 100MB when it is.
		DecisionLog: DecisionLog{MaxSize: 100 * 1000 * 1000, Keep: 5},
	}
}

// hostname is the default authserv-id and receiver.
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// Load reads and validates the config file at path. A file that cannot be
// read gives ReadFile's error (errors.Is(err, fs.ErrNotExist) tells a
// missing file; ErrNotRegular and ErrTooLarge a file refused unread); a
// file with problems gives an *Error listing them all.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse validates data, the content of the config file name (used in the
// error lines only), and returns the configuration with defaults filled in.
// An empty file gives the defaults. On any problem it returns an *Error
// with every problem found.
func Parse(name string, data []byte) (*Config, error) {
	l := &loader{file: name, cfg: Default()}
	l.parse(data)
	if len(l.problems) > 0 {
		// The walk reports in document order, but a second document is
		// found before the first is walked; a stable sort keeps the
		// order of problems on one line.
		slices.SortStableFunc(l.problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
		return nil, &Error{Problems: l.problems}
	}
	return l.cfg, nil
}

// loader walks the YAML node tree into a Config, collecting problems
// instead of stopping at the first, so that one run shows them all.
type loader struct {
	file     string
	cfg      *Config
	problems []Problem

	authservGiven, receiverGiven bool
	// whyLinks are the replies that use WhyURLToken, and whyListen the
	// why.listen value: both are checked against other keys once the
	// whole file is read.
	whyLinks  []whyLink
	whyListen *yaml.Node
	// whyURLBad is set when why.url has a bad value, which is reported on
	// its own rather than again at each reply that needs it.
	whyURLBad bool
}

// whyLink is a reply template that links to the why page.
type whyLink struct {
	key string
	v   *yaml.Node
}

// valueProblem records a bad value at node n.
func (l *loader) valueProblem(n *yaml.Node, key, reason, allowed string) {
	l.problems = append(l.problems, Problem{
		File: l.file, Line: n.Line, Key: key, Value: render(n), Reason: reason, Allowed: allowed,
	})
}

// keyProblem records a problem with the key itself at node k.
func (l *loader) keyProblem(k *yaml.Node, key, reason, allowed string) {
	l.problems = append(l.problems, Problem{
		File: l.file, Line: k.Line, Key: key, Reason: reason, Allowed: allowed, keyOnly: true,
	})
}

// fileProblem records a problem with the file as a whole.
func (l *loader) fileProblem(line int, reason string) {
	l.problems = append(l.problems, Problem{File: l.file, Line: line, Reason: reason, keyOnly: true})
}

// yamlLine finds the line number in an error of the YAML parser
// ("yaml: line 3: did not find expected key").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func (l *loader) parse(data []byte) {
	if line, reason := checkText(data); reason != "" {
		// The YAML parser reports these without a line number.
		l.fileProblem(line, reason)
		return
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return // nothing but comments and blank lines: the defaults
	}
	if err != nil {
		l.syntaxProblem(data, err)
		return
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		l.fileProblem(extra.Line, "a second YAML document: the file must hold one")
	case !errors.Is(err, io.EOF):
		l.syntaxProblem(data, err)
	}
	if len(doc.Content) == 0 {
		return
	}
	root := resolve(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return // "---" alone, or "~": the defaults
	}
	l.mapping(root, "", l.topFields())
	l.checkWhy()
	// Without either, both are the host name already, from Default.
	if l.authservGiven && !l.receiverGiven {
		l.cfg.Receiver = l.cfg.AuthservID
	}
}

// syntaxProblem records an error of the YAML parser. The line the parser
// names is where the enclosing block or flow collection started, or none
// at all on the first line; the line after the longest prefix of the file
// that still parses is where the text went wrong, and that is the one
// reported.
func (l *loader) syntaxProblem(data []byte, err error) {
	msg, line := err.Error(), 1
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	budget := maxSyntaxScan
	for k, end := len(lines)-1, len(data); k >= 0 && budget >= end; k-- {
		end -= len(lines[k])
		budget -= end
		if parses(data[:end]) {
			line = k + 1
			break
		}
	}
	l.fileProblem(line, "YAML syntax error: "+msg)
}

// maxSyntaxScan bounds the bytes parsed in the search for the line of a
// syntax error, as it parses prefix after prefix: ample for any real config
// file, and no more than a moment for a hostile one, which then gets the
// parser's own line number.
const maxSyntaxScan = 4 << 20

// parses reports whether data is well-formed YAML.
func parses(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		switch err := dec.Decode(&n); {
		case errors.Is(err, io.EOF):
			return true
		case err != nil:
			return false
		}
	}
}

// checkText finds what the YAML parser refuses without saying where: bytes
// that are not UTF-8 and control characters. It returns the 1-based line
// and a reason, or "" when the text is fine.
func checkText(data []byte) (int, string) {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return line, fmt.Sprintf("byte 0x%02x is not UTF-8 (the file must be UTF-8 text)", data[i])
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || r == 0xFEFF:
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return line, fmt.Sprintf("control character %U (the file must be text)", r)
		}
		i += size
	}
	return 0, ""
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// render shows a node as it could be written on one line. It stops soon
// after the length an error line shows, so that aliases nested into a
// "billion laughs" cannot make it run for ever.
func render(n *yaml.Node) string {
	const max = 100
	var b strings.Builder
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if b.Len() > max {
			return
		}
		n = resolve(n)
		switch n.Kind {
		case yaml.SequenceNode, yaml.MappingNode:
			open, end, step := "[", "]", 1
			if n.Kind == yaml.MappingNode {
				open, end, step = "{", "}", 2
			}
			b.WriteString(open)
			for i := 0; i+step-1 < len(n.Content) && b.Len() <= max; i += step {
				if i > 0 {
					b.WriteString(", ")
				}
				walk(n.Content[i])
				if step == 2 {
					b.WriteString(": ")
					walk(n.Content[i+1])
				}
			}
			b.WriteString(end)
		default:
			if n.Tag != "!!null" {
				b.WriteString(n.Value)
			}
		}
	}
	walk(n)
	return b.String()
}

// kindName names what a node is, for a wrong-type message.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	if n.Tag == "!!null" {
		return "empty"
	}
	return "a single value"
}

// field is one key of a mapping and what to do with its value.
type field struct {
	name string
	set  func(key string, v *yaml.Node)
}

// mapping walks the mapping n at path, giving each known key's value to
// its field. A null value stands for an empty mapping, so that a section
// whose keys are all commented out keeps its defaults.
func (l *loader) mapping(n *yaml.Node, path string, fields []field) {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	allowed := strings.Join(names, ", ")
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch {
	case n.Kind != yaml.MappingNode && path == "":
		l.valueProblem(n, path, "the file must be a mapping of keys such as listen:", "")
		return
	case n.Kind != yaml.MappingNode:
		l.valueProblem(n, path, kindName(n)+", where a mapping of keys is needed", allowed)
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		name := render(k)
		key := join(path, name)
		if k.Kind != yaml.ScalarNode {
			l.keyProblem(k, key, "a key must be a single word", allowed)
			continue
		}
		if first, dup := seen[name]; dup {
			l.keyProblem(k, key, fmt.Sprintf("duplicate key (first at line %d)", first), "")
			continue
		}
		seen[name] = k.Line
		idx := slices.Index(names, name)
		if idx < 0 {
			reason := "unknown key"
			if s := suggest(name, names); s != "" {
				reason += fmt.Sprintf("; did you mean %q?", s)
			}
			l.keyProblem(k, key, reason, allowed)
			continue
		}
		fields[idx].set(key, v)
	}
}

// join makes a dotted key path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// suggest returns the known name closest to a misspelt one, if any is
// close enough to be a likely typo.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// The forms a value may take, shown after "allowed:".
const (
	allowedListen     = "inet:HOST:PORT, inet6:[HOST]:PORT, unix:/PATH, inet:PORT@HOST"
	allowedMode       = `an octal mode in quotes, "0000" to "0777"`
	allowedHost       = "a host name such as mx.example.net"
	allowedServer     = "an IP address with an optional port, such as 192.0.2.53, 192.0.2.53:53 or [2001:db8::53]:53"
	allowedDuration   = "a Go duration such as 5s or 1m30s"
	allowedBool       = "true, false"
	allowedNetwork    = "an IP network such as 192.0.2.0/24 or 2001:db8::/32, or one IP address"
	allowedActions    = "accept, reject, tempfail, quarantine"
	allowedFormats    = "text, json"
	allowedLevels     = "debug, info, warn, error"
	allowedMacro      = "text with SPF macros such as %{s}, %{i}, %{d}, %{r}, and %% for a %"
	allowedDomain     = "a domain name such as example.com"
	allowedRecipient  = "a local part such as postmaster, or an address such as abuse@example.net"
	allowedHTTPListen = `HOST:PORT with an IP address or localhost for HOST, such as 127.0.0.1:9095 or [::1]:9095; "" for no listener`
)

// allowedCacheSize is the form of dns.cache_size.
var allowedCacheSize = fmt.Sprintf("a whole number of entries from 0 (no cache) to %d", maxCacheSize)

// maxCacheSize refuses a cache_size that could only be a typo: ten
// million answers would take gigabytes.
const maxCacheSize = 10_000_000

// Bounds and form of dns.cache_bytes. Below a megabyte the cache could
// keep only the smallest answers (each may take 1/64 of the bound); past
// 64 GiB it could only be a typo.
const (
	minCacheBytes     = 1 << 20
	maxCacheBytes     = 64 << 30
	allowedCacheBytes = "a size such as 32MiB, 64MB or 1GiB, from 1MiB to 64GiB (KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024)"
)

// allowedResults lists the SPF results, the keys of a policy or replies.
var allowedResults = func() string {
	names := make([]string, len(spf.Results))
	for i, r := range spf.Results {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}()

// topFields are the keys of the file itself.
func (l *loader) topFields() []field {
	c := l.cfg
	return []field{
		{"listen", func(key string, v *yaml.Node) {
			if s, ok := l.scalar(key, v, allowedListen); ok {
				if _, _, reason := parseListen(s); reason != "" {
					l.valueProblem(v, key, reason, allowedListen)
					return
				}
				c.Listen = s
			}
		}},
		{"socket_mode", func(key string, v *yaml.Node) {
			if s, ok := l.scalar(key, v, allowedMode); ok {
				if v.Tag != "!!str" {
					l.valueProblem(v, key, "a number, where a string is needed: put the mode in quotes, as in \"0660\", so that YAML does not read it as a number", allowedMode)
					return
				}
				m, reason := parseMode(s)
				if reason != "" {
					l.valueProblem(v, key, reason, allowedMode)
					return
				}
				c.SocketMode = m
			}
		}},
		{"authserv_id", func(key string, v *yaml.Node) {
			if s, ok := l.host(key, v); ok {
				c.AuthservID, l.authservGiven = s, true
			}
		}},
		{"receiver", func(key string, v *yaml.Node) {
			if s, ok := l.host(key, v); ok {
				c.Receiver, l.receiverGiven = s, true
			}
		}},
		{"dns", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"servers", func(key string, v *yaml.Node) {
					c.DNS.Servers = parsedList(l, key, v, allowedServer, parseServer)
				}},
				{"timeout", func(key string, v *yaml.Node) { l.duration(key, v, &c.DNS.Timeout) }},
				{"check_timeout", func(key string, v *yaml.Node) { l.duration(key, v, &c.DNS.CheckTimeout) }},
				{"cache_size", func(key string, v *yaml.Node) { l.count(key, v, maxCacheSize, allowedCacheSize, &c.DNS.CacheSize) }},
				{"cache_bytes", func(key string, v *yaml.Node) {
					if s, ok := l.scalar(key, v, allowedCacheBytes); ok {
						n, reason := parseSizeIn(s, minCacheBytes, maxCacheBytes)
						if reason != "" {
							l.valueProblem(v, key, reason, allowedCacheBytes)
							return
						}
						c.DNS.CacheBytes = n
					}
				}},
			})
		}},
		{"policy", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"mailfrom", func(key string, v *yaml.Node) { l.policy(key, v, c.Policy.MailFrom) }},
				{"helo", func(key string, v *yaml.Node) { l.policy(key, v, c.Policy.HELO) }},
			})
		}},
		{"trusted_networks", func(key string, v *yaml.Node) { l.networks(key, v, &c.TrustedNetworks) }},
		{"skip_authenticated", func(key string, v *yaml.Node) { l.bool(key, v, &c.SkipAuthenticated) }},
		{"dry_run", func(key string, v *yaml.Node) { l.bool(key, v, &c.DryRun) }},
		{"headers", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"received_spf", func(key string, v *yaml.Node) { l.bool(key, v, &c.Headers.ReceivedSPF) }},
				{"authentication_results", func(key string, v *yaml.Node) { l.bool(key, v, &c.Headers.AuthenticationResults) }},
				{"remove_forged", func(key string, v *yaml.Node) { l.bool(key, v, &c.Headers.RemoveForged) }},
			})
		}},
		{"log", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"format", func(key string, v *yaml.Node) { l.oneOf(key, v, allowedFormats, &c.Log.Format) }},
				{"level", func(key string, v *yaml.Node) { l.oneOf(key, v, allowedLevels, &c.Log.Level) }},
			})
		}},
		{"explanation", func(key string, v *yaml.Node) {
			if s, ok := l.macro(key, v); ok {
				c.Explanation = s
			}
		}},
		{"replies", func(key string, v *yaml.Node) {
			l.mapping(v, key, resultFields(func(r spf.Result, key string, v *yaml.Node) {
				if s, ok := l.macro(key, v); ok {
					c.Replies[r] = s
					if strings.Contains(s, WhyURLToken) {
						l.whyLinks = append(l.whyLinks, whyLink{key, v})
					}
				}
			}))
		}},
		{"skip_senders", func(key string, v *yaml.Node) {
			c.SkipSenders = parsedList(l, key, v, allowedDomain, parseDomain)
		}},
		{"skip_clients", func(key string, v *yaml.Node) { l.networks(key, v, &c.SkipClients) }},
		{"never_refuse", func(key string, v *yaml.Node) {
			c.NeverRefuse = parsedList(l, key, v, allowedRecipient, func(s string) (string, string) {
				return s, checkRecipient(s)
			})
		}},
		{"session", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"idle_timeout", func(key string, v *yaml.Node) { l.duration(key, v, &c.Session.IdleTimeout) }},
				{"max_duration", func(key string, v *yaml.Node) { l.duration(key, v, &c.Session.MaxDuration) }},
			})
		}},
		{"metrics", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"listen", func(key string, v *yaml.Node) {
					if addr, ok := l.httpListen(key, v); ok {
						c.Metrics.Listen = addr
					}
				}},
			})
		}},
		{"why", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"listen", func(key string, v *yaml.Node) {
					if addr, ok := l.httpListen(key, v); ok {
						c.Why.Listen, l.whyListen = addr, v
					}
				}},
				{"url", func(key string, v *yaml.Node) {
					l.whyURLBad = true
					if s, ok := l.scalar(key, v, allowedWhyURL); ok {
						if reason := checkWhyURL(s); reason != "" {
							l.valueProblem(v, key, reason, allowedWhyURL)
							return
						}
						c.Why.URL, l.whyURLBad = s, false
					}
				}},
				{"rate", func(key string, v *yaml.Node) { l.positive(key, v, maxWhyRate, allowedWhyRate, &c.Why.Rate) }},
				{"concurrent", func(key string, v *yaml.Node) {
					l.positive(key, v, maxWhyConcurrent, allowedWhyConcurrent, &c.Why.Concurrent)
				}},
				{"cache", func(key string, v *yaml.Node) { l.whyCache(key, v, &c.Why.Cache) }},
			})
		}},
		{"decision_log", func(key string, v *yaml.Node) {
			l.mapping(v, key, []field{
				{"path", func(key string, v *yaml.Node) {
					if s, ok := l.scalar(key, v, allowedLogPath); ok {
						if reason := checkLogPath(s); reason != "" {
							l.valueProblem(v, key, reason, allowedLogPath)
							return
						}
						c.DecisionLog.Path = s
					}
				}},
				{"max_size", func(key string, v *yaml.Node) {
					if s, ok := l.scalar(key, v, allowedLogSize); ok {
						n, reason := parseSize(s)
						if reason != "" {
							l.valueProblem(v, key, reason, allowedLogSize)
							return
						}
						c.DecisionLog.MaxSize = n
					}
				}},
				{"keep", func(key string, v *yaml.Node) { l.count(key, v, maxLogKeep, allowedLogKeep, &c.DecisionLog.Keep) }},
			})
		}},
	}
}

// WhyURLToken in a reply template stands for the link to the why page
// (why.url with the sender, IP and HELO of the message). It is not an SPF
// macro, which are single letters, so that it cannot clash with one; a
// template that uses it needs why.url.
const WhyURLToken = "{why_url}"

// Bounds of the why section: beyond them a value can only be a typo.
const (
	maxWhyRate       = 10000
	maxWhyConcurrent = 1000
	maxWhyCache      = time.Hour
)

var (
	allowedWhyURL        = "an absolute http or https URL without query or fragment, such as https://mx.example.net/why; \"\" for no link"
	allowedWhyRate       = fmt.Sprintf("a whole number of requests a minute per client, from 1 to %d", maxWhyRate)
	allowedWhyConcurrent = fmt.Sprintf("a whole number of checks, from 1 to %d", maxWhyConcurrent)
	allowedWhyCache      = "a Go duration such as 30s or 5m, at most 1h; 0 for no cache"
)

// positive reads a whole number from 1 to max.
func (l *loader) positive(key string, v *yaml.Node, max int, allowed string, dst *int) {
	n := -1
	l.count(key, v, max, allowed, &n)
	switch {
	case n == 0:
		l.valueProblem(v, key, "must be at least 1", allowed)
	case n > 0:
		*dst = n
	}
}

// whyCache reads why.cache: a duration from 0 (no cache) to an hour, a
// longer one would show an answer long after the record was fixed.
func (l *loader) whyCache(key string, v *yaml.Node, dst *time.Duration) {
	s, ok := l.scalar(key, v, allowedWhyCache)
	if !ok {
		return
	}
	if s == "0" {
		*dst = 0
		return
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil && v.Tag == "!!int":
		l.valueProblem(v, key, "a number needs a unit", allowedWhyCache)
	case err != nil:
		l.valueProblem(v, key, "not a duration", allowedWhyCache)
	case d < 0:
		l.valueProblem(v, key, "must not be negative", allowedWhyCache)
	case d > maxWhyCache:
		l.valueProblem(v, key, "more than 1h", allowedWhyCache)
	default:
		*dst = d
	}
}

// checkWhy checks the why keys against the rest of the file: a link in a
// reply needs why.url, and the page's own listener cannot be the metrics
// one (leaving why.listen empty shares it).
func (l *loader) checkWhy() {
	c := l.cfg
	if c.Why.URL == "" && !l.whyURLBad {
		for _, w := range l.whyLinks {
			l.valueProblem(w.v, w.key, WhyURLToken+" needs why.url, the address of the page", "")
		}
	}
	if l.whyListen != nil && c.Why.Listen != "" && sameHTTPListen(c.Why.Listen, c.Metrics.Listen) {
		l.valueProblem(l.whyListen, "why.listen", "the same as metrics.listen; leave why.listen empty to serve the page there", allowedHTTPListen)
	}
}

// sameHTTPListen reports whether two listen addresses would bind the same
// port (port 0 is a new port each time).
func sameHTTPListen(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && a == b && pa != "0" && pb != "0"
}

// checkWhyURL says what is wrong with why.url, or "". The URL goes into
// SMTP replies, so it must be printable ASCII (a non-ASCII host in its
// xn-- form); the page's parameters are appended as its query.
func checkWhyURL(s string) string {
	if s == "" {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return "spaces, control characters and non-ASCII characters are not allowed (write a non-ASCII host name in its xn-- form)"
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "not an http or https URL"
	case u.Host == "" || u.Hostname() == "":
		return "no host"
	case u.User != nil:
		return "a user name or password is not allowed"
	case u.RawQuery != "" || u.ForceQuery:
		return "a query is not allowed: the page's parameters are appended as the query"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "a fragment (#) is not allowed"
	}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		if reason := checkHostname(u.Hostname()); reason != "" {
			return "bad host: " + reason
		}
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Sprintf("port %s is out of range (1 to 65535)", p)
		}
	}
	return ""
}

// resultFields makes one field per SPF result, in RFC order.
func resultFields(set func(r spf.Result, key string, v *yaml.Node)) []field {
	fields := make([]field, len(spf.Results))
	for i, r := range spf.Results {
		fields[i] = field{string(r), func(key string, v *yaml.Node) { set(r, key, v) }}
	}
	return fields
}

// policy reads one identity's result-to-action mapping into m, which
// holds the defaults: a result left out keeps its default action.
func (l *loader) policy(key string, v *yaml.Node, m map[spf.Result]Action) {
	l.mapping(v, key, resultFields(func(r spf.Result, key string, v *yaml.Node) {
		var s string
		if l.oneOf(key, v, allowedActions, &s) {
			m[r] = Action(s)
		}
	}))
}

// scalar returns the text of a single value. YAML's own types do not
// matter here (a port written 8895 is text like any other); each key's
// parser says what the text may be.
// httpListen reads the HOST:PORT of an HTTP listener (metrics.listen,
// why.listen), normalised; ok is false after a problem was recorded.
func (l *loader) httpListen(key string, v *yaml.Node) (addr string, ok bool) {
	s, ok := l.scalar(key, v, allowedHTTPListen)
	if !ok {
		return "", false
	}
	addr, reason := parseHTTPListen(s)
	if reason != "" {
		l.valueProblem(v, key, reason, allowedHTTPListen)
		return "", false
	}
	return addr, true
}

func (l *loader) scalar(key string, v *yaml.Node, allowed string) (string, bool) {
	if v.Kind != yaml.ScalarNode {
		l.valueProblem(v, key, kindName(v)+", where a single value is needed", allowed)
		return "", false
	}
	if v.Tag == "!!null" {
		l.valueProblem(v, key, "empty; leave the key out to keep its default", allowed)
		return "", false
	}
	return v.Value, true
}

// list walks a list, giving each item to each. A null value is an empty
// list.
func (l *loader) list(key string, v *yaml.Node, allowed string, each func(item *yaml.Node)) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return
	}
	if v.Kind != yaml.SequenceNode {
		l.valueProblem(v, key, kindName(v)+", where a list is needed (write [] for none)", "a list, each item "+allowed)
		return
	}
	for _, item := range v.Content {
		each(resolve(item))
	}
}

// bool reads true or false: only YAML's own booleans, so that a "yes"
// (a string in YAML 1.2) is not silently taken for one.
func (l *loader) bool(key string, v *yaml.Node, dst *bool) {
	if _, ok := l.scalar(key, v, allowedBool); !ok {
		return
	}
	if v.Tag != "!!bool" {
		l.valueProblem(v, key, "not a boolean", allowedBool)
		return
	}
	*dst = strings.ToLower(v.Value) == "true"
}

// duration reads a positive Go duration.
func (l *loader) duration(key string, v *yaml.Node, dst *time.Duration) {
	s, ok := l.scalar(key, v, allowedDuration)
	if !ok {
		return
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil && v.Tag == "!!int":
		l.valueProblem(v, key, "a number needs a unit", allowedDuration)
	case err != nil:
		l.valueProblem(v, key, "not a duration", allowedDuration)
	case d <= 0:
		l.valueProblem(v, key, "must be more than zero", allowedDuration)
	default:
		*dst = d
	}
}

// count reads a whole number from 0 to max. Only plain decimal digits are
// taken: YAML would also read 0x10 or 1e4 as numbers, which nobody means
// for a count of entries.
func (l *loader) count(key string, v *yaml.Node, max int, allowed string, dst *int) {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return
	}
	digits := strings.TrimPrefix(s, "-")
	if !isDigits(digits) {
		l.valueProblem(v, key, "not a whole number", allowed)
		return
	}
	n, err := strconv.Atoi(digits)
	switch {
	case digits != s && (err != nil || n != 0):
		l.valueProblem(v, key, "must not be negative", allowed)
	case err != nil || n > max:
		l.valueProblem(v, key, fmt.Sprintf("more than %d", max), allowed)
	default:
		*dst = n
	}
}

// oneOf reads a value of a closed set, given as allowed.
func (l *loader) oneOf(key string, v *yaml.Node, allowed string, dst *string) bool {
	s, ok := l.scalar(key, v, allowed)
	if !ok {
		return false
	}
	if !slices.Contains(strings.Split(allowed, ", "), s) {
		l.valueProblem(v, key, "unknown value", allowed)
		return false
	}
	*dst = s
	return true
}

// host reads a host name (authserv_id, receiver).
func (l *loader) host(key string, v *yaml.Node) (string, bool) {
	s, ok := l.scalar(key, v, allowedHost)
	if !ok {
		return "", false
	}
	if reason := checkHostname(s); reason != "" {
		l.valueProblem(v, key, reason, allowedHost)
		return "", false
	}
	return s, true
}

// macro reads an explain-string (RFC 7208 §6.2): the same syntax as an
// exp= text, and the same checks, so that a reply template fails here
// rather than when a message is refused.
func (l *loader) macro(key string, v *yaml.Node) (string, bool) {
	s, ok := l.scalar(key, v, allowedMacro)
	if !ok {
		return "", false
	}
	if s == "" {
		l.valueProblem(v, key, "empty; leave the key out to keep its default", allowedMacro)
		return "", false
	}
	if _, err := spf.ParseMacroString(s, true); err != nil {
		l.valueProblem(v, key, err.Error(), allowedMacro)
		return "", false
	}
	return s, true
}

// networks reads a list of IP networks into dst.
func (l *loader) networks(key string, v *yaml.Node, dst *[]netip.Prefix) {
	*dst = parsedList(l, key, v, allowedNetwork, parseNetwork)
}

// parsedList reads a list of scalars, each turned into a T by parse, which
// returns a reason when the value is bad; every bad item is a problem of
// its own, with its line.
func parsedList[T any](l *loader, key string, v *yaml.Node, allowed string, parse func(string) (T, string)) []T {
	var out []T
	l.list(key, v, allowed, func(item *yaml.Node) {
		if s, ok := l.scalar(key, item, allowed); ok {
			x, reason := parse(s)
			if reason != "" {
				l.valueProblem(item, key, reason, allowed)
				return
			}
			out = append(out, x)
		}
	})
	return out
}

// Bounds and forms of the decision_log keys.
const (
	minLogSize     = 1000
	maxLogSize     = 1000 * 1000 * 1000 * 1000
	maxLogKeep     = 1000
	allowedLogPath = `an absolute file path such as /var/log/spf-milter/decisions.jsonl; "" for no decision log`
	allowedLogSize = "a size such as 100MB, 512KiB or 2GB, from 1KB to 1TB (KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024)"
)

// allowedLogKeep is the form of decision_log.keep.
var allowedLogKeep = fmt.Sprintf("a whole number of rotated files from 0 (none) to %d", maxLogKeep)

// sizeUnits are the units of a size, in the order formatSize tries them.
var sizeUnits = []struct {
	name string
	n    int64
}{
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"B", 1},
}

// parseSize reads a decision log size: a whole number with an optional
// unit (any case, a space allowed before it), bytes without one, from
// 1KB to 1TB.
func parseSize(s string) (int64, string) {
	return parseSizeIn(s, minLogSize, maxLogSize)
}

// parseSizeIn reads a size as parseSize does, from minSize to maxSize.
func parseSizeIn(s string, minSize, maxSize int64) (int64, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	digits, unit := s[:i], strings.TrimPrefix(s[i:], " ")
	if digits == "" {
		return 0, "not a whole number with a unit"
	}
	mult := int64(0)
	if unit == "" {
		mult = 1
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.n
		}
	}
	if mult == 0 {
		return 0, fmt.Sprintf("unknown unit %q", unit)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	switch {
	case err != nil || n > maxSize/mult:
		return 0, "more than " + formatSize(maxSize)
	case n*mult < minSize:
		return 0, "less than " + formatSize(minSize)
	}
	return n * mult, ""
}

// formatSize writes a size in the largest unit that divides it, as
// parseSize reads it.
func formatSize(n int64) string {
	for _, u := range sizeUnits {
		if n >= u.n && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// checkLogPath says what is wrong with a decision log path, or "".
func checkLogPath(s string) string {
	switch {
	case s == "":
		return ""
	case strings.ContainsRune(s, 0):
		return "a NUL byte in the path"
	case !strings.HasPrefix(s, "/"):
		return "the path must be absolute"
	case strings.HasSuffix(s, "/"):
		return "the path names a directory; name the file"
	}
	return ""
}
