package main

import (
	"log/slog"
	"time"

	"github.com/spf-milter/spf-milter/policy"
)

// warnExpiring warns, at every load and reload, of each rule whose until
// is within a week of now, before or after: an exception about to end,
// or that just ended, is worth a look.
func warnExpiring(log *slog.Logger, p *policy.Policy, now time.Time) {
	for _, e := range p.Expiring(now) {
		key := "rules"
		if e.Shadow {
			key = "shadow.rules"
		}
		msg := "rule expires soon; from its until day on it no longer applies"
		if e.Expired {
			msg = "rule has expired and no longer applies; remove it or move its until"
		}
		log.Warn(msg, "rule", e.Rule, "key", key, "until", e.Until.Format(time.DateOnly))
	}
}
