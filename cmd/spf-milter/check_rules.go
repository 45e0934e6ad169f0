package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf-milter/spf-milter/config"
	"github.com/spf-milter/spf-milter/milter"
	"github.com/spf-milter/spf-milter/policy"
	"github.com/spf-milter/spf-milter/spf"
)

// decideCheck applies cfg's policy to the outcome of a check as the
// milter would: the skip lists and rules first, then the decision and the
// shadow policy's. The client name a rule needs is looked up as the
// daemon does, unless the command line gives it; a failed lookup is
// reported on stderr and matches no rule.
func decideCheck(cfg *config.Config, o *checkOptions, r spf.Resolver, out *spf.Outcome, stderr io.Writer) *checkPolicy {
	p := policy.New(cfg)
	sender := o.sender
	if o.nullInput {
		sender = ""
	}
	m := policy.Message{ClientIP: o.ip, HELO: o.helo, Sender: sender, Listener: o.listener}
	if o.clientNameGiven {
		m.ConfirmedName = o.clientName
	} else if p.NeedsClientName() {
		looked, name := false, ""
		m.LookupName = func() string {
			if !looked {
				looked = true
				ctx, cancel := context.WithTimeout(context.Background(), cfg.DNS.CheckTimeout)
				defer cancel()
				var err error
				if name, err = policy.ConfirmName(ctx, r, o.ip); err != nil {
					fmt.Fprintf(stderr, "spf-milter check: client name lookup failed (client_name rules do not match): %s\n", printable(err.Error()))
				}
			}
			return name
		}
	}
	pol := &checkPolicy{}
	mailFrom, helo := out, (*spf.Outcome)(nil)
	if out.Identity == spf.IdentityHELO {
		mailFrom, helo = nil, out
	}
	if skip := p.Skip(m); skip != policy.NotSkipped {
		pol.skipped = skip.Key()
		pol.decision = policy.Decision{Action: config.Accept, DryRun: cfg.DryRun}
		if skip == policy.SkipRule {
			pol.rule = p.Rule(m).Name
		}
		pol.shadow = p.Shadow(m, nil, nil)
		return pol
	}
	pol.decision = p.Decide(m, out)
	pol.rule = pol.decision.Rule
	pol.headers = milter.HeaderFields(cfg, out)
	pol.shadow = p.Shadow(m, mailFrom, helo)
	return pol
}

// ruleEffect says what the rule did to the decision, for the Rule line.
func ruleEffect(d policy.Decision) string {
	s := ""
	if d.ByRule {
		s = " (its policy decided the action)"
	} else {
		s = " (it names no action for this result: the global policy decided)"
	}
	if !d.RuleUntil.IsZero() {
		s += ", until " + d.RuleUntil.Format(time.DateOnly)
	}
	return s
}
