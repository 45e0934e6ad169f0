package spf_test

// This file drives the official openspf.org RFC 7208 test suite (release
// 2014.04, kept in the pyspf repository as test/rfc7208-tests.yml) against
// the Checker. Every scenario's zone is served by a real DNS server on
// 127.0.0.1, so the suite exercises the real resolver as well as the
// evaluator; the whole suite then runs again over DNS through the
// resolver's cache (with and without Checker.Sequential), and through the
// in-memory MapResolver, and every run must agree with the first.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

const (
	// suiteFileName is the suite's name in the pyspf repository.
	suiteFileName = "rfc7208-tests.yml"
	// suiteScenarios and suiteTests are the size of release 2014.04: a
	// different count means a different file, or a parser that lost tests.
	suiteScenarios = 16
	suiteTests     = 203
	// suiteReceiver is our %{r}. The suite only uses %{r} where it must
	// cause a permerror, so its value is not compared anywhere.
	suiteReceiver = "receiver.example.net"
	// suiteQueryTimeout is short because TIMEOUT names never answer: every
	// test that meets one waits for it.
	suiteQueryTimeout = 300 * time.Millisecond
	// suiteCheckTimeout bounds a whole check, far above what a test with a
	// few unanswered queries needs.
	suiteCheckTimeout = 5 * time.Second
)

// suiteScenario is one YAML document of the suite: tests sharing a zone.
type suiteScenario struct {
	Description string
	Comment     string
	Tests       []suiteCase
	Zone        []zoneName
}

// suiteCase is one test of a scenario.
type suiteCase struct {
	Name        string
	Description string
	Comment     string
	Spec        string
	Helo        string
	Host        string
	MailFrom    string
	// Results lists every acceptable result, the preferred one first.
	Results []spf.Result
	// Explanation is the expected explanation of a fail result when
	// HasExplanation is set; "DEFAULT" stands for the checker's own.
	Explanation    string
	HasExplanation bool
}

// zoneName is the data published at one owner name, in the suite's order.
type zoneName struct {
	Name    string // lowercased, raw bytes
	Entries []zoneEntry
}

// zoneEntry is one item of a name's list in zonedata.
type zoneEntry struct {
	// Type is SPF, TXT, A, AAAA, MX, PTR, CNAME or TIMEOUT.
	Type string
	// None marks "TXT: NONE": no TXT here, and SPF is not copied to TXT.
	None bool
	// Values are the character-strings of an SPF or TXT record, the
	// preference and host of an MX, or the single value of the others.
	Values []string
}

// Zone entry types the suite uses. TIMEOUT is not a record type but a bare
// list item.
var zoneEntryTypes = []string{"SPF", "TXT", "A", "AAAA", "MX", "PTR", "CNAME"}

// Keys a test may have. "strict" only tunes pyspf's own strictness (one
// test sets it); RFC 7208 has no such knob, so it is read and ignored.
var suiteCaseKeys = []string{"description", "comment", "spec", "helo", "host", "mailfrom", "result", "explanation", "strict"}

// findSuite returns the path of the suite file: $SPF_TESTSUITE (the file or
// the directory holding it), or shared/spf-testsuite/ in the package
// directory or any directory above it. It returns "" when there is none.
func findSuite() (string, error) {
	if env := os.Getenv("SPF_TESTSUITE"); env != "" {
		fi, err := os.Stat(env)
		if err != nil {
			return "", fmt.Errorf("SPF_TESTSUITE: %w", err)
		}
		if fi.IsDir() {
			env = filepath.Join(env, suiteFileName)
			if _, err := os.Stat(env); err != nil {
				return "", fmt.Errorf("SPF_TESTSUITE: %w", err)
			}
		}
		return env, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "shared", "spf-testsuite", suiteFileName)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", nil
		}
		dir = parent
	}
}

// loadSuite reads the suite or ends the test: a missing suite is fatal in
// CI, where it must have been provided, and a skip elsewhere.
func loadSuite(t *testing.T) []suiteScenario {
	t.Helper()
	path, err := findSuite()
	if err != nil {
		t.Fatal(err)
	}
	if path == "" {
		msg := "RFC 7208 test suite not found: get test/" + suiteFileName +
			" from the pyspf repository (github.com/sdgathman/pyspf) and set SPF_TESTSUITE to it, or put it in shared/spf-testsuite/ above the repository"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	scenarios, err := parseSuite(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	n := 0
	for _, sc := range scenarios {
		n += len(sc.Tests)
	}
	if len(scenarios) != suiteScenarios || n != suiteTests {
		t.Fatalf("%s: %d scenarios with %d tests, want %d with %d (release 2014.04)", path, len(scenarios), n, suiteScenarios, suiteTests)
	}
	return scenarios
}

// parseSuite reads every YAML document of the suite.
func parseSuite(r io.Reader) ([]suiteScenario, error) {
	dec := yaml.NewDecoder(r)
	var out []suiteScenario
	seen := map[string]bool{}
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(doc.Content) == 0 {
			continue // a document of comments only
		}
		sc, err := parseScenario(doc.Content[0])
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(out)+1, err)
		}
		if seen[sc.Description] {
			return nil, fmt.Errorf("line %d: scenario %q appears twice", doc.Line, sc.Description)
		}
		seen[sc.Description] = true
		out = append(out, sc)
	}
	return out, nil
}

func parseScenario(n *yaml.Node) (suiteScenario, error) {
	var sc suiteScenario
	if n.Kind != yaml.MappingNode {
		return sc, fmt.Errorf("line %d: scenario is not a mapping", n.Line)
	}
	var haveTests, haveZone bool
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "description":
			sc.Description, err = scalar(v)
		case "comment":
			sc.Comment, err = scalar(v)
		case "tests":
			haveTests = true
			sc.Tests, err = parseCases(v)
		case "zonedata":
			haveZone = true
			sc.Zone, err = parseZone(v)
		default:
			err = fmt.Errorf("line %d: unknown scenario key %q", k.Line, k.Value)
		}
		if err != nil {
			return sc, err
		}
	}
	if sc.Description == "" || !haveTests || !haveZone {
		return sc, fmt.Errorf("line %d: scenario needs description, tests and zonedata", n.Line)
	}
	return sc, nil
}

func parseCases(n *yaml.Node) ([]suiteCase, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: tests is not a mapping", n.Line)
	}
	var out []suiteCase
	seen := map[string]bool{}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return nil, fmt.Errorf("line %d: test %q appears twice", k.Line, k.Value)
		}
		seen[k.Value] = true
		tc, err := parseCase(k.Value, v)
		if err != nil {
			return nil, fmt.Errorf("test %s: %w", k.Value, err)
		}
		out = append(out, tc)
	}
	return out, nil
}

func parseCase(name string, n *yaml.Node) (suiteCase, error) {
	tc := suiteCase{Name: name}
	if n.Kind != yaml.MappingNode {
		return tc, fmt.Errorf("line %d: not a mapping", n.Line)
	}
	have := map[string]bool{}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !slices.Contains(suiteCaseKeys, k.Value) {
			return tc, fmt.Errorf("line %d: unknown key %q", k.Line, k.Value)
		}
		have[k.Value] = true
		var err error
		switch k.Value {
		case "description":
			tc.Description, err = scalar(v)
		case "comment":
			tc.Comment, err = scalar(v)
		case "spec":
			tc.Spec, err = scalarOrList(v)
		case "helo":
			tc.Helo, err = scalar(v)
		case "host":
			tc.Host, err = scalar(v)
		case "mailfrom":
			tc.MailFrom, err = scalar(v)
		case "explanation":
			tc.HasExplanation = true
			tc.Explanation, err = scalar(v)
		case "result":
			tc.Results, err = parseResults(v)
		}
		if err != nil {
			return tc, err
		}
	}
	for _, k := range []string{"helo", "host", "mailfrom", "result"} {
		if !have[k] {
			return tc, fmt.Errorf("line %d: no %s", n.Line, k)
		}
	}
	return tc, nil
}

func parseResults(n *yaml.Node) ([]spf.Result, error) {
	var words []string
	switch n.Kind {
	case yaml.ScalarNode:
		words = []string{n.Value}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			s, err := scalar(c)
			if err != nil {
				return nil, err
			}
			words = append(words, s)
		}
	default:
		return nil, fmt.Errorf("line %d: result is neither a word nor a list", n.Line)
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("line %d: empty result list", n.Line)
	}
	var out []spf.Result
	for _, w := range words {
		r, err := spf.ParseResult(w)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// parseZone reads zonedata, refusing anything this driver would not serve
// faithfully.
func parseZone(n *yaml.Node) ([]zoneName, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: zonedata is not a mapping", n.Line)
	}
	var out []zoneName
	seen := map[string]bool{}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name, err := scalar(k)
		if err != nil {
			return nil, err
		}
		name = strings.ToLower(name)
		if seen[name] {
			return nil, fmt.Errorf("line %d: zone name %q appears twice", k.Line, name)
		}
		seen[name] = true
		if v.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("line %d: entries of %q are not a list", v.Line, name)
		}
		zn := zoneName{Name: name}
		var hasTXT, hasNone bool
		for j, c := range v.Content {
			e, err := parseEntry(c)
			if err != nil {
				return nil, fmt.Errorf("zone name %q: %w", name, err)
			}
			// dnstest's Timeout covers every type not answered at the name,
			// which is the suite's meaning only when TIMEOUT comes last.
			if e.Type == "TIMEOUT" && j != len(v.Content)-1 {
				return nil, fmt.Errorf("line %d: TIMEOUT before other entries of %q", c.Line, name)
			}
			if e.Type == "TXT" {
				hasNone = hasNone || e.None
				if !e.None {
					hasTXT = true
				}
			}
			zn.Entries = append(zn.Entries, e)
		}
		if hasNone && hasTXT {
			return nil, fmt.Errorf("line %d: %q has both TXT records and TXT: NONE", v.Line, name)
		}
		out = append(out, zn)
	}
	return out, nil
}

func parseEntry(n *yaml.Node) (zoneEntry, error) {
	if n.Kind == yaml.ScalarNode {
		if n.Value == "TIMEOUT" {
			return zoneEntry{Type: "TIMEOUT"}, nil
		}
		return zoneEntry{}, fmt.Errorf("line %d: unknown zone entry %q", n.Line, n.Value)
	}
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return zoneEntry{}, fmt.Errorf("line %d: zone entry is not a one-key mapping", n.Line)
	}
	k, v := n.Content[0], n.Content[1]
	e := zoneEntry{Type: k.Value}
	if !slices.Contains(zoneEntryTypes, e.Type) {
		return e, fmt.Errorf("line %d: unknown zone entry type %q", k.Line, k.Value)
	}
	switch v.Kind {
	case yaml.ScalarNode:
		s, err := scalar(v)
		if err != nil {
			return e, err
		}
		if e.Type == "TXT" && s == "NONE" && v.Style == 0 {
			e.None = true
			return e, nil
		}
		e.Values = []string{s}
	case yaml.SequenceNode:
		// An empty list is a TXT record with no character-strings at all.
		e.Values = []string{}
		for _, c := range v.Content {
			s, err := scalar(c)
			if err != nil {
				return e, err
			}
			e.Values = append(e.Values, s)
		}
	default:
		return e, fmt.Errorf("line %d: %s value is neither a scalar nor a list", v.Line, e.Type)
	}
	want := 1
	switch e.Type {
	case "SPF", "TXT":
		want = -1
	case "MX":
		want = 2
	}
	if want >= 0 && len(e.Values) != want {
		return e, fmt.Errorf("line %d: %s needs %d value(s), has %d", v.Line, e.Type, want, len(e.Values))
	}
	return e, nil
}

func scalar(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("line %d: want a scalar", n.Line)
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return rawBytes(n.Value), nil
}

func scalarOrList(n *yaml.Node) (string, error) {
	if n.Kind != yaml.SequenceNode {
		return scalar(n)
	}
	var parts []string
	for _, c := range n.Content {
		s, err := scalar(c)
		if err != nil {
			return "", err
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", "), nil
}

// rawBytes undoes YAML's reading of "\xEF" as the code point U+00EF: the
// suite means the byte 0xEF, so a string made only of code points up to
// U+00FF becomes those bytes. The suite has no literal non-ASCII text, so
// nothing else is in the way; a string with a higher code point is left as
// UTF-8.
func rawBytes(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return s
		}
		b = append(b, byte(r))
	}
	return string(b)
}

// presentName writes a raw domain name in the presentation form that
// miekg/dns packs, so that names with spaces or other odd octets (the suite
// has "macro%percent  space%20url-space.example.com") keep their bytes.
func presentName(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '.':
			b.WriteByte(c)
		case c <= ' ' || c > '~' || strings.IndexByte(`"();@\`, c) >= 0:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return dns.Fqdn(b.String())
}

// buildZone serves a scenario's zonedata the way pyspf's driver does (see
// SOURCE.md beside the suite): SPF entries are published as TXT too unless
// the name has TXT entries of its own or says "TXT: NONE", and as type SPF
// (99) as well, which no RFC 7208 checker may ask for.
func buildZone(names []zoneName) (*dnstest.Zone, error) {
	z := dnstest.NewZone()
	for _, zn := range names {
		owner := presentName(zn.Name)
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: 300}
		}
		ownTXT := slices.ContainsFunc(zn.Entries, func(e zoneEntry) bool { return e.Type == "TXT" })
		for _, e := range zn.Entries {
			switch e.Type {
			case "TIMEOUT":
				z.Timeout(owner)
			case "SPF":
				if err := checkStrings(e.Values); err != nil {
					return nil, fmt.Errorf("%s SPF: %w", zn.Name, err)
				}
				z.AddSPF(owner, e.Values...)
				if !ownTXT {
					z.AddTXT(owner, e.Values...)
				}
			case "TXT":
				if e.None {
					continue
				}
				if err := checkStrings(e.Values); err != nil {
					return nil, fmt.Errorf("%s TXT: %w", zn.Name, err)
				}
				z.AddTXT(owner, e.Values...)
			case "A", "AAAA":
				ip, err := netip.ParseAddr(e.Values[0])
				if err != nil || ip.Zone() != "" || ip.Is4() != (e.Type == "A") {
					return nil, fmt.Errorf("%s %s: bad address %q", zn.Name, e.Type, e.Values[0])
				}
				if ip.Is4() {
					z.AddRR(&dns.A{Hdr: hdr(dns.TypeA), A: net.IP(ip.AsSlice())})
				} else {
					z.AddRR(&dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.IP(ip.AsSlice())})
				}
			case "MX":
				var pref uint16
				if _, err := fmt.Sscan(e.Values[0], &pref); err != nil {
					return nil, fmt.Errorf("%s MX: bad preference %q", zn.Name, e.Values[0])
				}
				z.AddRR(&dns.MX{Hdr: hdr(dns.TypeMX), Preference: pref, Mx: presentName(e.Values[1])})
			case "PTR":
				z.AddRR(&dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: presentName(e.Values[0])})
			case "CNAME":
				z.AddRR(&dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: presentName(e.Values[0])})
			default:
				return nil, fmt.Errorf("%s: unknown entry type %s", zn.Name, e.Type)
			}
		}
	}
	return z, nil
}

// checkStrings rejects what a TXT character-string cannot hold, so that a
// bad suite file is reported rather than a panic in dnstest.
func checkStrings(strs []string) error {
	for _, s := range strs {
		if len(s) > 255 {
			return fmt.Errorf("character-string of %d octets", len(s))
		}
	}
	return nil
}

// suiteRun collects the outcomes of one run of the suite.
type suiteRun struct {
	mu       sync.Mutex
	outcomes map[string]*spf.Outcome // by scenario/test
	skipped  []string
}

func (r *suiteRun) record(key string, o *spf.Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outcomes[key] = o
}

func (r *suiteRun) skip(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skipped = append(r.skipped, key)
}

// resolverFactory gives the resolver a scenario's tests use; z is built
// from sc.Zone.
type resolverFactory func(t *testing.T, sc suiteScenario, z *dnstest.Zone) spf.Resolver

// suiteOptions says how a run of the suite checks.
type suiteOptions struct {
	// sequential is Checker.Sequential.
	sequential bool
	// twice checks every test a second time with the same checker, and
	// requires the second check to decide as the first.
	twice bool
}

// suiteSOA is put at the root of every zone served over DNS, so that every
// negative answer carries a SOA, as a real server's do, and the cache
// keeps it (RFC 2308).
const suiteSOA = ". 300 SOA ns.example. hostmaster.example. 1 7200 3600 1209600 300"

// serveSuiteZone starts a DNS server for a scenario's zone and checks, once
// every test of the scenario is done, that the checker asked it something
// and never asked for type SPF. It returns the server.
func serveSuiteZone(t *testing.T, z *dnstest.Zone) *dnstest.Server {
	t.Helper()
	if err := z.Add(suiteSOA); err != nil {
		t.Fatal(err)
	}
	srv := dnstest.StartServer(t, z)
	// Registered after StartServer's own cleanup, so it runs first,
	// once every parallel test of the scenario is done.
	t.Cleanup(func() {
		qs := srv.Queries()
		// Every scenario has tests that need DNS: silence means the
		// resolver asked someone else.
		if len(qs) == 0 && !subtestsFiltered() {
			t.Error("no query reached the test server")
		}
		for _, q := range qs {
			if q.Type == dns.TypeSPF {
				t.Errorf("the checker asked for type SPF (99) at %s over %s; RFC 7208 §3.1 forbids it", q.Name, q.Net)
			}
		}
	})
	return srv
}

// suiteResolver returns a resolver asking srv, with a cache of cacheSize
// entries and an observer if one is given.
func suiteResolver(t *testing.T, srv *dnstest.Server, cacheSize int, obs spf.DNSObserver) *spf.DNSResolver {
	t.Helper()
	r, err := spf.NewDNSResolver(spf.DNSOptions{
		Servers:   []string{srv.Addr()},
		Timeout:   suiteQueryTimeout,
		CacheSize: cacheSize,
		Observer:  obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// timeoutNames returns the names of a scenario's zone that leave some
// queries unanswered, keyed as dnsname compares them.
func timeoutNames(names []zoneName) map[string]bool {
	out := map[string]bool{}
	for _, zn := range names {
		if slices.ContainsFunc(zn.Entries, func(e zoneEntry) bool { return e.Type == "TIMEOUT" }) {
			out[strings.ToLower(presentName(zn.Name))] = true
		}
	}
	return out
}

// TestRFC7208Suite runs the suite over DNS on loopback; then over DNS
// through the resolver's cache, every test twice, with sequential and with
// concurrent lookups; then through the in-memory resolver. Every run must
// be complete and agree with the first.
func TestRFC7208Suite(t *testing.T) {
	scenarios := loadSuite(t)

	overDNS := runSuite(t, "dns", scenarios, nil, suiteOptions{}, func(t *testing.T, sc suiteScenario, z *dnstest.Zone) spf.Resolver {
		return suiteResolver(t, serveSuiteZone(t, z), 0, nil)
	})
	checkComplete(t, "dns", overDNS)

	// A fresh resolver, and so a fresh cache, for each scenario: the
	// scenarios publish different data at the same names.
	//
	// Without concurrent lookups no query is ever abandoned, so each
	// question reaches the server once in the whole scenario, whichever
	// tests ask it and however often: the rest comes from the cache or
	// from the query in flight. Only unanswered queries are asked again.
	cachedSeq := runSuite(t, "dns-cached-sequential", scenarios, overDNS, suiteOptions{sequential: true, twice: true},
		func(t *testing.T, sc suiteScenario, z *dnstest.Zone) spf.Resolver {
			srv := serveSuiteZone(t, z)
			timeouts := timeoutNames(sc.Zone)
			t.Cleanup(func() {
				type question struct {
					name  string
					qtype uint16
					net   string
				}
				seen := map[question]int{}
				for _, q := range srv.Queries() {
					if timeouts[strings.ToLower(q.Name)] {
						continue
					}
					k := question{strings.ToLower(q.Name), q.Type, q.Net}
					seen[k]++
					if seen[k] == 2 {
						t.Errorf("%s %s asked again over %s: the answer was not taken from the cache", q.Name, dns.TypeToString[q.Type], q.Net)
					}
				}
			})
			return suiteResolver(t, srv, 1000, nil)
		})
	checkComplete(t, "dns-cached-sequential", cachedSeq)

	// Concurrent lookups may abandon queries they turn out not to need,
	// and those are asked again: the cache is only required to be used.
	cachedConc := runSuite(t, "dns-cached-concurrent", scenarios, overDNS, suiteOptions{twice: true},
		func(t *testing.T, sc suiteScenario, z *dnstest.Zone) spf.Resolver {
			obs := newCountingObserver()
			t.Cleanup(func() {
				_, cache, _ := obs.snapshot()
				hits := 0
				for k, n := range cache {
					if strings.HasSuffix(k, " hit") {
						hits += n
					}
				}
				if hits == 0 && !subtestsFiltered() {
					t.Errorf("no answer came from the cache: %v", cache)
				}
			})
			return suiteResolver(t, serveSuiteZone(t, z), 1000, obs)
		})
	checkComplete(t, "dns-cached-concurrent", cachedConc)

	inMemory := runSuite(t, "memory", scenarios, overDNS, suiteOptions{}, func(t *testing.T, sc suiteScenario, z *dnstest.Zone) spf.Resolver {
		return dnstest.NewMapResolver(z)
	})
	checkComplete(t, "memory", inMemory)
}

// checkComplete fails unless every test of the suite ran and none was
// skipped; a -run or -skip pattern that selects subtests turns the count
// into a log line.
func checkComplete(t *testing.T, name string, run *suiteRun) {
	t.Helper()
	run.mu.Lock()
	defer run.mu.Unlock()
	if len(run.skipped) > 0 {
		t.Errorf("%s: %d suite tests skipped: %s", name, len(run.skipped), strings.Join(run.skipped, ", "))
	}
	if len(run.outcomes) == suiteTests {
		return
	}
	if subtestsFiltered() {
		t.Logf("%s: %d of %d suite tests ran (subtests filtered by -run or -skip)", name, len(run.outcomes), suiteTests)
		return
	}
	t.Errorf("%s: %d of %d suite tests ran", name, len(run.outcomes), suiteTests)
}

func subtestsFiltered() bool {
	for _, name := range []string{"test.run", "test.skip"} {
		f := flag.Lookup(name)
		if f == nil {
			continue
		}
		v := f.Value.String()
		if (name == "test.run" && strings.Contains(v, "/")) || (name == "test.skip" && v != "") {
			return true
		}
	}
	return false
}

// runSuite runs every scenario as a subtest of a subtest called name and
// returns the outcomes once all tests are done. When ref is set, every
// outcome must also agree with ref's outcome of the same test; ref is the
// run over DNS without a cache.
func runSuite(t *testing.T, name string, scenarios []suiteScenario, ref *suiteRun, opts suiteOptions, newResolver resolverFactory) *suiteRun {
	run := &suiteRun{outcomes: map[string]*spf.Outcome{}}
	t.Run(name, func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.Description, func(t *testing.T) {
				z, err := buildZone(sc.Zone)
				if err != nil {
					t.Fatal(err)
				}
				c := &spf.Checker{
					Resolver:   newResolver(t, sc, z),
					Receiver:   suiteReceiver,
					Timeout:    suiteCheckTimeout,
					Sequential: opts.sequential,
				}
				for _, tc := range sc.Tests {
					key := sc.Description + "/" + tc.Name
					t.Run(tc.Name, func(t *testing.T) {
						t.Parallel()
						t.Cleanup(func() {
							if t.Skipped() {
								run.skip(key)
							}
						})
						o := runCase(t, c, tc)
						run.record(key, o)
						if ref != nil {
							ref.mu.Lock()
							want, ok := ref.outcomes[key]
							ref.mu.Unlock()
							if ok {
								compareOutcomes(t, tc, "dns", want, name, o)
							}
						}
						if opts.twice {
							again := runCase(t, c, tc)
							compareOutcomes(t, tc, "first check", o, "second check", again)
						}
					})
				}
			})
		}
	})
	return run
}

// runCase checks one test and reports any disagreement with the suite.
func runCase(t *testing.T, c *spf.Checker, tc suiteCase) *spf.Outcome {
	t.Helper()
	ip, err := netip.ParseAddr(tc.Host)
	if err != nil {
		t.Fatalf("host %q: %v", tc.Host, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*suiteCheckTimeout)
	defer cancel()
	// An empty mailfrom is the null sender: the checker then checks
	// postmaster@<helo>, which is how the suite states its HELO tests.
	o := c.CheckMailFrom(ctx, ip, tc.MailFrom, tc.Helo)
	if o == nil {
		t.Fatal("CheckMailFrom returned nil")
	}
	if !slices.Contains(tc.Results, o.Result) {
		t.Errorf("result %s, want %s\n%s", o.Result, joinResults(tc.Results), describe(tc, o))
		return o
	}
	if o.Result != tc.Results[0] {
		t.Logf("result %s accepted; the suite prefers %s", o.Result, tc.Results[0])
	}
	if tc.HasExplanation && o.Result == spf.Fail {
		want := tc.Explanation
		if want == "DEFAULT" {
			want, err = defaultExplanation(tc, ip)
			if err != nil {
				t.Fatal(err)
			}
		}
		if o.Explanation != want {
			t.Errorf("explanation %q, want %q\n%s", o.Explanation, want, describe(tc, o))
		}
	}
	return o
}

// defaultExplanation expands spf.DefaultExplanation for a test by hand, so
// that "DEFAULT" checks the checker's real default rather than a stand-in.
func defaultExplanation(tc suiteCase, ip netip.Addr) (string, error) {
	domain := tc.Helo
	if tc.MailFrom != "" {
		domain = tc.MailFrom[strings.LastIndexByte(tc.MailFrom, '@')+1:]
	}
	s := strings.NewReplacer("%{o}", domain, "%{c}", ip.Unmap().String()).Replace(spf.DefaultExplanation)
	if strings.Contains(s, "%") {
		return "", fmt.Errorf("spf.DefaultExplanation %q uses macros the suite driver does not expand", spf.DefaultExplanation)
	}
	return s, nil
}

// compareOutcomes requires got (from the run or check called gotName) to
// decide exactly as want (from refName) did. Problem texts and trace
// details may name resolver-specific errors, so only the decision and the
// path to it are compared.
func compareOutcomes(t *testing.T, tc suiteCase, refName string, want *spf.Outcome, gotName string, got *spf.Outcome) {
	t.Helper()
	type decision struct {
		Result                                  spf.Result
		Record, Mechanism, MechanismDomain, Exp string
		DNSLookups, VoidLookups                 int
	}
	type path struct {
		Kind    spf.StepKind
		Depth   int
		Domain  string
		Term    string
		Matched bool
		Result  spf.Result
	}
	dec := func(o *spf.Outcome) decision {
		return decision{o.Result, o.Record, o.Mechanism, o.MechanismDomain, o.Explanation, o.DNSLookups, o.VoidLookups}
	}
	steps := func(o *spf.Outcome) []path {
		var out []path
		for _, s := range o.Trace {
			out = append(out, path{s.Kind, s.Depth, s.Domain, s.Term, s.Matched, s.Result})
		}
		return out
	}
	if w, g := dec(want), dec(got); w != g {
		t.Errorf("%s decided differently from %s:\n %s: %+v\n %s: %+v\n%s\n%s trace:\n%s",
			gotName, refName, refName, w, gotName, g, describe(tc, got), refName, traceText(want))
		return
	}
	if !slices.Equal(steps(want), steps(got)) {
		t.Errorf("%s took a different path from %s\n%s\n%s trace:\n%s", gotName, refName, describe(tc, got), refName, traceText(want))
	}
}

func joinResults(rs []spf.Result) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	if len(s) == 1 {
		return s[0]
	}
	return "one of " + strings.Join(s, ", ")
}

// describe renders what a reader needs to judge a failure: the test as the
// suite states it and the outcome with its trace.
func describe(tc suiteCase, o *spf.Outcome) string {
	var b bytes.Buffer
	if tc.Description != "" {
		fmt.Fprintf(&b, "description: %s\n", tc.Description)
	}
	if tc.Comment != "" {
		fmt.Fprintf(&b, "comment:     %s\n", tc.Comment)
	}
	fmt.Fprintf(&b, "spec:        RFC 7208 %s\n", tc.Spec)
	fmt.Fprintf(&b, "input:       ip=%s mailfrom=%q helo=%q\n", tc.Host, tc.MailFrom, tc.Helo)
	fmt.Fprintf(&b, "outcome:     %s domain=%q record=%q\n", o.Result, o.Domain, o.Record)
	fmt.Fprintf(&b, "mechanism:   %q in %q\n", o.Mechanism, o.MechanismDomain)
	if o.Problem != "" {
		fmt.Fprintf(&b, "problem:     %s\n", o.Problem)
	}
	if o.Explanation != "" {
		fmt.Fprintf(&b, "explanation: %q\n", o.Explanation)
	}
	fmt.Fprintf(&b, "lookups:     %d (void %d) in %v\n", o.DNSLookups, o.VoidLookups, o.Duration)
	b.WriteString("trace:\n")
	b.WriteString(traceText(o))
	return b.String()
}

func traceText(o *spf.Outcome) string {
	var b strings.Builder
	for _, s := range o.Trace {
		b.WriteString("  ")
		b.WriteString(s.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestSuiteParse checks that the driver reads the suite's forms as pyspf's
// driver does and refuses anything it does not understand, rather than
// serving a zone that differs from the suite's.
func TestSuiteParse(t *testing.T) {
	const head = "description: d\ntests:\n  t1:\n    spec: 1\n    helo: h\n    host: 192.0.2.1\n    mailfrom: \"\"\n    result: pass\nzonedata:\n"
	tests := []struct {
		name    string
		yaml    string
		want    []zoneEntry // the entries of the first zone name
		wantErr string
	}{
		{
			name: "escaped bytes stay bytes",
			yaml: head + "  A.Example:\n    - SPF: \"v=spf1 \\xEF\\xBB\\xBF\\x80 \\0 -all\"\n",
			want: []zoneEntry{{Type: "SPF", Values: []string{"v=spf1 \xef\xbb\xbf\x80 \x00 -all"}}},
		},
		{
			name: "list is one record of several strings, empty list none",
			yaml: head + "  a.example:\n    - SPF: [ \"v=spf1 ip4:\", \"192.0.2.5 -all\" ]\n    - TXT: [ ]\n",
			want: []zoneEntry{
				{Type: "SPF", Values: []string{"v=spf1 ip4:", "192.0.2.5 -all"}},
				{Type: "TXT", Values: []string{}},
			},
		},
		{
			name: "TXT NONE and TIMEOUT",
			yaml: head + "  a.example:\n    - SPF: v=spf1 -all\n    - TXT: NONE\n    - TIMEOUT\n",
			want: []zoneEntry{
				{Type: "SPF", Values: []string{"v=spf1 -all"}},
				{Type: "TXT", None: true},
				{Type: "TIMEOUT"},
			},
		},
		{
			name: "quoted NONE is a record",
			yaml: head + "  a.example:\n    - TXT: \"NONE\"\n",
			want: []zoneEntry{{Type: "TXT", Values: []string{"NONE"}}},
		},
		{
			name: "MX",
			yaml: head + "  a.example:\n    - MX: [0, \"\"]\n",
			want: []zoneEntry{{Type: "MX", Values: []string{"0", ""}}},
		},
		{name: "unknown type", yaml: head + "  a.example:\n    - SRV: x\n", wantErr: `unknown zone entry type "SRV"`},
		{name: "unknown bare entry", yaml: head + "  a.example:\n    - NXDOMAIN\n", wantErr: `unknown zone entry "NXDOMAIN"`},
		{name: "two keys in an entry", yaml: head + "  a.example:\n    - {A: 192.0.2.1, TXT: x}\n", wantErr: "one-key mapping"},
		{name: "TIMEOUT not last", yaml: head + "  a.example:\n    - TIMEOUT\n    - A: 192.0.2.1\n", wantErr: "TIMEOUT before other entries"},
		{name: "NONE beside a TXT", yaml: head + "  a.example:\n    - TXT: x\n    - TXT: NONE\n", wantErr: "both TXT records and TXT: NONE"},
		{name: "MX without host", yaml: head + "  a.example:\n    - MX: [0]\n", wantErr: "MX needs 2"},
		{name: "name twice", yaml: head + "  a.example:\n    - A: 192.0.2.1\n  A.example:\n    - A: 192.0.2.2\n", wantErr: "appears twice"},
		{name: "unknown test key", yaml: strings.Replace(head, "    spec: 1\n", "    spec: 1\n    receiver: x\n", 1) + "  a.example:\n    - A: 192.0.2.1\n", wantErr: `unknown key "receiver"`},
		{name: "unknown result", yaml: strings.Replace(head, "result: pass", "result: [pass, maybe]", 1) + "  a.example:\n    - A: 192.0.2.1\n", wantErr: "unknown SPF result"},
		{name: "unknown scenario key", yaml: head + "  a.example:\n    - A: 192.0.2.1\nowner: x\n", wantErr: `unknown scenario key "owner"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scs, err := parseSuite(strings.NewReader(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(scs) != 1 || len(scs[0].Zone) != 1 {
				t.Fatalf("parsed %+v, want one scenario with one zone name", scs)
			}
			got := scs[0].Zone[0]
			if got.Name != strings.ToLower(got.Name) {
				t.Errorf("zone name %q not lowercased", got.Name)
			}
			if len(got.Entries) != len(tt.want) {
				t.Fatalf("entries %+v, want %+v", got.Entries, tt.want)
			}
			for i, e := range got.Entries {
				w := tt.want[i]
				if e.Type != w.Type || e.None != w.None || !slices.Equal(e.Values, w.Values) || (e.Values == nil) != (w.Values == nil) {
					t.Errorf("entry %d: %+v, want %+v", i, e, w)
				}
			}
		})
	}
}

// TestSuiteZone checks that a zone is served as SOURCE.md describes: SPF
// copied to TXT unless the name has TXT of its own or says NONE, raw bytes
// kept, several strings joined, and SPF published as type 99 too, so that
// the suite's "no SPF query" check would see a checker that asks.
func TestSuiteZone(t *testing.T) {
	const zonedata = `
copied.example:
  - SPF: "v=spf1 \xEF -all"
parts.example:
  - SPF: [ "v=spf1 ip4:", "192.0.2.5 -all" ]
  - SPF: [ ]
none.example:
  - SPF: v=spf1 -all
  - TXT: NONE
own.example:
  - SPF: v=spf1 -all
  - TXT: v=spf1 +all
"Odd Name.example":
  - A: 192.0.2.1
  - AAAA: 2001:DB8::1
  - MX: [5, "foo:bar/baz.example"]
dead.example:
  - A: 192.0.2.1
  - TIMEOUT
`
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(zonedata), &root); err != nil {
		t.Fatal(err)
	}
	names, err := parseZone(root.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	z, err := buildZone(names)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	srv := dnstest.StartServer(t, z)
	overDNS, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: suiteQueryTimeout})
	if err != nil {
		t.Fatal(err)
	}
	resolvers := []struct {
		name string
		r    spf.Resolver
	}{
		{"memory", dnstest.NewMapResolver(z)},
		{"dns", overDNS},
	}
	txt := []struct {
		name     string
		want     []string
		notFound bool
	}{
		{name: "copied.example", want: []string{"v=spf1 \xef -all"}},
		{name: "parts.example", want: []string{"v=spf1 ip4:192.0.2.5 -all", ""}},
		{name: "none.example", notFound: true},
		{name: "own.example", want: []string{"v=spf1 +all"}},
		{name: "odd name.example", notFound: true},
	}
	for _, rv := range resolvers {
		r := rv.r
		for _, tt := range txt {
			got, err := r.LookupTXT(ctx, tt.name)
			if tt.notFound {
				if !spf.IsNotFound(err) {
					t.Errorf("%s: TXT %s: %q, %v; want not found", rv.name, tt.name, got, err)
				}
				continue
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("%s: TXT %s: %q, %v; want %q", rv.name, tt.name, got, err, tt.want)
			}
		}
		if a, err := r.LookupA(ctx, "ODD NAME.example"); err != nil || len(a) != 1 || a[0] != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("%s: A of a name with a space: %v, %v", rv.name, a, err)
		}
		if a, err := r.LookupAAAA(ctx, "odd name.example"); err != nil || len(a) != 1 || a[0] != netip.MustParseAddr("2001:db8::1") {
			t.Errorf("%s: AAAA: %v, %v", rv.name, a, err)
		}
		if mx, err := r.LookupMX(ctx, "odd name.example"); err != nil || !slices.Equal(mx, []string{"foo:bar/baz.example"}) {
			t.Errorf("%s: MX: %q, %v", rv.name, mx, err)
		}
		if a, err := r.LookupA(ctx, "dead.example"); err != nil || len(a) != 1 {
			t.Errorf("%s: A before TIMEOUT: %v, %v", rv.name, a, err)
		}
		if _, err := r.LookupTXT(ctx, "dead.example"); err == nil || spf.IsNotFound(err) {
			t.Errorf("%s: TXT at a TIMEOUT name: %v, want a temporary error", rv.name, err)
		}
	}

	// Type SPF is only visible on the wire: ask the server directly.
	m := new(dns.Msg)
	m.SetQuestion("none.example.", dns.TypeSPF)
	c := &dns.Client{Timeout: 2 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Answer) != 1 || resp.Answer[0].Header().Rrtype != dns.TypeSPF {
		t.Errorf("type SPF at none.example: %v, want one SPF record", resp.Answer)
	}
}
