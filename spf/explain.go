package spf

import "time"

// explain computes the explanation of a fail result (RFC 7208 §6.2): the
// exp= text of the record that decided, or the default explanation when
// there is none or anything about it goes wrong.
func (e *evaluation) explain(v verdict) string {
	env := e.env(v.domain)
	env.Now = time.Now()
	if v.rec != nil && v.rec.Exp != nil {
		if text, ok := e.expText(v.rec.Exp, env); ok {
			e.step(Step{Kind: StepExp, Domain: v.domain, Term: written(v.rec.Exp), Detail: text})
			return text
		}
	}
	def := e.c.Explanation
	if def == "" {
		def = DefaultExplanation
	}
	ms, err := e.c.defaultExplanation(def)
	if err != nil {
		return def
	}
	return ms.Expand(env)
}

func (e *evaluation) expText(exp *Modifier, env *MacroEnv) (string, bool) {
	target, ok := e.target(exp.Value, env.Domain)
	if !ok {
		return "", false
	}
	txts, err := e.c.Resolver.LookupTXT(e.ctx, target)
	if err != nil || len(txts) != 1 {
		detail := "not exactly one TXT record"
		if err != nil {
			detail = err.Error()
		}
		e.step(Step{Kind: StepExp, Domain: env.Domain, Term: written(exp), Detail: "ignored: " + detail})
		return "", false
	}
	ms, err := ParseMacroString(txts[0], true)
	if err != nil {
		e.step(Step{Kind: StepExp, Domain: env.Domain, Term: written(exp), Detail: "ignored: " + err.Error()})
		return "", false
	}
	return ms.Expand(env), true
}
