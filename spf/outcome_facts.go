package spf

// LookedUp reports whether the check asked DNS for a policy record at all.
// A none result comes either from a domain without a record or from a
// name not worth asking about (not a domain name, a single label), and
// the two call for different advice.
func (o *Outcome) LookedUp() bool {
	for _, s := range o.Trace {
		if s.Kind == StepRecord {
			return true
		}
	}
	return o.Record != ""
}
