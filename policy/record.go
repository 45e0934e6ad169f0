package policy

import (
	"net/netip"
	"time"

	"github.com/spf-milter/spf-milter/spf"
)

// DecisionRecorder receives the decision on every message a session
// finishes, checked or skipped, for the decision log that "spf-milter
// replay" reads. RecordDecision runs on the session's goroutine: it must
// not block, and cannot fail the message.
type DecisionRecorder interface {
	RecordDecision(MessageDecision)
}

// MessageDecision is what a session knows of one message's decision:
// enough to apply another policy to the same checks (Policy.Skip,
// Policy.DecideMessage).
type MessageDecision struct {
	// Time is when the session finished with the decision.
	Time    time.Time
	QueueID string
	// ClientIP and HELO are those of the client checked: for a message
	// that came through a trusted relay, the client the relay received
	// it from, and Relay is the relay.
	ClientIP netip.Addr
	HELO     string
	Relay    netip.Addr
	// Sender is the MAIL FROM address, "" for the null sender.
	Sender string
	// Authenticated reports that the client authenticated
	// ({auth_authen}), whether or not that skipped the check.
	Authenticated bool
	// Skipped says why the message went through unchecked; NotSkipped
	// for a checked message.
	Skipped Skip
	// MailFrom and HELOCheck are the checks made, nil when not made.
	MailFrom, HELOCheck *spf.Outcome
	// Decision is the decision taken and DecidedBy the outcome it came
	// from (nil for a skipped message).
	Decision  Decision
	DecidedBy *spf.Outcome
	// AtRcpt reports that the refusal was given at RCPT TO.
	AtRcpt   bool
	Duration time.Duration
	// Rule names the rule that applied: the one that skipped the message
	// (Skipped is SkipRule) or Decision.Rule; "" when none.
	Rule string
	// Listener is the {daemon_name}, given when some rule has a listener
	// condition; ClientName the confirmed client name, given
	// (ClientNameKnown) when some rule has a client_name condition and
	// the name was looked up.
	Listener        string
	ClientName      string
	ClientNameKnown bool
	// Shadow is the shadow policy's decision, not Known when there is
	// none.
	Shadow ShadowDecision
}
