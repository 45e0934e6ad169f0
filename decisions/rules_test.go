package decisions

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
)

// TestRecordRules: the rule, the shadow and the facts rules select on
// are written, and read back into the Message a replay decides.
func TestRecordRules(t *testing.T) {
	d := policy.MessageDecision{
		Time: time.Date(2027, 2, 28, 12, 0, 0, 0, time.UTC), ClientIP: netip.MustParseAddr("192.0.2.1"),
		Sender: "a@x.example", Skipped: policy.SkipRule, Rule: "submission",
		Listener: "submission", ClientName: "", ClientNameKnown: true,
		Shadow: policy.ShadowDecision{Known: true, Action: config.Accept, Rule: "s", Skipped: true},
	}
	line, err := json.Marshal(FromDecision(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"skipped":"rule"`, `"rule":"submission"`, `"listener":"submission"`, `"client_name":""`, `"shadow_action":"accept"`, `"shadow_rule":"s"`} {
		if !strings.Contains(string(line), want) {
			t.Errorf("record %s lacks %s", line, want)
		}
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	m := r.message()
	if m.Listener != "submission" || m.ConfirmedName != "" || !m.Time.Equal(d.Time) {
		t.Errorf("message %+v", m)
	}
	r.Rule = ""
	if err := r.Validate(); err == nil {
		t.Error("a rule skip without the rule's name is valid")
	}
	// Without rules that need them, neither fact is written.
	line, _ = json.Marshal(FromDecision(policy.MessageDecision{Time: d.Time, Sender: "a@x.example", Skipped: policy.SkipSenders}))
	if s := string(line); strings.Contains(s, "listener") || strings.Contains(s, "client_name") || strings.Contains(s, "shadow") {
		t.Errorf("record %s has rule facts it does not need", s)
	}
}

// TestRecordRelay: a message that came through a relay is recorded with
// the client the relay received it from as client_ip, the relay beside
// it, and a replay decides on that client.
func TestRecordRelay(t *testing.T) {
	d := policy.MessageDecision{
		Time: time.Date(2027, 2, 28, 12, 0, 0, 0, time.UTC), ClientIP: netip.MustParseAddr("203.0.113.5"),
		Relay: netip.MustParseAddr("198.51.100.7"), HELO: "mail.sender.example",
		Sender: "a@x.example", Skipped: policy.SkipSenders,
	}
	line, err := json.Marshal(FromDecision(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"client_ip":"203.0.113.5"`, `"relay":"198.51.100.7"`, `"helo":"mail.sender.example"`} {
		if !strings.Contains(string(line), want) {
			t.Errorf("record %s lacks %s", line, want)
		}
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if m := r.message(); m.ClientIP != d.ClientIP {
		t.Errorf("replayed message from %v, want the relay's client %v", m.ClientIP, d.ClientIP)
	}
	r.Relay = "relay.example"
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "relay") {
		t.Errorf("a relay that is not an address: %v", err)
	}
	// Without a relay, none is written.
	line, _ = json.Marshal(FromDecision(policy.MessageDecision{Time: d.Time, Sender: "a@x.example", Skipped: policy.SkipSenders}))
	if strings.Contains(string(line), "relay") {
		t.Errorf("record %s names a relay", line)
	}
}
