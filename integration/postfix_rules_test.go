package integration

import (
	"strings"
	"testing"
)

// TestPostfixListenerRule: with two smtpd services, the port 25 style one
// (its {daemon_name} is Postfix's default, $myhostname) is checked, and
// the one started with -o milter_macro_daemon_name=submission is skipped
// by a rule on the listener: no check, no header.
func TestPostfixListenerRule(t *testing.T) {
	e := postfixFixture(t)
	plain := postfixMilterConfig(e.nsd.Addr, authservID)
	t.Cleanup(func() { e.milter.reload(plain) })
	e.milter.Reload(plain + `rules:
  - name: submission
    when: {listener: [submission]}
    skip: true
shadow:
  policy: {mailfrom: {softfail: reject}}
`)

	// Port 25 style: checked, and the fail refused.
	m := newMessage(t.Name()+"-smtp", "user@fail.example.test")
	r, err := e.sendOne("192.0.2.10", "helo.example.test", m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stage != "MAIL" || r.Code != 550 {
		t.Errorf("smtpd service: %s, want MAIL FROM refused with 550", r)
	}

	// The submission service: the same message goes through unchecked.
	c, err := dialSMTP(e.submissionAddr, "192.0.2.10", "helo.example.test")
	if err != nil {
		t.Fatal(err)
	}
	m = newMessage(t.Name()+"-submission", "user@fail.example.test")
	r, err = c.send(m)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if r.Stage != "" {
		t.Fatalf("submission service: %s, want accepted", r)
	}
	d := e.waitDelivered(t, m.ID)
	if got := d.header("Received-SPF"); len(got) != 0 {
		t.Errorf("skipped message has Received-SPF %q", got)
	}
	for _, h := range d.header("Authentication-Results") {
		if strings.Contains(h, "spf=") {
			t.Errorf("skipped message has %q", h)
		}
	}
	if lines := e.milter.LogLines("spf skipped", "reason=rule", "rule=submission", "sender=user@fail.example.test"); len(lines) != 1 {
		t.Errorf("skip log lines %q, want one", lines)
	}
	// The port 25 message was decided with the shadow beside it.
	if lines := e.milter.LogLines("spf decision", "sender=user@fail.example.test", "action=reject", "shadow_action=reject"); len(lines) != 1 {
		t.Errorf("decision log lines %q, want one with shadow_action", lines)
	}
}
