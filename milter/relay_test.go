package milter

import (
	"cmp"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/dnstest"
	"github.com/spf-milter/spf-milter/spf"
)

// relayTestConfig has two relay networks, a client network skipped, a
// rule on the clients behind the relays, one on the relays' own network
// (which must never apply: rules match the relay's client) and one on
// the listener (which is the connection's). A none is refused, to show
// the policy's none action for a message whose client is unknown.
const relayTestConfig = `authserv_id: mx.example.net
relays: [198.51.100.0/24, "2001:db8:5::/48"]
trusted_networks: [127.0.0.0/8]
skip_clients: [192.0.2.99/32]
policy:
  mailfrom: {none: reject}
why: {url: "https://mx.example.net/why"}
rules:
  - name: origin-grace
    when: {client: [192.0.2.66/32]}
    mailfrom: {fail: accept}
  - name: relay-net
    when: {client: [198.51.100.0/24]}
    skip: true
  - name: gateway
    when: {listener: [gateway]}
    mailfrom: {softfail: reject}
`

// receivedField builds a Received field as Postfix writes it, folded with CRLF.
func receivedField(helo, addr string) hdr {
	return hdr{"Received", "from " + helo + " (unknown [" + addr + "])\r\n\tby gw.example.net (Postfix) with ESMTP id 4NxYz12abc\r\n\tfor <bob@example.net>; Tue,  3 Dec 2024 10:11:12 +0100 (CET)"}
}

// TestRelays drives the daemon through go-milter's client as Postfix
// does, with a relay as the connecting client: the message is checked
// for the client the relay's Received field names, decided at the end of
// the headers and answered at the end of the message.
func TestRelays(t *testing.T) {
	cfg, err := config.Parse("relays.yaml", []byte(relayTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	z := testZone(t)
	if err := z.Add(`fail2.example. TXT "v=spf1 ip4:198.51.100.0/24 -all"`); err != nil {
		t.Fatal(err)
	}
	srv := dnstest.StartServer(t, z)
	r, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	logs, rec := &logBuffer{}, &recorder{}
	rt := &Runtime{
		Config:    cfg,
		Checker:   &spf.Checker{Resolver: r, Receiver: cfg.Receiver, Timeout: 10 * time.Second},
		Log:       slog.New(slog.NewJSONHandler(logs, nil)),
		Decisions: rec,
	}
	h := startServer(t, func() *Runtime { return rt }, srv, logs)

	const relay = "198.51.100.7"
	// Our own MTA's hop from the relay, which Postfix may pass on.
	ours := hdr{"Received", "from gw.example.net (gw.example.net [198.51.100.7])\n\tby mx.example.net (Postfix) with ESMTPS id 4AbC; Tue,  3 Dec 2024 10:11:13 +0100 (CET)"}
	tooMany := []hdr{}
	for range maxRelayHops + 1 {
		tooMany = append(tooMany, ours)
	}
	tooMany = append(tooMany, receivedField(passHELO, "192.0.2.1"))

	tests := []struct {
		name      string
		relay     string // the connecting client; relay when empty
		listener  string
		from      string
		mailMacro []string
		headers   []hdr
		end       string // the reply at the end of the message
		// client and helo are the client recorded; result its MAIL FROM
		// result ("" when skipped); skip the skip reason's key, rule the
		// rule recorded.
		client, helo, result, skip, rule string
		// inRSPF are texts of the Received-SPF field inserted; none when
		// empty.
		inRSPF, inAR []string
		problem      string
	}{
		{name: "pass behind the relay", from: "alice@pass.example",
			headers: []hdr{receivedField(passHELO, "192.0.2.1"), {"Subject", "hi"}},
			end:     "continue", client: "192.0.2.1", helo: passHELO, result: "pass",
			inRSPF: []string{"pass (mx.example.net: domain of alice@pass.example designates 192.0.2.1 as permitted sender; received through relay 198.51.100.7)", "client-ip=192.0.2.1;", "helo=mx.pass.example;"},
			inAR:   []string{"spf=pass (client 192.0.2.1 received through relay 198.51.100.7) smtp.mailfrom=pass.example"}},
		{name: "fail refused at the end of the message", from: "alice@fail.example",
			headers: []hdr{receivedField(passHELO, "192.0.2.1")},
			end:     "550 5.7.23", client: "192.0.2.1", helo: passHELO, result: "fail"},
		{name: "the relay's own address would pass: not checked", from: "alice@fail2.example",
			headers: []hdr{receivedField(passHELO, "192.0.2.1")},
			end:     "550 5.7.23", client: "192.0.2.1", helo: passHELO, result: "fail"},
		{name: "our hop and a second relay walked past", from: "alice@pass.example",
			headers: []hdr{ours, {"DKIM-Signature", "v=1; a=rsa-sha256"},
				{"Received", "from gw2.example.net (gw2.example.net [IPv6:2001:db8:5::2])\n\tby gw.example.net (Postfix) with ESMTPS id 4XyZ; Tue,  3 Dec 2024 10:11:12 +0100 (CET)"},
				receivedField(passHELO, "IPv6:2001:db8::25"), receivedField("spoofed.example", "192.0.2.200")},
			end: "continue", client: "2001:db8::25", helo: passHELO, result: "pass",
			inRSPF: []string{`client-ip="2001:db8::25";`, "received through relay 198.51.100.7"}},
		{name: "IPv6 relay", relay: "2001:db8:5::7", from: "alice@pass.example",
			headers: []hdr{receivedField(passHELO, "192.0.2.1")},
			end:     "continue", client: "192.0.2.1", helo: passHELO, result: "pass",
			inRSPF: []string{"received through relay 2001:db8:5::7"}},
		{name: "no Received field: none, the policy's none action", from: "alice@pass.example",
			headers: []hdr{{"Subject", "hi"}},
			end:     "550 5.7.1", result: "none", problem: "no Received field"},
		{name: "a trusted address is not believed", from: "alice@pass.example",
			headers: []hdr{receivedField("localhost", "127.0.0.1")},
			end:     "550 5.7.1", result: "none", problem: "Received field 1 names 127.0.0.1, in trusted_networks: not believed"},
		{name: "no guess on two addresses", from: "alice@pass.example",
			headers: []hdr{{"Received", "from x (unknown [192.0.2.1] [192.0.2.2]) by gw.example.net"}},
			end:     "550 5.7.1", result: "none", problem: "more than one address"},
		{name: "only relays' hops", from: "alice@pass.example",
			headers: []hdr{ours},
			end:     "550 5.7.1", result: "none", problem: "no Received field names a client outside relays"},
		{name: "too many hops", from: "alice@pass.example",
			headers: tooMany,
			end:     "550 5.7.1", result: "none", problem: "more than 50 Received fields of relays"},
		{name: "skip_clients matches the client behind the relay", from: "alice@fail.example",
			headers: []hdr{receivedField(passHELO, "192.0.2.99")},
			end:     "continue", client: "192.0.2.99", helo: passHELO, skip: "skip_clients"},
		{name: "the relay authenticated: its client is checked", from: "alice@fail.example",
			mailMacro: []string{"{auth_authen}", "gateway"},
			headers:   []hdr{receivedField(passHELO, "192.0.2.1")},
			end:       "550 5.7.23", client: "192.0.2.1", helo: passHELO, result: "fail"},
		{name: "the client authenticated to the relay: skipped", from: "alice@fail.example",
			headers: []hdr{{"Received", "from laptop (unknown [192.0.2.1])\n\tby gw.example.net (Postfix) with ESMTPSA id 4NxYz12abc; Tue,  3 Dec 2024 10:11:12 +0100"}},
			end:     "continue", client: "192.0.2.1", helo: "laptop", skip: "authenticated"},
		{name: "a client rule matches the client behind the relay", from: "alice@fail.example",
			headers: []hdr{receivedField("none.example", "192.0.2.66")},
			end:     "continue", client: "192.0.2.66", helo: "none.example", result: "fail", rule: "origin-grace",
			inRSPF: []string{"fail (", "client-ip=192.0.2.66;"}},
		{name: "a listener rule matches the connection", listener: "gateway", from: "alice@softfail.example",
			headers: []hdr{receivedField(passHELO, "192.0.2.1")},
			end:     "550 5.7.1", client: "192.0.2.1", helo: passHELO, result: "softfail", rule: "gateway"},
		{name: "forged Received-SPF removed", from: "alice@pass.example",
			headers: []hdr{{"Received-SPF", "pass (gw.example.net: forged)"}, receivedField(passHELO, "192.0.2.1")},
			end:     "continue", client: "192.0.2.1", helo: passHELO, result: "pass",
			inRSPF: []string{"client-ip=192.0.2.1;"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			ip := cmp.Or(tt.relay, relay)
			cs := h.open()
			if err := cs.Macros(gomilter.CodeConn, "{daemon_name}", cmp.Or(tt.listener, "smtpd"), "j", "mx.example.net"); err != nil {
				t.Fatal(err)
			}
			family := gomilter.FamilyInet
			if strings.Contains(ip, ":") {
				family = gomilter.FamilyInet6
			}
			h.mustContinue("connect", must(t)(cs.Conn("gw.example.net", family, 40000, ip)))
			h.mustContinue("helo", must(t)(cs.Helo("gw.example.net")))
			o := h.send(cs, message{from: tt.from, mailMacro: tt.mailMacro, rcpts: []string{"bob@example.net"}, headers: tt.headers})
			if got := reply(o.mail); got != "continue" {
				t.Fatalf("MAIL FROM answered %q, want continue: a relay's message is answered after DATA", got)
			}
			if got := reply(o.end); !strings.HasPrefix(got, tt.end) {
				t.Errorf("end of message answered %q, want %s", got, tt.end)
			}
			ins := inserted(t, o.mods)
			var rspf, ar string
			for _, f := range ins {
				switch f.name {
				case "Received-SPF":
					if rspf == "" { // the MAIL FROM one comes first
						rspf = f.value
					}
				case "Authentication-Results":
					ar = f.value
				}
			}
			for _, want := range tt.inRSPF {
				if !strings.Contains(rspf, want) {
					t.Errorf("Received-SPF %q lacks %q", rspf, want)
				}
			}
			for _, want := range tt.inAR {
				if !strings.Contains(ar, want) {
					t.Errorf("Authentication-Results %q lacks %q", ar, want)
				}
			}
			if tt.end != "continue" || tt.skip != "" {
				if len(ins) != 0 {
					t.Errorf("headers inserted %q, want none", ins)
				}
			}
			if tt.name == "forged Received-SPF removed" {
				if got := changes(o.mods); len(got) != 1 || !strings.Contains(got[0], "Received-SPF") {
					t.Errorf("header changes %q, want the forged Received-SPF deleted", got)
				}
			}
			if strings.HasPrefix(tt.end, "550 5.7.23") && !strings.Contains(o.end.SMTPText, "i="+tt.client) {
				t.Errorf("refusal %q does not link the why page for %s", o.end.SMTPText, tt.client)
			}

			got := rec.decisions()
			if len(got) != i+1 {
				t.Fatalf("%d decisions recorded, want %d", len(got), i+1)
			}
			d := got[i]
			if d.Relay != netip.MustParseAddr(ip) {
				t.Errorf("recorded relay %v, want %s", d.Relay, ip)
			}
			if tt.client != "" && (d.ClientIP != netip.MustParseAddr(tt.client) || d.HELO != tt.helo) {
				t.Errorf("recorded client %v HELO %q, want %s %q", d.ClientIP, d.HELO, tt.client, tt.helo)
			}
			if tt.client == "" && d.ClientIP.IsValid() {
				t.Errorf("recorded client %v, want none", d.ClientIP)
			}
			if d.Skipped.Key() != tt.skip {
				t.Errorf("recorded skip %q, want %q", d.Skipped.Key(), tt.skip)
			}
			result := ""
			if d.MailFrom != nil {
				result = string(d.MailFrom.Result)
				if d.MailFrom.Relay != netip.MustParseAddr(ip) {
					t.Errorf("outcome relay %v, want %s", d.MailFrom.Relay, ip)
				}
				if !strings.Contains(d.MailFrom.Problem, tt.problem) {
					t.Errorf("problem %q, want %q", d.MailFrom.Problem, tt.problem)
				}
				if tt.problem != "" && d.MailFrom.ProblemKind != spf.ProblemNoOrigin {
					t.Errorf("problem kind %q", d.MailFrom.ProblemKind)
				}
			}
			if result != tt.result {
				t.Errorf("recorded result %q, want %q", result, tt.result)
			}
			if d.Rule != tt.rule {
				t.Errorf("recorded rule %q, want %q", d.Rule, tt.rule)
			}
			if tt.skip == "" && d.Decision.Refuses() != (tt.end != "continue") {
				t.Errorf("recorded decision %+v", d.Decision)
			}
			cs.Close()
		})
	}

	// The decision lines name the client checked and the relay.
	lines := logs.lines(t, "spf decision")
	if len(lines) == 0 {
		t.Fatal("no decision logged")
	}
	if l := lines[0]; l["client_ip"] != "192.0.2.1" || l["relay"] != relay || l["helo"] != passHELO {
		t.Errorf("decision line %v", l)
	}
	if n := len(logs.lines(t, "spf client behind relay unknown, result none")); n != 5 {
		t.Errorf("%d lines on unknown clients, want 5", n)
	}
}

// TestNotARelay: a client outside relays is checked as ever, at MAIL
// FROM, whatever Received fields its message carries.
func TestNotARelay(t *testing.T) {
	cfg := testConfig()
	cfg.Relays = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	h := newHarness(t, cfg, testZone(t))
	cs := h.connect("192.0.2.1", passHELO)
	o := h.send(cs, message{from: "alice@fail.example", rcpts: []string{"bob@example.net"}, headers: []hdr{receivedField(passHELO, "192.0.2.1")}})
	if got := reply(o.mail); !strings.HasPrefix(got, "550 5.7.23") {
		t.Errorf("MAIL FROM answered %q, want refused", got)
	}
	cs = h.connect("192.0.2.1", passHELO)
	o = h.send(cs, message{from: "alice@pass.example", rcpts: []string{"bob@example.net"}, headers: []hdr{receivedField("x", "198.51.100.200")}})
	for _, f := range inserted(t, o.mods) {
		if strings.Contains(f.value, "relay") {
			t.Errorf("%s: %q names a relay", f.name, f.value)
		}
	}
}
