package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// relayAddr is the address the front Postfix sends from: a relay in the
// milter's config, and not in its trusted_networks (127.0.0.1/32).
const relayAddr = "127.0.0.2"

// startFront starts a second Postfix instance, the test's own, standing
// for a filtering gateway: no milter, and every message for example.test
// relayed from relayAddr to the shared instance at next, which has the
// milter. It adds its Received field as any MTA does.
func startFront(t *testing.T, next string) *postfixEnv {
	t.Helper()
	f := &postfixEnv{dir: workDir(t), milter: &Milter{Listen: ""}, mainCF: fmt.Sprintf(`
# The front: a gateway relaying example.test to the instance with the milter.
myhostname = front.example.test
virtual_mailbox_domains =
relay_domains = example.test
relay_transport = smtp:[%s]:%s
smtp_bind_address = %s
`, strings.Split(next, ":")[0], strings.Split(next, ":")[1], relayAddr)}
	err := f.startPostfix()
	f.milter = nil
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(f.maillog)
			out, _ := os.ReadFile(filepath.Join(f.dir, "pf", "start-fg.out"))
			t.Logf("front Postfix log:\n%s\n%s", log, out)
		}
		if err := f.stop(); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// queuedAs reads the queue id from the reply to the end of DATA.
var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// TestPostfixRelay: a Postfix gateway relays to the Postfix with the
// milter, whose config names the gateway in relays. The milter checks the
// client the gateway received the mail from, as the gateway's Received
// field says: a pass is delivered with that client in the headers and a
// comment naming the relay, a fail is refused after DATA with 550 5.7.23
// and the gateway bounces it.
func TestPostfixRelay(t *testing.T) {
	e := postfixFixture(t)
	plain := postfixMilterConfig(e.nsd.Addr, authservID)
	t.Cleanup(func() { e.milter.reload(plain) })
	e.milter.Reload(plain + "relays: [" + relayAddr + "/32]\n")
	front := startFront(t, e.smtpAddr)

	// A pass, delivered with the client behind the gateway in the headers.
	m := newMessage(t.Name()+"-pass", "user@pass.example.test")
	r, err := front.sendOne("192.0.2.10", "helo.example.test", m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stage != "" {
		t.Fatalf("the front refused the message: %s", r)
	}
	d := e.waitDelivered(t, m.ID)
	hs := d.receivedHeaders()
	want := []string{
		`Received-SPF: pass (mx.example.test: domain of user@pass.example.test designates 192.0.2.10 as permitted sender; received through relay 127.0.0.2) client-ip=192.0.2.10; envelope-from="user@pass.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism="ip4:192.0.2.0/24"; identity=mailfrom`,
		`Received-SPF: pass (mx.example.test: domain of helo.example.test designates 192.0.2.10 as permitted sender; received through relay 127.0.0.2) client-ip=192.0.2.10; envelope-from="postmaster@helo.example.test"; helo=helo.example.test; receiver=mx.example.test; mechanism="ip4:192.0.2.0/24"; identity=helo`,
		`Authentication-Results: mx.example.test; spf=pass (client 192.0.2.10 received through relay 127.0.0.2) smtp.helo=helo.example.test; spf=pass (client 192.0.2.10 received through relay 127.0.0.2) smtp.mailfrom=pass.example.test`,
	}
	if len(hs) < len(want)+2 {
		t.Fatalf("delivered header %q", hs)
	}
	for i, w := range want {
		if hs[i] != w {
			t.Errorf("header field %d:\n got %s\nwant %s", i, hs[i], w)
		}
	}
	// Below ours: the back's Received field from the gateway, then the
	// gateway's from the client, which the milter read.
	if got := hs[len(want)]; !strings.HasPrefix(got, "Received: from front.example.test (unknown [127.0.0.2])") {
		t.Errorf("field below ours %q, want the back's Received field", got)
	}
	if got := hs[len(want)+1]; !strings.HasPrefix(got, "Received: from helo.example.test (unknown [192.0.2.10])") || !strings.Contains(got, "by front.example.test (Postfix)") {
		t.Errorf("second Received field %q, want the gateway's", got)
	}
	if lines := e.milter.LogLines("spf decision", "client_ip=192.0.2.10", "relay=127.0.0.2", "sender=user@pass.example.test", "action=accept"); len(lines) != 1 {
		t.Errorf("decision lines %q, want one naming the client and the relay", lines)
	}

	// A fail, refused at the end of DATA: the gateway bounces it.
	m = newMessage(t.Name()+"-fail", "user@fail.example.test")
	r, err = front.sendOne("192.0.2.10", "helo.example.test", m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stage != "" {
		t.Fatalf("the front refused the message: %s", r)
	}
	qid := queuedAs.FindStringSubmatch(r.Text)
	if qid == nil {
		t.Fatalf("no queue id in the front's reply %q", r.Text)
	}
	bounced := regexp.MustCompile(qid[1] + `: to=<rcpt@example.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+,.* status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.7\.23 SPF fail: (.*) \(in reply to end of DATA command\)\)`)
	var refusal []string
	for deadline := time.Now().Add(60 * time.Second); refusal == nil; {
		log, _ := os.ReadFile(front.maillog)
		if refusal = bounced.FindStringSubmatch(string(log)); refusal == nil {
			if time.Now().After(deadline) {
				t.Fatalf("the front logged no 550 5.7.23 after DATA for %s", qid[1])
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !strings.Contains(refusal[1], "192.0.2.10") {
		t.Errorf("refusal %q does not name the client behind the gateway", refusal[1])
	}
	if lines := e.milter.LogLines("spf decision", "client_ip=192.0.2.10", "relay=127.0.0.2", "sender=user@fail.example.test", "action=reject"); len(lines) != 1 {
		t.Errorf("decision lines %q, want one refusal naming the client and the relay", lines)
	}
	if _, ok := e.findMessage(m.ID); ok {
		t.Error("the refused message was delivered")
	}
}
