package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/decisions"
	"github.com/spf-milter/spf-milter/spf"
)

// recordedLog is the decision log of the replay tests: 100 messages
// decided under the default policy (60 pass, 20 softfail, 10 fail, 5 none,
// 5 permerror) and two malformed lines.
var recordedLog = filepath.Join("..", "..", "decisions", "testdata", "decisions.jsonl")

// strictConfig writes a config refusing softfail and permerror as well.
func strictConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "strict.yaml")
	writeFile(t, path, "policy:\n  mailfrom: {softfail: reject, permerror: reject}\n")
	return path
}

func TestReplayText(t *testing.T) {
	t.Parallel()
	cfg := strictConfig(t)
	code, stdout, stderr := runCmd("replay", "--config", cfg, "--top", "3", recordedLog)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := `Replayed 100 decisions from ` + recordedLog + ` (2026-03-01 08:00:00 UTC to 2026-03-01 09:39:00 UTC)
under ` + cfg + `, with the recorded SPF results.

Action       recorded      now   change
accept             90       65      -25
reject             10       35      +25
tempfail            0        0        0
quarantine          0        0        0
total             100      100

25 of 100 messages would be treated differently.
  Now refused:        25  (were accepted 25)
  Now tempfailed:      0
  Now accepted:        0
  Now quarantined:     0

Changes, with the results that decide them now:
  accept -> reject     25  softfail 20, permerror 5

By result under the new config:
  softfail      20 messages  accept -> reject 20
  permerror      5 messages  accept -> reject 5
  pass          60 messages  no change
  fail          10 messages  no change
  none           5 messages  no change

Sender domains with changes, most first (3 of 4 domains with changes, of 8 in all):
  soft-a.example       12 of 12  accept -> reject 12 (softfail 12)
  soft-b.example        8 of 8   accept -> reject 8 (softfail 8)
  broken-a.example      3 of 3   accept -> reject 3 (permerror 3)

2 lines are not decision records and were skipped:
  ` + recordedLog + `:17: not a decision record: invalid character 'h' in literal true (expecting 'r') (at byte 2)
  ` + recordedLog + `:61: not a decision record: unexpected end of JSON input (at byte 70)
`
	if stdout != want {
		t.Errorf("output:\n%s\nwant:\n%s", stdout, want)
	}
}

func TestReplayJSON(t *testing.T) {
	t.Parallel()
	cfg := strictConfig(t)
	code, stdout, stderr := runCmd("replay", "--config", cfg, "--json", recordedLog)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	var r decisions.Report
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("not a report: %v\n%s", err, stdout)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Errorf("more than one JSON document: %v", err)
	}
	if r.Config != cfg || !reflect.DeepEqual(r.Files, []string{recordedLog}) || r.Recheck ||
		r.Decisions != 100 || r.Changed != 25 || r.NowRefused != 25 || r.NowAccepted != 0 ||
		r.Recorded != (decisions.ActionCounts{Accept: 90, Reject: 10}) || r.Now != (decisions.ActionCounts{Accept: 65, Reject: 35}) {
		t.Errorf("report %+v", r)
	}
	var domains []string
	for _, d := range r.Domains {
		domains = append(domains, d.Domain)
		if d.Changed != d.Messages || len(d.Transitions) != 1 || d.Transitions[0].To != config.Reject {
			t.Errorf("domain %+v: want every message now refused", d)
		}
	}
	if want := []string{"soft-a.example", "soft-b.example", "broken-a.example", "broken-b.example"}; !reflect.DeepEqual(domains, want) {
		t.Errorf("domains %v, want %v", domains, want)
	}
	if r.Malformed != 2 || len(r.MalformedLines) != 2 || r.MalformedLines[0].Line != 17 || r.MalformedLines[1].Line != 61 {
		t.Errorf("malformed %d: %+v", r.Malformed, r.MalformedLines)
	}
	// The field names scripts rely on.
	for _, key := range []string{`"now_refused": 25`, `"from": "accept"`, `"to": "reject"`, `"domain": "soft-a.example"`, `"line": 17`} {
		if !strings.Contains(stdout, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestReplayCommandLine(t *testing.T) {
	t.Parallel()
	cfg := strictConfig(t)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, "policy:\n  mailfrom: {softfail: refuse}\n")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no config", []string{recordedLog}, 2, "spf-milter replay: --config is required: the config to try (run 'spf-milter replay -h' for usage)\n"},
		{"no file", []string{"--config", cfg}, 2, "spf-milter replay: no decision log given (run 'spf-milter replay -h' for usage)\n"},
		{"negative top", []string{"--config", cfg, "--top", "-1", recordedLog}, 2, "spf-milter replay: bad --top -1: want 0 (all) or more (run 'spf-milter replay -h' for usage)\n"},
		{"parallel 0", []string{"--config", cfg, "--parallel", "0", recordedLog}, 2, "spf-milter replay: bad --parallel 0: want 1 to 256 (run 'spf-milter replay -h' for usage)\n"},
		{"unknown flag", []string{"--config", cfg, "--since", "1h", recordedLog}, 2, "spf-milter replay: flag provided but not defined: -since (run 'spf-milter replay -h' for usage)\n"},
		{"missing log", []string{"--config", cfg, recordedLog, "nonexistent.jsonl"}, 1, "spf-milter replay: open nonexistent.jsonl: no such file or directory\n"},
		{"bad config", []string{"--config", bad, recordedLog}, 1, "spf-milter replay: " + bad + `:2: policy.mailfrom.softfail: bad value "refuse": unknown value (allowed: accept, reject, tempfail, quarantine)` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(append([]string{"replay"}, tt.args...)...)
			if code != tt.code || stderr != tt.stderr || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q", code, stdout, stderr, tt.code, tt.stderr)
			}
		})
	}
	code, stdout, _ := runCmd("help", "replay")
	if code != 0 || !strings.Contains(stdout, "Usage: spf-milter replay --config NEW.yaml") || !strings.Contains(stdout, "-recheck") {
		t.Errorf("help replay: exit %d\n%s", code, stdout)
	}
	if _, stdout, _ := runCmd("help"); !strings.Contains(stdout, "  replay ") {
		t.Errorf("help does not list replay:\n%s", stdout)
	}
}

// TestReplayRecheckCommand runs --recheck against the loopback DNS server
// of the check tests, which has none of the recorded domains: every
// MAIL FROM result becomes none.
func TestReplayRecheckCommand(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	cfg := filepath.Join(t.TempDir(), "recheck.yaml")
	writeFile(t, cfg, "dns: {servers: [\""+dns+"\"], timeout: 2s}\npolicy:\n  mailfrom: {none: tempfail}\n")
	code, stdout, stderr := runCmd("replay", "--config", cfg, "--recheck", "--json", recordedLog)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var r decisions.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	if !r.Recheck || r.Now != (decisions.ActionCounts{Tempfail: 100}) || r.NowTempfailed != 100 {
		t.Errorf("report: recheck %v, now %+v", r.Recheck, r.Now)
	}
	want := []decisions.ResultChange{
		{From: spf.Pass, To: spf.None, Count: 60}, {From: spf.Softfail, To: spf.None, Count: 20},
		{From: spf.Fail, To: spf.None, Count: 10}, {From: spf.PermError, To: spf.None, Count: 5},
	}
	if !reflect.DeepEqual(r.ResultChanges, want) {
		t.Errorf("result changes %+v, want %+v", r.ResultChanges, want)
	}
}

// transaction runs one message as Postfix would, with the queue id known
// from RCPT TO on, and returns the reply to MAIL FROM ("continue" when it
// passed).
func transaction(t *testing.T, s *gomilter.ClientSession, from, queueID string) string {
	t.Helper()
	act, err := s.Mail(from, nil)
	if err != nil {
		t.Fatal(err)
	}
	if act.Code == gomilter.ActReplyCode {
		return act.SMTPText
	}
	if err := s.Macros(gomilter.CodeRcpt, "i", queueID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rcpt("bob@mx.test", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.End(); err != nil {
		t.Fatal(err)
	}
	return "continue"
}

// TestServeDecisionLog runs the daemon with a decision log: one line per
// message with the checks, a new file after logrotate's rename and
// SIGHUP, every line written by the time serve returns, and a replay of
// the result.
func TestServeDecisionLog(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "decisions.jsonl")
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", "decision_log: {path: "+logPath+"}\n"))
	p := startInProcess(t, serveOptions{configPath: path, explicit: true})
	addr := p.listening(t)
	start := time.Now()

	// 198.51.100.7 as joe@example.org fails, as x@soft.example.org
	// softfails; two messages on one connection.
	s := milterClient(t, addr)
	if got := transaction(t, s, "joe@example.org", ""); !strings.HasPrefix(got, "5.7.23 ") {
		t.Errorf("fail answered %q", got)
	}
	if got := transaction(t, s, "x@soft.example.org", "QSOFT"); got != "continue" {
		t.Errorf("softfail answered %q", got)
	}
	s.Close()
	// A trusted client is not checked, but its message is recorded.
	trusted := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second})
	ts, err := trusted.Session()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Conn("localhost", gomilter.FamilyInet, 4025, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Helo("localhost"); err != nil {
		t.Fatal(err)
	}
	if got := transaction(t, ts, "root@localhost", "QLOCAL"); got != "continue" {
		t.Errorf("trusted client answered %q", got)
	}
	ts.Close()

	// logrotate: rename, then SIGHUP. The records written before the
	// reload are in the renamed file.
	waitLines(t, logPath, 3)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	// Logged once the file is open again.
	before := countLogs(logRecords(p.logs.String()), "decision log to ")
	p.hup <- syscall.SIGHUP
	waitLogs(t, p.logs.String, "decision log to ", before+1)
	if got := oneSession(t, addr); got != 550 {
		t.Errorf("after the reload: MAIL FROM reply %d, want 550", got)
	}
	p.cancel()
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.logs)
	}

	rotated, current := readRecords(t, logPath+".1"), readRecords(t, logPath)
	if len(rotated) != 3 || len(current) != 1 {
		t.Fatalf("%d records before the rotation and %d after, want 3 and 1", len(rotated), len(current))
	}
	heloNone := &decisions.Check{Domain: "client.example", Result: spf.None, Problem: "no SPF record at client.example"}
	failReply := "550 5.7.23 SPF fail: example.org does not designate 198.51.100.7 as a permitted sender"
	want := []decisions.Record{
		{ClientIP: "198.51.100.7", HELO: "client.example", Sender: "joe@example.org", Domain: "example.org",
			MailFrom: &decisions.Check{Domain: "example.org", Result: spf.Fail, Mechanism: "-all"}, HELOCheck: heloNone,
			Identity: spf.IdentityMailFrom, Result: spf.Fail, Action: config.Reject, Reply: failReply},
		{QueueID: "QSOFT", ClientIP: "198.51.100.7", HELO: "client.example", Sender: "x@soft.example.org", Domain: "soft.example.org",
			MailFrom: &decisions.Check{Domain: "soft.example.org", Result: spf.Softfail, Mechanism: "~all"}, HELOCheck: heloNone,
			Identity: spf.IdentityMailFrom, Result: spf.Softfail, Action: config.Accept},
		{QueueID: "QLOCAL", ClientIP: "127.0.0.1", HELO: "localhost", Sender: "root@localhost", Domain: "localhost",
			Skipped: "trusted_networks", Action: config.Accept},
		{ClientIP: "198.51.100.7", HELO: "client.example", Sender: "joe@example.org", Domain: "example.org",
			MailFrom: &decisions.Check{Domain: "example.org", Result: spf.Fail, Mechanism: "-all"}, HELOCheck: heloNone,
			Identity: spf.IdentityMailFrom, Result: spf.Fail, Action: config.Reject, Reply: failReply},
	}
	for i, got := range append(rotated, current...) {
		if got.Time.Before(start.Add(-time.Second)) || got.Time.After(time.Now()) || got.Time.Location() != time.UTC {
			t.Errorf("record %d: time %v, want now in UTC", i, got.Time)
		}
		if got.MailFrom != nil && got.DurationMS <= 0 {
			t.Errorf("record %d: no duration", i)
		}
		got.Time, got.DurationMS = time.Time{}, 0
		if !reflect.DeepEqual(got, want[i]) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want[i])
			t.Errorf("record %d:\n got %s\nwant %s", i, g, w)
		}
	}

	// What would refusing softfail have done to this mail?
	code, stdout, stderr := runCmd("replay", "--config", strictConfig(t), "--json", logPath+".1", logPath)
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, stderr)
	}
	var r decisions.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	if r.Decisions != 4 || r.NowRefused != 1 || len(r.Domains) != 1 || r.Domains[0].Domain != "soft.example.org" {
		t.Errorf("replay of the daemon's log: %s", stdout)
	}
}

// TestServeDecisionLogUnopenable reloads onto a decision log path that
// cannot be a file: the reload says why the log is not open rather than
// where it goes, and a later reload onto a good path opens it.
func TestServeDecisionLogUnopenable(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "decisions.jsonl")
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", "decision_log: {path: "+logPath+"}\n"))
	p := startInProcess(t, serveOptions{configPath: path, explicit: true})
	addr := p.listening(t)
	const opened, notOpen = "decision log to ", "decision log not open; records are lost until it opens"
	for _, tt := range []struct {
		path            string
		opened, notOpen int // log lines so far
	}{
		{dir, 1, 1},     // a directory
		{logPath, 2, 1}, // the good file again
	} {
		writeFile(t, path, serveConfig(dns, "inet:127.0.0.1:0", "reject", "decision_log: {path: "+tt.path+"}\n"))
		before := countLogs(logRecords(p.logs.String()), "config reloaded")
		p.hup <- syscall.SIGHUP
		waitLogs(t, p.logs.String, "config reloaded", before+1)
		// The decision log's line comes after "config reloaded".
		waitLogs(t, p.logs.String, opened, tt.opened)
		waitLogs(t, p.logs.String, notOpen, tt.notOpen)
		recs := logRecords(p.logs.String())
		if got := countLogs(recs, opened); got != tt.opened {
			t.Errorf("%s: %d lines %q, want %d", tt.path, got, opened, tt.opened)
		}
		if got := countLogs(recs, notOpen); got != tt.notOpen {
			t.Errorf("%s: %d lines %q, want %d", tt.path, got, notOpen, tt.notOpen)
		}
		if got := oneSession(t, addr); got != 550 {
			t.Errorf("%s: MAIL FROM reply %d, want 550", tt.path, got)
		}
	}
	for _, r := range logRecords(p.logs.String()) {
		if r["msg"] == notOpen && (r["level"] != "ERROR" || !strings.Contains(fmt.Sprint(r["error"]), "is a directory")) {
			t.Errorf("the reload onto a directory logged %v", r)
		}
	}
	p.cancel()
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.logs)
	}
	// The session after the good reload was recorded.
	if got := readRecords(t, logPath); len(got) != 1 {
		t.Errorf("%d records in %s, want 1", len(got), logPath)
	}
}

// waitLines waits until the file at path holds n lines.
func waitLines(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if bytes.Count(data, []byte("\n")) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has not %d lines after 20s:\n%s", path, n, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readRecords reads a decision log, failing on any line that is not a
// record.
func readRecords(t *testing.T, path string) []decisions.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []decisions.Record
	r := decisions.NewReader(f, path)
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
}

// TestReplayManyHosts checks the advice of docs/operations.md for more than
// one MTA host: the decision logs of several hosts, rotated and gzipped ones
// among them, replayed together, give the report of all their messages, the
// same as one log holding every line.
func TestReplayManyHosts(t *testing.T) {
	t.Parallel()
	all, err := os.ReadFile(recordedLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(all), "\n")
	dir := t.TempDir()
	mx1 := filepath.Join(dir, "mx1", "decisions.jsonl")
	mx2Rotated := filepath.Join(dir, "mx2", "decisions.jsonl.1.gz")
	mx2 := filepath.Join(dir, "mx2", "decisions.jsonl")
	for _, d := range []string{filepath.Dir(mx1), filepath.Dir(mx2)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// mx1 has the first third of the lines, mx2 the rest: its older half
	// rotated and gzipped.
	third := len(lines) / 3
	writeFile(t, mx1, strings.Join(lines[:third], ""))
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write([]byte(strings.Join(lines[third:2*third], ""))); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, mx2Rotated, z.String())
	writeFile(t, mx2, strings.Join(lines[2*third:], ""))

	cfg := strictConfig(t)
	report := func(files ...string) decisions.Report {
		t.Helper()
		args := append([]string{"replay", "--config", cfg, "--json", "--top", "0"}, files...)
		code, stdout, stderr := runCmd(args...)
		if code != 0 || stderr != "" {
			t.Fatalf("replay %v: exit %d, stderr %q", files, code, stderr)
		}
		var r decisions.Report
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("not a report: %v\n%s", err, stdout)
		}
		return r
	}
	one := report(recordedLog)
	many := report(mx1, mx2Rotated, mx2)

	if !reflect.DeepEqual(many.Files, []string{mx1, mx2Rotated, mx2}) {
		t.Errorf("files %v", many.Files)
	}
	if many.Decisions != 100 || many.Decisions != one.Decisions || many.Changed != one.Changed ||
		many.Recorded != one.Recorded || many.Now != one.Now ||
		!reflect.DeepEqual(many.Transitions, one.Transitions) || !reflect.DeepEqual(many.Results, one.Results) ||
		!reflect.DeepEqual(many.Domains, one.Domains) || many.DomainsTotal != one.DomainsTotal ||
		many.Malformed != one.Malformed {
		t.Errorf("three hosts' logs together:\n%+v\nwant as the one log:\n%+v", many, one)
	}
	if !many.First.Equal(*one.First) || !many.Last.Equal(*one.Last) {
		t.Errorf("span %v to %v, want %v to %v", many.First, many.Last, one.First, one.Last)
	}
	// Each host's share is there: a domain seen only in one host's file
	// counts in the total.
	for _, f := range []string{mx1, mx2Rotated, mx2} {
		if r := report(f); r.Decisions == 0 || r.Decisions >= many.Decisions {
			t.Errorf("%s alone: %d decisions, want some of the %d", f, r.Decisions, many.Decisions)
		}
	}
}
