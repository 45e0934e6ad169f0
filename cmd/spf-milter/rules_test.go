package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
)

// TestWarnExpiring: a load warns of the rules within a week of their
// until, before and after.
func TestWarnExpiring(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("t.yaml", []byte(`rules:
  - {name: soon, until: 2027-03-01, when: {listener: [a]}, skip: true}
  - {name: gone, until: 2027-02-20, when: {listener: [b]}, skip: true}
  - {name: later, until: 2027-06-01, when: {listener: [c]}, skip: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	warnExpiring(slog.New(slog.NewTextHandler(&buf, nil)), policy.New(cfg), time.Date(2027, 2, 25, 0, 0, 0, 0, time.UTC))
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="rule expires soon; from its until day on it no longer applies" rule=soon key=rules until=2027-03-01`,
		`level=WARN msg="rule has expired and no longer applies; remove it or move its until" rule=gone key=rules until=2027-02-20`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "later") {
		t.Errorf("a rule months away is warned of:\n%s", out)
	}
}
