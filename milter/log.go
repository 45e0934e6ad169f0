package milter

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// decisionRecord is everything one log line about a message's decision
// carries, so that an admin can answer "why was this mail refused" from the
// log alone.
type decisionRecord struct {
	QueueID  string
	ClientIP netip.Addr
	HELO     string
	Sender   string
	// Outcome is the check that decided: the refusing one, else the MAIL
	// FROM one.
	Outcome *spf.Outcome
	// HELOOutcome is the HELO check when it was made and is not Outcome.
	HELOOutcome *spf.Outcome
	Decision    policy.Decision
	// AtRcpt reports that the refusal was moved to RCPT TO because some
	// recipients are never refused.
	AtRcpt   bool
	Duration time.Duration
	// Shadow is the shadow policy's decision.
	Shadow policy.ShadowDecision
}

// logDecision writes the one info line of a checked message.
func logDecision(l *slog.Logger, r decisionRecord) {
	attrs := []slog.Attr{
		slog.String("queue_id", r.QueueID),
		slog.String("client_ip", addrString(r.ClientIP)),
		slog.String("helo", r.HELO),
		slog.String("sender", senderString(r.Sender)),
	}
	if o := r.Outcome; o != nil {
		attrs = append(attrs,
			slog.String("identity", string(o.Identity)),
			slog.String("result", string(o.Result)))
		if o.Mechanism != "" {
			attrs = append(attrs, slog.String("mechanism", o.Mechanism))
		}
		if o.Problem != "" {
			attrs = append(attrs, slog.String("problem", o.Problem))
		}
	}
	if h := r.HELOOutcome; h != nil {
		attrs = append(attrs, slog.String("helo_result", string(h.Result)))
	}
	attrs = append(attrs, slog.String("action", string(r.Decision.Action)))
	if r.Decision.Rule != "" {
		attrs = append(attrs, slog.String("rule", r.Decision.Rule))
	}
	attrs = shadowAttrs(attrs, r.Shadow)
	if reply := r.Decision.Reply(); reply != "" {
		attrs = append(attrs, slog.String("reply", reply))
	}
	if r.AtRcpt {
		attrs = append(attrs, slog.Bool("at_rcpt", true))
	}
	attrs = append(attrs,
		slog.Bool("dry_run", r.Decision.DryRun),
		slog.Duration("duration", r.Duration))
	l.LogAttrs(context.Background(), slog.LevelInfo, "spf decision", attrs...)
}

// logSkip writes the info line of a client or message that is not checked
// and why.
func logSkip(l *slog.Logger, reason policy.Skip, queueID string, ip netip.Addr, helo, sender string, haveSender bool, rule string, shadow policy.ShadowDecision) {
	attrs := []slog.Attr{
		slog.String("reason", reason.String()),
		slog.String("queue_id", queueID),
		slog.String("client_ip", addrString(ip)),
		slog.String("helo", helo),
	}
	if haveSender {
		attrs = append(attrs, slog.String("sender", senderString(sender)))
	}
	attrs = append(attrs, slog.String("action", string(config.Accept)))
	if rule != "" {
		attrs = append(attrs, slog.String("rule", rule))
	}
	attrs = shadowAttrs(attrs, shadow)
	l.LogAttrs(context.Background(), slog.LevelInfo, "spf skipped", attrs...)
}

// shadowAttrs adds the shadow policy's action, and its rule, when the
// shadow decided.
func shadowAttrs(attrs []slog.Attr, d policy.ShadowDecision) []slog.Attr {
	if !d.Known {
		return attrs
	}
	attrs = append(attrs, slog.String("shadow_action", string(d.Action)))
	if d.Rule != "" {
		attrs = append(attrs, slog.String("shadow_rule", d.Rule))
	}
	return attrs
}

// logFailure writes the error line of an internal failure answered with a
// tempfail.
func logFailure(l *slog.Logger, stage string, cause any, queueID string, ip netip.Addr, sender string, stack []byte) {
	attrs := []slog.Attr{
		slog.String("stage", stage),
		slog.Any("error", cause),
		slog.String("queue_id", queueID),
		slog.String("client_ip", addrString(ip)),
		slog.String("sender", senderString(sender)),
		slog.String("reply", internalErrorReply),
	}
	if len(stack) > 0 {
		attrs = append(attrs, slog.String("stack", string(stack)))
	}
	l.LogAttrs(context.Background(), slog.LevelError, "spf internal failure, message deferred", attrs...)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.String()
}

// senderString shows the null sender as "<>" rather than as nothing.
func senderString(s string) string {
	if s == "" {
		return "<>"
	}
	return s
}
