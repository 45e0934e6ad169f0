package load

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/miekg/dns"

	"github.com/spf-milter/spf-milter/spf"
)

// TestZoneResults checks the benchmark's data itself: every case, from
// every one of its addresses, gets the SPF results and deciding mechanism
// it claims, from spf-milter's evaluator over the real DNS server.
func TestZoneResults(t *testing.T) {
	srv, err := StartDNSServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := spf.NewDNSResolver(spf.DNSOptions{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checker := &spf.Checker{Resolver: res, Receiver: receiverName}
	for _, c := range Cases {
		for _, ipText := range c.IPs {
			t.Run(c.Name+"/"+ipText, func(t *testing.T) {
				ip := netip.MustParseAddr(ipText)
				mf := checker.CheckMailFrom(context.Background(), ip, c.Sender, c.HELO)
				if string(mf.Result) != c.MailFrom || mf.Mechanism != c.Mechanism {
					t.Errorf("MAIL FROM: got %s by %q (%s), want %s by %q", mf.Result, mf.Mechanism, mf.Problem, c.MailFrom, c.Mechanism)
				}
				h := checker.CheckHELO(context.Background(), ip, c.HELO)
				if string(h.Result) != c.HELOResult {
					t.Errorf("HELO: got %s (%s), want %s", h.Result, h.Problem, c.HELOResult)
				}
			})
		}
	}
}

// TestDNSServerNegative checks the negative answers resolvers cache: the
// apex's SOA in the authority section, and NXDOMAIN only for names that
// do not exist (empty non-terminals exist).
func TestDNSServerNegative(t *testing.T) {
	srv, err := StartDNSServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		soa   string // owner of the SOA wanted in authority; "" for an answer
	}{
		{"_spf.google.example.", dns.TypeTXT, 0, ""},
		{"mail-yw1-f172.google.example.", dns.TypeTXT, 0, "google.example."},
		{"o1.ptr1234.sendgrid.example.", dns.TypeTXT, 3, "sendgrid.example."},
		{"outbound.protection.outlook.example.", dns.TypeTXT, 0, "outlook.example."},
		{"nowhere.invalid.", dns.TypeTXT, 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := exchange(srv.Addr(), tt.name, tt.qtype)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode %d, want %d", resp.Rcode, tt.rcode)
			}
			if tt.soa == "" {
				if tt.rcode == 0 && len(resp.Answer) == 0 {
					t.Errorf("no answer")
				}
				return
			}
			if len(resp.Answer) != 0 || len(resp.Ns) != 1 || resp.Ns[0].Header().Name != tt.soa {
				t.Errorf("answer %v, authority %v; want no answer and the SOA of %s", resp.Answer, resp.Ns, tt.soa)
			}
		})
	}
}

// exchange asks the server over plain UDP, without EDNS.
func exchange(addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	return resp, err
}

// goodMessage builds the Message a target of kind k answers for c when it is
// right.
func goodMessage(k Kind, c *Case) *Message {
	m := &Message{Case: c, ClientIP: c.IPs[0], Mail: &milter.Action{Code: milter.ActContinue}, End: &milter.Action{Code: milter.ActContinue}}
	ins := func(name, value string) milter.ModifyAction {
		return milter.ModifyAction{Code: milter.ActInsertHeader, HeaderName: name, HeaderValue: value}
	}
	refused := c.MailFrom == "fail" && k != KindNull
	if refused {
		m.Mail = &milter.Action{Code: milter.ActReplyCode, SMTPCode: 550, SMTPText: "5.7.23 fail-corp.example does not designate 203.0.113.66"}
		m.End = nil
		return m
	}
	switch k {
	case KindNull:
		m.Mods = []milter.ModifyAction{ins(NullHeader[0], NullHeader[1])}
	case KindPySPF:
		m.Mods = []milter.ModifyAction{ins("Authentication-Results", receiverName+";\n\tspf="+c.MailFrom+" (sender SPF authorized) smtp.mailfrom="+c.Domain()+"\n\t(client-ip="+c.IPs[0]+")")}
	case KindSPFMilter:
		mech := ""
		if c.Mechanism != "" {
			mech = ` mechanism="` + c.Mechanism + `";`
		}
		m.Mods = []milter.ModifyAction{
			ins("Authentication-Results", receiverName+"; spf="+c.MailFrom+" smtp.mailfrom="+c.Domain()+";\n spf="+c.HELOResult+" smtp.helo="+c.HELO),
			ins("Received-SPF", c.HELOResult+" (x) client-ip="+c.IPs[0]+"; envelope-from=\"postmaster@"+c.HELO+"\"; helo="+c.HELO+";\n receiver=r; identity=helo"),
			ins("Received-SPF", c.MailFrom+" (x) client-ip="+c.IPs[0]+"; envelope-from=\""+c.Sender+"\"; helo="+c.HELO+";\n receiver=r;"+mech+" identity=mailfrom"),
		}
	}
	return m
}

func TestVerify(t *testing.T) {
	pass, fail := &Cases[0], &Cases[7]
	if pass.MailFrom != "pass" || fail.MailFrom != "fail" {
		t.Fatal("Cases changed order: fix the test")
	}
	type mutate func(m *Message)
	tests := []struct {
		name string
		kind Kind
		c    *Case
		bad  mutate // nil: the good message, which must verify
	}{
		{"null pass", KindNull, pass, nil},
		{"null fail is accepted too", KindNull, fail, nil},
		{"null without header", KindNull, pass, func(m *Message) { m.Mods = nil }},
		{"null rejecting", KindNull, fail, func(m *Message) { m.Mail = &milter.Action{Code: milter.ActReject} }},
		{"spf pass", KindSPFMilter, pass, nil},
		{"spf fail", KindSPFMilter, fail, nil},
		{"spf fail accepted", KindSPFMilter, fail, func(m *Message) { m.Mail = &milter.Action{Code: milter.ActContinue} }},
		{"spf fail with the wrong code", KindSPFMilter, fail, func(m *Message) { m.Mail.SMTPText = "5.7.1 no" }},
		{"spf pass refused", KindSPFMilter, pass, func(m *Message) {
			m.Mail = &milter.Action{Code: milter.ActReplyCode, SMTPCode: 550, SMTPText: "5.7.23 x"}
		}},
		{"spf wrong result", KindSPFMilter, pass, func(m *Message) {
			m.Mods[2].HeaderValue = strings.Replace(m.Mods[2].HeaderValue, "pass (", "neutral (", 1)
		}},
		{"spf wrong mechanism", KindSPFMilter, pass, func(m *Message) {
			m.Mods[2].HeaderValue = strings.Replace(m.Mods[2].HeaderValue, "include:_spf", "include:_x", 1)
		}},
		{"spf wrong sender", KindSPFMilter, pass, func(m *Message) {
			m.Mods[2].HeaderValue = strings.Replace(m.Mods[2].HeaderValue, "alice@", "bob@", 1)
		}},
		{"spf wrong HELO result", KindSPFMilter, pass, func(m *Message) {
			m.Mods[1].HeaderValue = "pass" + strings.TrimPrefix(m.Mods[1].HeaderValue, "none")
		}},
		{"spf headers in the wrong order", KindSPFMilter, pass, func(m *Message) { m.Mods[0], m.Mods[2] = m.Mods[2], m.Mods[0] }},
		{"spf header appended", KindSPFMilter, pass, func(m *Message) { m.Mods[0].Code = milter.ActAddHeader }},
		{"spf tempfail at end", KindSPFMilter, pass, func(m *Message) { m.End = &milter.Action{Code: milter.ActTempFail} }},
		{"pyspf pass", KindPySPF, pass, nil},
		{"pyspf fail", KindPySPF, fail, nil},
		{"pyspf wrong result", KindPySPF, pass, func(m *Message) {
			m.Mods[0].HeaderValue = strings.Replace(m.Mods[0].HeaderValue, "spf=pass", "spf=none", 1)
		}},
		{"pyspf two headers", KindPySPF, pass, func(m *Message) { m.Mods = append(m.Mods, m.Mods[0]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := goodMessage(tt.kind, tt.c)
			if tt.bad != nil {
				tt.bad(m)
			}
			err := tt.kind.Verify(m)
			if tt.bad == nil && err != nil {
				t.Errorf("good message refused: %v", err)
			}
			if tt.bad != nil && err == nil {
				t.Errorf("wrong message verified")
			}
		})
	}
}

// TestSmoke is the CI smoke test of the load benchmark: a short run of the
// tool against every target available here (pyspf-milter only when
// installed) must see no failed session and no wrong verdict. It asserts
// no timing: the figures of a loaded CI machine mean nothing.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the milters")
	}
	ctx := context.Background()
	dir := t.TempDir()
	bins := testBinaries(t)

	t.Run("wrong verdicts are counted", func(t *testing.T) {
		// The do-nothing milter accepts everything and writes no SPF
		// header: judged as spf-milter, every message is wrong.
		p, err := StartNullMilter(bins.NullMilter, dir, "null check", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		row := drive(ctx, p, target{role: RoleSPF, name: "misjudged", kind: KindSPFMilter}, 4, 0, 40)
		if row.Messages != 40 || row.Errors != 40 {
			t.Errorf("%d messages, %d errors; want 40 and 40 (samples: %q)", row.Messages, row.Errors, row.ErrorSamples)
		}
	})

	var progress bytes.Buffer
	o := Options{
		Conns:     []int{8},
		Messages:  300,
		Warmup:    50,
		ColdDelay: 2 * time.Millisecond,
		Idle:      50,
		PySPF:     true,
		Bin:       bins,
		Dir:       dir,
		Progress:  &progress,
	}
	r, err := Run(ctx, o)
	var table bytes.Buffer
	if r != nil {
		r.Markdown(&table)
	}
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), table.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := r.Errors(); n != 0 {
		t.Errorf("%d errors", n)
	}
	measured := map[string]bool{}
	for _, row := range r.Rows {
		if row.Skipped != "" {
			if row.Role != RolePySPF && row.Role != RolePySPFCold && row.Role != RoleSPFUnbuffered {
				t.Errorf("%s skipped: %s", row.Target, row.Skipped)
			}
			continue
		}
		measured[row.Role] = true
		if row.Messages != o.Messages {
			t.Errorf("%s: %d messages, want %d", row.Target, row.Messages, o.Messages)
		}
	}
	for _, role := range []string{RoleSPF, RoleNull, RoleNullBuffered, RoleSPFCold} {
		if !measured[role] {
			t.Errorf("no row for %s", role)
		}
	}
	if PySPFInstalled() && !measured[RolePySPF] {
		t.Errorf("pyspf-milter is installed but was not measured")
	}
	for _, row := range r.Idle {
		if row.Skipped == "" && (row.RSSIdle <= 0 || row.Errors != 0) {
			t.Errorf("%s idle: RSS %d, %d errors", row.Target, row.RSSIdle, row.Errors)
		}
	}
}
