package spf

import (
	"sync"

	"golang.org/x/net/idna"
)

// A busy receiver sees the same few hundred records all day; parsing each
// once saves most of the work of a warm check. Parsed records are never
// modified, so one copy serves every check.
const parseCacheSize = 4096

var parseCache = struct {
	sync.RWMutex
	m map[string]parsed
}{m: make(map[string]parsed)}

type parsed struct {
	rec *Record
	err error
}

// parseCached is Parse, remembered by record text.
func parseCached(txt string) (*Record, error) {
	parseCache.RLock()
	p, ok := parseCache.m[txt]
	parseCache.RUnlock()
	if ok {
		return p.rec, p.err
	}
	rec, err := Parse(txt)
	parseCache.Lock()
	if len(parseCache.m) >= parseCacheSize {
		// Dropping everything is crude but bounded and rare: the working
		// set of a receiver is far below the bound.
		clear(parseCache.m)
	}
	parseCache.m[txt] = parsed{rec, err}
	parseCache.Unlock()
	return rec, err
}

// explanations holds the parsed default explanations: one per configured
// text, so a handful, parsed once instead of on every fail.
var explanations sync.Map // string -> *MacroString

func defaultExplanation(text string) (*MacroString, error) {
	if m, ok := explanations.Load(text); ok {
		return m.(*MacroString), nil
	}
	m, err := ParseMacroString(text, true)
	if err != nil {
		return nil, err
	}
	explanations.Store(text, m)
	return m, nil
}

// idnaToASCII converts an internationalised domain name to its A-label
// form, which is what DNS holds.
func idnaToASCII(d string) (string, error) {
	return idna.Lookup.ToASCII(d)
}
