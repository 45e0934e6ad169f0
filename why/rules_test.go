package why

import (
	"net/http"
	"strings"
	"testing"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/internal/htmltest"
	"github.com/spf-milter/spf-milter/policy"
)

// TestSiteRules: the page names the rule that changed the action, and
// says when a rule on the listener, which it cannot know, could apply.
func TestSiteRules(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`rules:
  - name: submission
    when: {listener: [submission], client: [198.51.100.0/24]}
    skip: true
  - name: partner-grace
    when: {sender_domain: [soft.example, syntax.example]}
    until: 2027-03-01
    mailfrom: {softfail: quarantine, permerror: accept}
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Policy.MailFrom["permerror"] = config.Reject
	pol := policy.New(cfg)
	tests := []struct {
		name, sender, ip string
		rule             string // the site-rule paragraph, "" for none
		listener         bool
	}{
		{"rule accepts permerror", "joe@syntax.example", "192.0.2.1",
			"A rule of the receiving site applies: this site accepts permerror from syntax.example (rule partner-grace) until 2027-03-01.", false},
		{"rule quarantines softfail", "joe@soft.example", "192.0.2.1",
			"A rule of the receiving site applies: this site quarantines softfail from soft.example (rule partner-grace) until 2027-03-01.", false},
		{"no rule", "joe@topel.com", "192.0.2.1", "", false},
		{"listener rule could apply", "joe@topel.com", "198.51.100.7", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTest(t, testZone(t), Options{CacheTTL: -1, Policy: func() *policy.Policy { return pol }})
			rec := get(h, whyURL(tt.sender, tt.ip, ""), "192.0.2.250:1")
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			doc := htmltest.Parse(t, rec.Body.String())
			got := ""
			if n := htmltest.ByID(doc, "site-rule"); n != nil {
				got = strings.Join(strings.Fields(htmltest.Text(n)), " ")
			}
			if got != tt.rule {
				t.Errorf("site rule %q, want %q", got, tt.rule)
			}
			if got := htmltest.ByID(doc, "site-listener") != nil; got != tt.listener {
				t.Errorf("listener paragraph %v, want %v", got, tt.listener)
			}
		})
	}
}
