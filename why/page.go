// Package why serves the "why" page: given a sender, a client IP and a
// HELO name, it runs the SPF check live and explains the result to the
// sender's admin — the record, the term that decided, what to change — as
// plain HTML. The page faces the internet: every value is escaped, each
// client is rate limited, live checks are bounded and answers are cached
// briefly.
package why

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// Defaults of Options. Those the config file can set are the config's
// own defaults, so that a page built without a config behaves as one
// built from the default config.
const (
	DefaultRate       = config.DefaultWhyRate       // requests a minute per client
	DefaultConcurrent = config.DefaultWhyConcurrent // live checks at once
	DefaultCacheTTL   = config.DefaultWhyCache      // how long an answer is kept
	DefaultCacheSize  = 1000                        // answers kept
	DefaultCacheBytes = 16 << 20                    // bytes of answers kept
	DefaultClients    = 10000                       // clients the rate limiter remembers
)

// Limits on the request.
const (
	// MaxQuery bounds the query string: a sender (at most 256 octets in
	// SMTP), an IP and a HELO name fit many times over, URL-encoded.
	MaxQuery   = 2048
	maxSender  = 320
	maxHELO    = 255
	retryAfter = 5 // seconds a client is told to wait when all checks are busy
)

// Options configure the page. Zero values mean the defaults.
type Options struct {
	// Checker returns the checker a request uses; it is called once per
	// live check, so that a daemon passing its current runtime's checker
	// serves each request with the config of the moment. Required.
	Checker func() *spf.Checker
	// Rate is how many requests a minute one client may make (an IPv4
	// address, or an IPv6 /64), in bursts of as many; 0 means DefaultRate.
	Rate int
	// Concurrent bounds the live checks running at once; a request beyond
	// it is answered 503 at once. 0 means DefaultConcurrent.
	Concurrent int
	// CacheTTL is how long an answer is served again without a new check;
	// 0 means DefaultCacheTTL, a negative value turns the cache off.
	CacheTTL time.Duration
	// CacheSize bounds the answers kept; 0 means DefaultCacheSize.
	CacheSize int
	// CacheBytes bounds the bytes of the answers kept (their pages and
	// keys); 0 means DefaultCacheBytes. A page over 1/64 of it is served
	// but not kept.
	CacheBytes int64
	// Clients bounds the clients the rate limiter remembers; 0 means
	// DefaultClients.
	Clients int
	// Policy returns the policy that picks, of a message's two checks,
	// the one the receiving server decides by, which the page then
	// explains: the MAIL FROM outcome or the HELO one. The page checks
	// the HELO name too when it is given with a sender. It is called once
	// per live check, like Checker. nil means DefaultPolicy; a daemon
	// passes its current one, so that a refusal's link explains that
	// refusal.
	Policy func() *policy.Policy
	// Log receives a debug line per live check; nil means slog.Default().
	Log *slog.Logger
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// DefaultPolicy returns the policy of spf-milter's default config, for a
// page served without a daemon's own.
func DefaultPolicy() *policy.Policy { return defaultPolicy() }

// defaultPolicy is made once: the default config looks up the host name.
var defaultPolicy = sync.OnceValue(func() *policy.Policy { return policy.New(config.Default()) })

// handler serves the page.
type handler struct {
	checker func() *spf.Checker
	policy  func() *policy.Policy
	limiter *rateLimiter
	cache   *answerCache
	slots   chan struct{}
	log     *slog.Logger
	now     func() time.Time
}

// NewHandler returns the page's handler. It answers GET and HEAD requests
// whatever their path (mount it at /why), with the parameters s (the MAIL
// FROM address, empty for the null sender), i (the client IP) and h (the
// HELO name). It panics when o.Checker is nil.
func NewHandler(o Options) http.Handler {
	if o.Checker == nil {
		panic("why: Options.Checker is nil")
	}
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	if o.Concurrent <= 0 {
		o.Concurrent = DefaultConcurrent
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.Clients <= 0 {
		o.Clients = DefaultClients
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Policy == nil {
		o.Policy = DefaultPolicy
	}
	return &handler{
		checker: o.Checker,
		policy:  o.Policy,
		limiter: newRateLimiter(o.Rate, o.Clients),
		cache:   newAnswerCache(o.CacheTTL, o.CacheSize, o.CacheBytes),
		slots:   make(chan struct{}, o.Concurrent),
		log:     o.Log,
		now:     o.Now,
	}
}

// query is a request's parameters, normalised: equal queries share a
// cached answer.
type query struct {
	sender string // as given, the domain in lower case; "" for the null sender
	ip     netip.Addr
	helo   string // lower case
}

func (q query) key() string {
	// The IP cannot hold a NUL, and the sender and HELO were refused if
	// they did.
	return q.sender + "\x00" + q.ip.String() + "\x00" + q.helo
}

// ServeHTTP answers one request, cheapest refusals first: method, size,
// rate, form; then the cache, and only then a live check.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.plain(w, http.StatusMethodNotAllowed, "Only GET and HEAD are allowed here.")
		return
	}
	if len(r.URL.RawQuery) > MaxQuery {
		h.plain(w, http.StatusRequestURITooLong, "The query is too long.")
		return
	}
	now := h.now()
	if ok, wait := h.limiter.allow(clientKey(r.RemoteAddr), now); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		h.plain(w, http.StatusTooManyRequests, "Too many requests from your address; try again in a minute.")
		return
	}
	q, form, problem := parseQuery(r.URL.RawQuery)
	if problem != "" {
		h.badRequest(w, form, problem)
		return
	}
	key := q.key()
	if a, ok := h.cache.get(key, now); ok {
		h.page(w, a, now)
		return
	}
	select {
	case h.slots <- struct{}{}:
	default:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		h.plain(w, http.StatusServiceUnavailable, "Too many checks are running; try again in a few seconds.")
		return
	}
	out, other, site := h.check(r, q)
	if r.Context().Err() != nil {
		// The client went away and the check was cut short: its result
		// says nothing about the domain, so it is neither sent nor kept.
		return
	}
	h.log.Debug("why page check", "sender", q.sender, "ip", q.ip.String(), "helo", q.helo,
		"identity", string(out.Identity), "result", string(out.Result), "duration", out.Duration.String())
	var buf bytes.Buffer
	if err := renderResult(&buf, q, out, other, site, form, now, h.cache.ttl); err != nil {
		h.log.Error("why page: rendering failed", "error", err)
		h.plain(w, http.StatusInternalServerError, "The page could not be made.")
		return
	}
	h.page(w, h.cache.put(key, buf.Bytes(), now), now)
}

// check runs the live checks in the slot the caller took, and gives the
// slot back even if a check panics (net/http recovers the panic, and a
// lost slot would stay lost). It returns the outcome the receiving server
// decides by, and the other identity's outcome or nil. Without a sender
// the MAIL FROM check is already the HELO name's (postmaster@ the HELO
// name), so there is only one. site says what the site's rules make of
// the message.
func (h *handler) check(r *http.Request, q query) (decided, other *spf.Outcome, site siteRules) {
	defer func() { <-h.slots }()
	c := h.checker()
	p := h.policy()
	// The page has no listener: rules on it are not known here.
	m := policy.Message{ClientIP: q.ip, HELO: q.helo, Sender: q.sender}
	if p.NeedsClientName() {
		m.LookupName = func() string {
			name, _ := policy.ConfirmName(r.Context(), c.Resolver, q.ip)
			return name
		}
	}
	site.listenerUnknown = p.ListenerRuleMayApply(m)
	mailFrom := c.CheckMailFrom(r.Context(), q.ip, q.sender, q.helo)
	if q.sender == "" || q.helo == "" {
		site.note = policy.RuleNote(p.Decide(m, mailFrom), mailFrom)
		return mailFrom, nil, site
	}
	helo := c.CheckHELO(r.Context(), q.ip, q.helo)
	d, by := p.DecideMessage(m, mailFrom, helo)
	site.note = policy.RuleNote(d, by)
	if by == helo {
		return helo, mailFrom, site
	}
	return mailFrom, helo, site
}

// siteRules is what the page says of the site's rules.
type siteRules struct {
	// note says what the rule that decided did, "" when none did.
	note string
	// listenerUnknown tells that a rule on the MTA's listener could
	// apply, which the page cannot know.
	listenerUnknown bool
}

// page sends a result page, cacheable by the client for as long as it
// stays in our cache.
func (h *handler) page(w http.ResponseWriter, a *answer, now time.Time) {
	hdr := w.Header()
	if left := a.expires.Sub(now); left >= time.Second {
		hdr.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(left/time.Second)))
	} else {
		hdr.Set("Cache-Control", "no-store")
	}
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Content-Length", strconv.Itoa(len(a.page)))
	w.WriteHeader(http.StatusOK)
	w.Write(a.page)
}

// badRequest sends the page with the form, saying what is wrong.
func (h *handler) badRequest(w http.ResponseWriter, form formValues, problem string) {
	var buf bytes.Buffer
	if err := renderForm(&buf, form, problem); err != nil {
		h.log.Error("why page: rendering failed", "error", err)
		h.plain(w, http.StatusInternalServerError, "The page could not be made.")
		return
	}
	h.send(w, http.StatusBadRequest, "text/html; charset=utf-8", buf.Bytes())
}

// plain sends a short text answer for the errors that are not worth a page.
func (h *handler) plain(w http.ResponseWriter, code int, msg string) {
	h.send(w, code, "text/plain; charset=utf-8", []byte(msg+"\n"))
}

func (h *handler) send(w http.ResponseWriter, code int, contentType string, body []byte) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Type", contentType)
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

// setSecurityHeaders allows the page nothing but its own inline style: no
// script, no images, no frames around it, no referrer leaked to a link.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// formValues are the parameters as given, for the form that repeats them.
type formValues struct {
	Sender, IP, HELO string
}

// parseQuery reads s, i and h from a raw query. It returns the query, the
// values to put back in the form, and what is wrong ("" if nothing).
func parseQuery(raw string) (query, formValues, string) {
	vals, err := url.ParseQuery(raw)
	in := formValues{Sender: vals.Get("s"), IP: vals.Get("i"), HELO: vals.Get("h")}
	q, problem := checkQuery(raw, in, err)
	// The form shows the values printable, as the rest of the page does.
	return q, formValues{Sender: show(in.Sender), IP: show(in.IP), HELO: show(in.HELO)}, problem
}

// checkQuery is parseQuery's work on the values given as form, with err
// the error of parsing the query.
func checkQuery(raw string, form formValues, err error) (query, string) {
	var q query
	if err != nil {
		return q, "The query is not well formed."
	}
	if raw == "" {
		return q, "Give the sender, the IP address and the HELO name of the mail to check."
	}
	if len(form.Sender) > maxSender {
		return q, fmt.Sprintf("The sender address is longer than %d characters.", maxSender)
	}
	if len(form.HELO) > maxHELO {
		return q, fmt.Sprintf("The HELO name is longer than %d characters.", maxHELO)
	}
	if strings.ContainsRune(form.Sender, 0) || strings.ContainsRune(form.HELO, 0) {
		return q, "The sender address or the HELO name holds a NUL character."
	}
	if strings.TrimSpace(form.IP) == "" {
		return q, "The IP address (i) is missing."
	}
	ip, ok := parseIP(form.IP)
	if !ok {
		return q, "The IP address (i) is not an IPv4 or IPv6 address."
	}
	q.ip = ip
	q.sender = normaliseSender(form.Sender)
	q.helo = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(form.HELO), "."))
	if q.sender == "" && q.helo == "" {
		return q, "Give the sender address (s), or the HELO name (h) for a bounce."
	}
	return q, ""
}

// normaliseSender trims what a copied address commonly carries (spaces,
// angle brackets) and lowers the case of its domain, which DNS ignores.
func normaliseSender(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return s[:i+1] + strings.ToLower(strings.TrimSuffix(s[i+1:], "."))
	}
	return strings.ToLower(s)
}

// parseIP reads an IPv4 or IPv6 address, also in brackets, or an IPv6
// address in the dotted-nibble form of the SPF macro %{i} (what a reply
// template's %{I} gives). IPv4-mapped IPv6 addresses are IPv4.
func parseIP(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, false
		}
		return a.Unmap(), true
	}
	parts := strings.Split(s, ".")
	if len(parts) != 32 {
		return netip.Addr{}, false
	}
	var b [16]byte
	for i, p := range parts {
		if len(p) != 1 {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		b[i/2] |= byte(n) << (4 * (1 - i%2))
	}
	return netip.AddrFrom16(b).Unmap(), true
}
