package spf

import "strings"

// unescapeDNSText undoes the presentation form miekg/dns gives character-
// strings and names: "\DDD" is the octet DDD (decimal), "\X" is X.
func unescapeDNSText(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDecimalDigit(s[i+1]) && isDecimalDigit(s[i+2]) && isDecimalDigit(s[i+3]) {
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if n <= 255 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDecimalDigit(c byte) bool { return '0' <= c && c <= '9' }
