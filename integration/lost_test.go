package integration

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lostMilterConfig is postfixMilterConfig with short DNS deadlines: while
// NSD is stopped a check ends in a temperror (451) within a fraction of a
// second instead of holding the SMTP client for the default deadlines.
func lostMilterConfig(dnsAddr, receiver string) string {
	return fmt.Sprintf(`authserv_id: %s
receiver: %s
dns: {servers: [%q], timeout: 500ms, check_timeout: 2s}
policy:
  mailfrom: {permerror: reject}
trusted_networks: [127.0.0.1/32]
`, authservID, receiver, dnsAddr)
}

// lostBrokenConfig is a config the milter must refuse: a reload with it
// keeps the old config serving, so that no message may ever name its
// receiver.
func lostBrokenConfig(dnsAddr string) string {
	return fmt.Sprintf(`authserv_id: %s
receiver: %s
dns: {servers: [%q], timeout: fast, check_timeout: 2s}
trusted_networks: [127.0.0.1/32]
`, authservID, lostBrokenReceiver, dnsAddr)
}

const lostBrokenReceiver = "broken.example.test"

// Message kinds of the stream, by sender domain in the postfixZone.
const (
	lostPass = "pass" // delivered, checked as pass
	lostFail = "fail" // refused with 550 5.7.23 whenever not deferred
	lostNone = "none" // delivered, checked as none
)

// lostMsg is one message of the stream and what happened to it at the
// client.
type lostMsg struct {
	m    message
	kind string

	attempts  int       // SMTP transactions tried
	deferrals []string  // the 4xx replies, in order
	due       time.Time // when a deferred message may be tried again
	final     string    // "delivered", "refused" or "error"
	problems  []string  // what went wrong, for an error
}

// lostStream hands the stream's messages to the client workers: deferred
// ones when their retry is due, first, then new ones, one per freshEvery
// at most, until the stream is closed. It ends when nothing is left to
// send or retry. The pace keeps the stream going through every chaos step
// rather than pouring all its messages through between two of them.
type lostStream struct {
	smtpAddr string // Postfix

	mu         sync.Mutex
	all        []*lostMsg
	retries    []*lostMsg
	inflight   int
	closed     bool // no new messages after this
	aborted    bool // no retries either
	maxFresh   int  // bound on new messages, whatever happens
	freshEvery time.Duration
	nextFresh  time.Time // when the next new message may start
	retryDelay time.Duration
	maxTries   int

	finished atomic.Int64 // transactions finished, for the chaos loop's pacing
	deferred atomic.Int64 // of which deferred with a 4xx
}

// next returns the next message to try, or nil when the stream is over.
func (s *lostStream) next() *lostMsg {
	for {
		s.mu.Lock()
		now := time.Now()
		if len(s.retries) > 0 && !s.retries[0].due.After(now) {
			lm := s.retries[0]
			s.retries = s.retries[1:]
			s.inflight++
			s.mu.Unlock()
			return lm
		}
		if !s.closed && len(s.all) < s.maxFresh && !s.nextFresh.After(now) {
			s.nextFresh = now.Add(s.freshEvery)
			n := len(s.all)
			// Mostly pass, one in ten fail, one in ten none.
			kind := lostPass
			switch n % 10 {
			case 3:
				kind = lostFail
			case 7:
				kind = lostNone
			}
			lm := &lostMsg{m: newMessage(fmt.Sprintf("lost-%s-%d", kind, n), "user@"+kind+".example.test"), kind: kind}
			s.all = append(s.all, lm)
			s.inflight++
			s.mu.Unlock()
			return lm
		}
		if (s.closed || len(s.all) >= s.maxFresh) && len(s.retries) == 0 && s.inflight == 0 {
			s.mu.Unlock()
			return nil
		}
		wait := 20 * time.Millisecond
		if !s.closed && len(s.all) < s.maxFresh {
			wait = min(wait, time.Until(s.nextFresh))
		}
		if len(s.retries) > 0 {
			wait = min(wait, time.Until(s.retries[0].due))
		}
		s.mu.Unlock()
		time.Sleep(wait)
	}
}

// done records the end of one transaction of lm; a deferred message goes
// back into the retries unless it has had its tries.
func (s *lostStream) done(lm *lostMsg, retry bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if retry && !s.aborted {
		if lm.attempts >= s.maxTries {
			lm.final = "error"
			lm.problems = append(lm.problems, fmt.Sprintf("still deferred after %d tries", lm.attempts))
		} else {
			lm.due = time.Now().Add(s.retryDelay)
			// Retries are due in the order they were deferred.
			s.retries = append(s.retries, lm)
		}
	}
	s.finished.Add(1)
}

// sent returns how many messages the stream has started so far.
func (s *lostStream) sent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

// abort ends the stream at once: no new messages, no more retries.
func (s *lostStream) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed, s.aborted = true, true
	s.retries = nil
}

// close stops new messages; retries go on.
func (s *lostStream) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
}

// lostClientIP is where the stream's messages come from (XCLIENT): the
// pass domain and the HELO name authorise it, the fail domain does not.
const lostClientIP, lostHELO = "192.0.2.10", "helo.example.test"

// worker sends messages of s over one SMTP connection at a time, as a
// sending MTA would: a 4xx defers the message for a retry later on a new
// connection, a 5xx ends it. After any refusal the connection is replaced,
// so that Postfix's per-session error limits never slow the stream.
func (s *lostStream) worker() {
	var c *smtpClient
	closeConn := func() {
		if c != nil {
			c.Close()
			c = nil
		}
	}
	defer closeConn()
	perConn := 0
	for {
		lm := s.next()
		if lm == nil {
			return
		}
		lm.attempts++
		if c == nil || perConn >= 20 {
			closeConn()
			var err error
			if c, err = dialSMTP(s.smtpAddr, lostClientIP, lostHELO); err != nil {
				c = nil
				lm.problems = append(lm.problems, fmt.Sprintf("try %d: connecting: %v", lm.attempts, err))
				s.done(lm, true)
				continue
			}
			perConn = 0
		}
		perConn++
		r, err := c.send(lm.m)
		switch {
		case r.Stage != "" && r.Code/100 == 4:
			// Deferred; err may be the connection closing after a 421,
			// which a client must expect.
			lm.deferrals = append(lm.deferrals, fmt.Sprintf("%s: %d %s", r.Stage, r.Code, r.Text))
			s.deferred.Add(1)
			closeConn()
			s.done(lm, true)
		case err != nil:
			// A broken connection: the message is tried again, but the
			// error stays on its record and fails the test.
			lm.problems = append(lm.problems, fmt.Sprintf("try %d: %v", lm.attempts, err))
			closeConn()
			s.done(lm, true)
		case r.Stage == "":
			lm.final = "delivered"
			if lm.kind == lostFail {
				lm.problems = append(lm.problems, fmt.Sprintf("try %d: fail sender accepted: %s", lm.attempts, r))
			}
			s.done(lm, false)
		default:
			lm.final = "refused"
			if lm.kind != lostFail || r.Stage != "MAIL" || r.Code != 550 || !strings.HasPrefix(r.Text, "5.7.23 SPF fail: ") {
				lm.problems = append(lm.problems, fmt.Sprintf("try %d: refused by mistake: %s", lm.attempts, r))
			}
			closeConn()
			s.done(lm, false)
		}
	}
}

// TestPostfixNothingLost sends a stream of messages through Postfix and
// the milter from several SMTP connections while a chaos loop, in turn and
// again, kills the milter with SIGKILL and restarts it, stops NSD and
// starts it again, reloads the config with a broken file (once) and with a
// good one. Postfix answers 4xx while the milter is away
// (milter_default_action = tempfail) and the milter answers 451 while DNS
// is; the client retries those like an MTA. At the end, counted in the
// mailbox: every pass and none message delivered exactly once, every fail
// message refused with 550 (never delivered), no other refusal, no error.
func TestPostfixNothingLost(t *testing.T) {
	e := postfixFixture(t)
	t.Cleanup(func() { restoreFixtureMilter(t, e) })
	e.milter.Reload(lostMilterConfig(e.nsd.Addr, authservID))

	const (
		minMessages = 500
		workers     = 4
		minCycles   = 3
		maxCycles   = 20
	)
	s := &lostStream{
		smtpAddr:   e.smtpAddr,
		maxFresh:   5000,
		freshEvery: 10 * time.Millisecond,
		retryDelay: 200 * time.Millisecond,
		maxTries:   150,
	}

	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(s.worker)
	}
	// The stream must end whatever happens to the test goroutine, which
	// t.Fatal may end early.
	streamDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(streamDone)
	}()
	chaosDone := false
	defer func() {
		if !chaosDone {
			// The test is failing: no retries either.
			s.abort()
		}
		s.close()
		<-streamDone
	}()

	// progress waits until n more transactions have finished, so that
	// chaos steps are spaced by traffic, not by time (the machine's speed
	// varies), within a bound.
	progress := func(n int64) {
		want := s.finished.Load() + n
		deadline := time.Now().Add(20 * time.Second)
		for s.finished.Load() < want && time.Now().Before(deadline) && !ended(streamDone) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// outage keeps something down for a second, long enough for deferred
	// messages to be deferred again on their retries, and until it has
	// deferred a few transactions (the fault bit), within a bound.
	outage := func() {
		want := s.deferred.Load() + 3
		minEnd, deadline := time.Now().Add(time.Second), time.Now().Add(5*time.Second)
		for (s.deferred.Load() < want || time.Now().Before(minEnd)) && time.Now().Before(deadline) && !ended(streamDone) {
			time.Sleep(10 * time.Millisecond)
		}
	}

	var kills, nsdStops, goodReloads, brokenReloads, cycles int
	receivers := []string{"mx-a.example.test", "mx-b.example.test"}
	lastReceiver := authservID
	// The stream ends early only when it has hit its bound: then the
	// chaos loop stops too, and the checks below tell.
	for cycles < maxCycles && (cycles < minCycles || s.sent() < minMessages) && !ended(streamDone) {
		progress(50)
		e.milter.Kill()
		kills++
		outage()
		e.milter.Restart()

		progress(50)
		e.nsd.Stop()
		nsdStops++
		outage()
		e.nsd.Start()

		if cycles == 0 {
			progress(50)
			e.milter.ReloadRefused(lostBrokenConfig(e.nsd.Addr))
			brokenReloads++
		}

		progress(50)
		lastReceiver = receivers[cycles%2]
		e.milter.Reload(lostMilterConfig(e.nsd.Addr, lastReceiver))
		goodReloads++
		cycles++
	}
	chaosDone = true
	// Some traffic after the last reload, and the stream's minimum.
	after := s.sent() + 20
	for s.sent() < max(after, minMessages) && !ended(streamDone) {
		time.Sleep(10 * time.Millisecond)
	}
	s.close()
	<-streamDone
	streamTime := time.Since(start)

	// Wait for Postfix to deliver what it accepted and for its queue to
	// empty: then no copy can still be on its way, and the count is final.
	var want []string
	for _, lm := range s.all {
		if lm.final == "delivered" {
			want = append(want, lm.m.ID)
		}
	}
	box := e.waitMailbox(t, want)

	// Tally.
	var (
		firstTry, deferredDelivered, refused, deferredRefused, errs int
		retries, maxRetries                                         int
		retryHist                                                   = map[int]int{}
		milterAway, dnsTemperror, other4xx                          int
	)
	for _, lm := range s.all {
		for _, d := range lm.deferrals {
			switch {
			case strings.Contains(d, " 451 4.7.1 "):
				milterAway++
			case strings.Contains(d, " 451 4.7.24 SPF temperror"):
				dnsTemperror++
			default:
				// Neither the milter away nor DNS: allowed (the message
				// was retried like any other), but shown.
				other4xx++
				if other4xx <= 10 {
					t.Logf("message %s deferred for another reason: %s", lm.m.ID, d)
				}
			}
		}
		got := box[lm.m.ID]
		switch {
		case lm.final == "delivered" && len(got) != 1:
			lm.problems = append(lm.problems, fmt.Sprintf("accepted, found %d times in the mailbox", len(got)))
		case lm.final != "delivered" && len(got) != 0:
			lm.problems = append(lm.problems, fmt.Sprintf("%s, yet found %d times in the mailbox", lm.final, len(got)))
		case lm.final == "":
			lm.problems = append(lm.problems, "never finished")
		}
		if lm.final == "delivered" && len(got) == 1 {
			lm.problems = append(lm.problems, checkLostHeaders(lm, got[0])...)
		}
		if len(lm.problems) > 0 {
			errs++
			if errs <= 20 {
				t.Errorf("message %s (%s, %d tries, deferred %q): %s", lm.m.ID, lm.kind, lm.attempts, lm.deferrals, strings.Join(lm.problems, "; "))
			}
			continue
		}
		n := len(lm.deferrals)
		switch {
		case lm.final == "delivered" && n == 0:
			firstTry++
		case lm.final == "delivered":
			deferredDelivered++
			retries += n
			maxRetries = max(maxRetries, n)
			retryHist[n]++
		case n == 0:
			refused++
		default:
			refused++
			deferredRefused++
			retries += n
			maxRetries = max(maxRetries, n)
			retryHist[n]++
		}
	}
	// The receivers the delivered messages name: never the refused
	// file's.
	receiversSeen := map[string]int{}
	for _, lm := range s.all {
		for _, raw := range box[lm.m.ID] {
			for _, r := range reLostReceiver.FindAllStringSubmatch(raw, -1) {
				receiversSeen[r[1]]++
			}
		}
	}
	if receiversSeen[lostBrokenReceiver] > 0 {
		t.Errorf("%d Received-SPF fields name the receiver of the refused config", receiversSeen[lostBrokenReceiver])
	}
	// The last good reload is in force: a message on a new connection
	// (an open session keeps the config it started with) names its
	// receiver.
	probe := newMessage("lost-probe", "user@pass.example.test")
	if r, err := e.sendOne(lostClientIP, lostHELO, probe); err != nil || r.Stage != "" {
		t.Errorf("after the chaos: %v %v", r, err)
	} else if got := e.waitDelivered(t, probe.ID).header("Received-SPF"); len(got) == 0 || !strings.Contains(unfold(got[0]), "receiver="+lastReceiver+";") {
		t.Errorf("after the chaos, Received-SPF %q does not name receiver %s of the last reload", got, lastReceiver)
	}
	if milterAway == 0 || dnsTemperror == 0 {
		t.Errorf("the faults did not bite: %d deferrals with the milter away, %d with DNS away", milterAway, dnsTemperror)
	}
	if len(s.all) < minMessages {
		t.Errorf("only %d messages sent, want at least %d", len(s.all), minMessages)
	}

	var hist []string
	keys := make([]int, 0, len(retryHist))
	for k := range retryHist {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		hist = append(hist, fmt.Sprintf("%d:%d", k, retryHist[k]))
	}
	t.Logf("outcome: messages=%d delivered_first_try=%d deferred_then_delivered=%d refused_5xx=%d (of which deferred first %d) errors=%d",
		len(s.all), firstTry, deferredDelivered, refused, deferredRefused, errs)
	t.Logf("outcome: retries (of the deferred messages, delivered or refused) total=%d max_per_message=%d per_message_histogram=[%s]", retries, maxRetries, strings.Join(hist, " "))
	t.Logf("outcome: deferrals milter_away_451_4.7.1=%d dns_temperror_451_4.7.24=%d other_4xx=%d", milterAway, dnsTemperror, other4xx)
	t.Logf("outcome: chaos cycles=%d sigkill_restarts=%d nsd_stop_starts=%d reloads_good=%d reloads_broken=%d", cycles, kills, nsdStops, goodReloads, brokenReloads)
	t.Logf("outcome: mailbox delivered=%d duplicates=%d stream_seconds=%.1f", countDelivered(box, s.all), countDuplicates(box, s.all), streamTime.Seconds())
}

// ended reports whether ch is closed.
func ended(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

var reLostReceiver = regexp.MustCompile(`receiver=([^;\s]+);`)

// checkLostHeaders checks that a delivered message was checked by the
// milter, with the MAIL FROM result its sender's domain gives: a message
// passed unchecked (the milter away and Postfix accepting) has no such
// fields. The HELO result is left alone: a session that began while DNS
// was away may carry a HELO temperror, which the HELO policy accepts.
func checkLostHeaders(lm *lostMsg, raw string) []string {
	hs := parseDelivered(raw).receivedHeaders()
	var problems []string
	ar := fmt.Sprintf("Authentication-Results: %s; ", authservID)
	arKind := fmt.Sprintf("; spf=%s ", lm.kind)
	arFrom := fmt.Sprintf(" smtp.mailfrom=%s.example.test", lm.kind)
	if n := countPrefix(hs, "Authentication-Results:"); n != 1 || !slices.ContainsFunc(hs, func(h string) bool {
		return strings.HasPrefix(h, ar) && strings.Contains(h, arKind) && strings.HasSuffix(h, arFrom)
	}) {
		problems = append(problems, fmt.Sprintf("%d Authentication-Results, want one from %s with spf=%s for %s: %q", n, authservID, lm.kind, arFrom, hs))
	}
	spf := "Received-SPF: " + lm.kind + " "
	if n := len(slices.DeleteFunc(slices.Clone(hs), func(h string) bool {
		return !strings.HasPrefix(h, spf) || !strings.HasSuffix(h, "identity=mailfrom")
	})); n != 1 {
		problems = append(problems, fmt.Sprintf("%d Received-SPF %s fields for MAIL FROM, want 1: %q", n, lm.kind, hs))
	}
	return problems
}

// parseDelivered splits one mbox message into its header fields.
func parseDelivered(raw string) delivered {
	d := delivered{Raw: raw}
	head, _, _ := strings.Cut(raw, "\n\n")
	for i, line := range strings.Split(head, "\n") {
		switch {
		case i == 0: // the mbox "From sender date" line
		case strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t"):
			if len(d.Headers) > 0 {
				d.Headers[len(d.Headers)-1] += "\n" + line
			}
		default:
			d.Headers = append(d.Headers, line)
		}
	}
	return d
}

var reMessageID = regexp.MustCompile(`(?m)^Message-ID: <([^>@]+)@it\.example\.test>$`)

// mailbox returns every message in the mbox by the ID of its Message-ID
// field, each copy as written.
func (e *postfixEnv) mailbox() map[string][]string {
	b, _ := os.ReadFile(e.mbox)
	box := map[string][]string{}
	for _, raw := range strings.Split("\n"+string(b), "\nFrom ") {
		head, _, _ := strings.Cut(raw, "\n\n")
		for _, m := range reMessageID.FindAllStringSubmatch(head, -1) {
			box[m[1]] = append(box[m[1]], "From "+raw)
		}
	}
	return box
}

// waitMailbox waits until every message of ids is in the mbox and
// Postfix's queue is empty, and returns the mbox's messages.
func (e *postfixEnv) waitMailbox(t *testing.T, ids []string) map[string][]string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		queued := e.queued()
		box := e.mailbox()
		missing := 0
		for _, id := range ids {
			if len(box[id]) == 0 {
				missing++
			}
		}
		if missing == 0 && queued == 0 {
			return box
		}
		if time.Now().After(deadline) {
			t.Errorf("after 60s: %d accepted messages not in the mailbox, %d files in Postfix's queue", missing, queued)
			return box
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queued counts the messages in Postfix's queue, whatever their state.
func (e *postfixEnv) queued() int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		filepath.WalkDir(filepath.Join(e.dir, "pf", "spool", q), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}

// countDelivered counts the messages of all found in box, copies included.
func countDelivered(box map[string][]string, all []*lostMsg) int {
	n := 0
	for _, lm := range all {
		n += len(box[lm.m.ID])
	}
	return n
}

// countDuplicates counts the copies beyond the first of the messages of
// all in box.
func countDuplicates(box map[string][]string, all []*lostMsg) int {
	n := 0
	for _, lm := range all {
		n += max(0, len(box[lm.m.ID])-1)
	}
	return n
}

// restoreFixtureMilter leaves the shared milter running on the shared
// config, whatever state the test left it in.
func restoreFixtureMilter(t *testing.T, e *postfixEnv) {
	if !e.nsd.running() {
		if err := e.nsd.start(); err != nil {
			t.Error(err)
		}
	}
	conf := postfixMilterConfig(e.nsd.Addr, authservID)
	if e.milter.running() {
		if err := e.milter.reload(conf); err == nil {
			return
		}
		e.milter.stop()
	}
	if err := os.WriteFile(e.milter.ConfigPath, []byte("listen: "+e.milter.Listen+"\n"+conf), 0o644); err != nil {
		t.Error(err)
		return
	}
	if err := e.milter.start(); err != nil {
		t.Error(err)
	}
}
