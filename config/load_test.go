package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf-milter/spf-milter/spf"
)

// Allowed lists as they appear in error lines, to keep the table readable.
const (
	topKeys     = "listen, socket_mode, authserv_id, receiver, dns, policy, trusted_networks, skip_authenticated, dry_run, headers, log, explanation, replies, skip_senders, skip_clients, relays, never_refuse, session, metrics, why, decision_log, rules, shadow"
	resultKeys  = "none, neutral, pass, fail, softfail, temperror, permerror"
	listenForm  = "inet:HOST:PORT, inet6:[HOST]:PORT, unix:/PATH, inet:PORT@HOST"
	durForm     = "a Go duration such as 5s or 1m30s"
	netForm     = "an IP network such as 192.0.2.0/24 or 2001:db8::/32, or one IP address"
	macroForm   = "text with SPF macros such as %{s}, %{i}, %{d}, %{r}, and %% for a %"
	modeForm    = `an octal mode in quotes, "0000" to "0777"`
	sizeForm    = "a whole number of entries from 0 (no cache) to 10000000"
	logPathForm = `an absolute file path such as /var/log/spf-milter/decisions.jsonl; "" for no decision log`
	logSizeForm = "a size such as 100MB, 512KiB or 2GB, from 1KB to 1TB (KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024)"
	logKeepForm = "a whole number of rotated files from 0 (none) to 1000"
	bytesForm   = "a size such as 32MiB, 64MB or 1GiB, from 1MiB to 64GiB (KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024)"
	httpForm    = `HOST:PORT with an IP address or localhost for HOST, such as 127.0.0.1:9095 or [::1]:9095; "" for no listener`
	whyKeys     = "listen, url, rate, concurrent, cache"
	whyURLForm  = `an absolute http or https URL without query or fragment, such as https://mx.example.net/why; "" for no link`
	whyRateForm = "a whole number of requests a minute per client, from 1 to 10000"
	whyConcForm = "a whole number of checks, from 1 to 1000"
	whyTTLForm  = "a Go duration such as 30s or 5m, at most 1h; 0 for no cache"
)

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		want string
	}{
		{
			name: "unknown top key",
			file: "listen: inet:127.0.0.1:8895\nlistn: inet:127.0.0.1:25\n",
			want: `t.yaml:2: listn: unknown key; did you mean "listen"? (allowed: ` + topKeys + ")",
		},
		{
			name: "unknown key far from any known one",
			file: "frobnicate: 1\n",
			want: "t.yaml:1: frobnicate: unknown key (allowed: " + topKeys + ")",
		},
		{
			name: "unknown nested key",
			file: "dns:\n  timeout: 5s\n  retries: 3\n",
			want: "t.yaml:3: dns.retries: unknown key (allowed: servers, timeout, check_timeout, cache_size, cache_bytes)",
		},
		{
			name: "list where a mapping is needed",
			file: "policy:\n  mailfrom: [reject]\n",
			want: `t.yaml:2: policy.mailfrom: bad value "[reject]": a list, where a mapping of keys is needed (allowed: ` + resultKeys + ")",
		},
		{
			name: "mapping where a list is needed",
			file: "trusted_networks:\n  lan: 10.0.0.0/8\n",
			want: `t.yaml:2: trusted_networks: bad value "{lan: 10.0.0.0/8}": a mapping, where a list is needed (write [] for none) (allowed: a list, each item ` + netForm + ")",
		},
		{
			name: "list where a single value is needed",
			file: "listen: [inet:127.0.0.1:8895]\n",
			want: `t.yaml:1: listen: bad value "[inet:127.0.0.1:8895]": a list, where a single value is needed (allowed: ` + listenForm + ")",
		},
		{
			name: "bad action",
			file: "policy:\n  mailfrom:\n    fail: bounce\n",
			want: `t.yaml:3: policy.mailfrom.fail: bad value "bounce": unknown value (allowed: accept, reject, tempfail, quarantine)`,
		},
		{
			name: "action in the wrong case",
			file: "policy:\n  helo: {fail: Reject}\n",
			want: `t.yaml:2: policy.helo.fail: bad value "Reject": unknown value (allowed: accept, reject, tempfail, quarantine)`,
		},
		{
			name: "bad result key in policy",
			file: "policy:\n  mailfrom: {hardfail: reject}\n",
			want: "t.yaml:2: policy.mailfrom.hardfail: unknown key (allowed: " + resultKeys + ")",
		},
		{
			name: "bad duration",
			file: "session:\n  idle_timeout: 5 minutes\n",
			want: `t.yaml:2: session.idle_timeout: bad value "5 minutes": not a duration (allowed: ` + durForm + ")",
		},
		{
			name: "duration without unit",
			file: "dns: {timeout: 5}\n",
			want: `t.yaml:1: dns.timeout: bad value "5": a number needs a unit (allowed: ` + durForm + ")",
		},
		{
			name: "zero duration",
			file: "dns:\n  check_timeout: 0s\n",
			want: `t.yaml:2: dns.check_timeout: bad value "0s": must be more than zero (allowed: ` + durForm + ")",
		},
		{
			name: "negative duration",
			file: "session: {max_duration: -1h}\n",
			want: `t.yaml:1: session.max_duration: bad value "-1h": must be more than zero (allowed: ` + durForm + ")",
		},
		{
			name: "listen without type",
			file: "listen: 127.0.0.1:8895\n",
			want: `t.yaml:1: listen: bad value "127.0.0.1:8895": unknown socket type "127.0.0.1" (allowed: ` + listenForm + ")",
		},
		{
			name: "listen port only",
			file: "listen: inet:8895\n",
			want: `t.yaml:1: listen: bad value "inet:8895": no host; write inet:127.0.0.1:8895 for this host only, or inet:0.0.0.0:8895 for every address (allowed: ` + listenForm + ")",
		},
		{
			name: "listen IPv6 without brackets",
			file: "listen: inet6:::1:8895\n",
			want: `t.yaml:1: listen: bad value "inet6:::1:8895": an IPv6 address needs brackets, as in inet6:[::1]:8895 (allowed: ` + listenForm + ")",
		},
		{
			name: "listen port out of range",
			file: "listen: inet:127.0.0.1:88950\n",
			want: `t.yaml:1: listen: bad value "inet:127.0.0.1:88950": port 88950 is out of range (at most 65535) (allowed: ` + listenForm + ")",
		},
		{
			name: "listen relative unix path",
			file: "listen: unix:spf.sock\n",
			want: `t.yaml:1: listen: bad value "unix:spf.sock": the socket path must be absolute (allowed: ` + listenForm + ")",
		},
		{
			name: "listen IPv4 address with inet6",
			file: "listen: inet6:8895@127.0.0.1\n",
			want: `t.yaml:1: listen: bad value "inet6:8895@127.0.0.1": 127.0.0.1 is an IPv4 address; use inet: for it (allowed: ` + listenForm + ")",
		},
		{
			name: "bad CIDR",
			file: "trusted_networks: [127.0.0.0/8, 10.0.0.0/33]\n",
			want: `t.yaml:1: trusted_networks: bad value "10.0.0.0/33": not an IP network (allowed: ` + netForm + ")",
		},
		{
			name: "CIDR with host bits",
			file: "skip_clients:\n  - 192.0.2.0/24\n  - 198.51.100.7/24\n",
			want: `t.yaml:3: skip_clients: bad value "198.51.100.7/24": bits set after the prefix length; the network is 198.51.100.0/24 (allowed: ` + netForm + ")",
		},
		{
			name: "socket mode unquoted",
			file: "socket_mode: 0660\n",
			want: `t.yaml:1: socket_mode: bad value "0660": a number, where a string is needed: put the mode in quotes, as in "0660", so that YAML does not read it as a number (allowed: ` + modeForm + ")",
		},
		{
			name: "socket mode not octal",
			file: `socket_mode: "0680"` + "\n",
			want: `t.yaml:1: socket_mode: bad value "0680": not an octal number (digits 0 to 7) (allowed: ` + modeForm + ")",
		},
		{
			name: "socket mode with setuid",
			file: `socket_mode: "4755"` + "\n",
			want: `t.yaml:1: socket_mode: bad value "4755": not an octal mode of three digits, or four starting with 0 (allowed: ` + modeForm + ")",
		},
		{
			name: "bad log level",
			file: "log:\n  format: text\n  level: verbose\n",
			want: `t.yaml:3: log.level: bad value "verbose": unknown value (allowed: debug, info, warn, error)`,
		},
		{
			name: "bad reply macro",
			file: "replies:\n  fail: \"see https://example.net/why?s=%{x}\"\n",
			want: `t.yaml:2: replies.fail: bad value "see https://example.net/why?s=%{x}": bad macro "%{x}": unknown macro letter "x" (allowed: ` + macroForm + ")",
		},
		{
			name: "reply with a lone percent",
			file: "replies: {permerror: \"100% broken\"}\n",
			want: `t.yaml:1: replies.permerror: bad value "100% broken": bad macro "% ": '%' must be followed by '{', '%', '_' or '-' (allowed: ` + macroForm + ")",
		},
		{
			name: "reply for an unknown result",
			file: "replies: {reject: go away}\n",
			want: "t.yaml:1: replies.reject: unknown key (allowed: " + resultKeys + ")",
		},
		{
			name: "bad explanation",
			file: "explanation: \"%{o} says no%\"\n",
			want: `t.yaml:1: explanation: bad value "%{o} says no%": "%{o} says no%" ends in a lone '%' (allowed: ` + macroForm + ")",
		},
		{
			name: "duplicate key",
			file: "dry_run: true\nlisten: unix:/run/spf.sock\ndry_run: false\n",
			want: "t.yaml:3: dry_run: duplicate key (first at line 1)",
		},
		{
			name: "duplicate nested key",
			file: "policy:\n  mailfrom: {fail: reject, fail: accept}\n",
			want: "t.yaml:2: policy.mailfrom.fail: duplicate key (first at line 2)",
		},
		{
			name: "yes is not a boolean",
			file: "dry_run: yes\n",
			want: `t.yaml:1: dry_run: bad value "yes": not a boolean (allowed: true, false)`,
		},
		{
			name: "empty value",
			file: "listen:\n",
			want: `t.yaml:1: listen: bad value "": empty; leave the key out to keep its default (allowed: ` + listenForm + ")",
		},
		{
			name: "bad authserv_id",
			file: "authserv_id: mx example.net\n",
			want: `t.yaml:1: authserv_id: bad value "mx example.net": a space or control character (allowed: a host name such as mx.example.net)`,
		},
		{
			name: "DNS server by name",
			file: "dns: {servers: [ns1.example.net]}\n",
			want: `t.yaml:1: dns.servers: bad value "ns1.example.net": not an IP address (the resolver's servers are given by address) (allowed: an IP address with an optional port, such as 192.0.2.53, 192.0.2.53:53 or [2001:db8::53]:53)`,
		},
		{
			name: "never_refuse entries",
			file: "never_refuse: [postmaster, \"\", \"abuse @example.net\"]\n",
			want: `t.yaml:1: never_refuse: bad value "": empty (allowed: a local part such as postmaster, or an address such as abuse@example.net)` + "\n" +
				`t.yaml:1: never_refuse: bad value "abuse @example.net": a space or control character (allowed: a local part such as postmaster, or an address such as abuse@example.net)`,
		},
		{
			name: "skip_senders address",
			file: "skip_senders:\n  - joe@example.com\n",
			want: `t.yaml:2: skip_senders: bad value "joe@example.com": an address, where a domain is needed (allowed: a domain name such as example.com)`,
		},
		{
			name: "several errors at once",
			file: "listen: tcp:25\n" +
				"dns:\n" +
				"  timeout: fast\n" +
				"policy:\n" +
				"  mailfrom: {fail: bounce, softfail: reject}\n" +
				"log: {format: xml}\n",
			want: `t.yaml:1: listen: bad value "tcp:25": unknown socket type "tcp" (allowed: ` + listenForm + ")\n" +
				`t.yaml:3: dns.timeout: bad value "fast": not a duration (allowed: ` + durForm + ")\n" +
				`t.yaml:5: policy.mailfrom.fail: bad value "bounce": unknown value (allowed: accept, reject, tempfail, quarantine)` + "\n" +
				`t.yaml:6: log.format: bad value "xml": unknown value (allowed: text, json)`,
		},
		{
			name: "negative cache size",
			file: "dns:\n  cache_size: -1\n",
			want: `t.yaml:2: dns.cache_size: bad value "-1": must not be negative (allowed: ` + sizeForm + ")",
		},
		{
			name: "absurd cache size",
			file: "dns: {cache_size: 10000001}\n",
			want: `t.yaml:1: dns.cache_size: bad value "10000001": more than 10000000 (allowed: ` + sizeForm + ")",
		},
		{
			name: "cache size beyond any int",
			file: "dns: {cache_size: 99999999999999999999999}\n",
			want: `t.yaml:1: dns.cache_size: bad value "99999999999999999999999": more than 10000000 (allowed: ` + sizeForm + ")",
		},
		{
			name: "cache size with a unit",
			file: "dns: {cache_size: 10k}\n",
			want: `t.yaml:1: dns.cache_size: bad value "10k": not a whole number (allowed: ` + sizeForm + ")",
		},
		{
			name: "cache size in hex",
			file: "dns: {cache_size: 0x100}\n",
			want: `t.yaml:1: dns.cache_size: bad value "0x100": not a whole number (allowed: ` + sizeForm + ")",
		},
		{
			name: "cache size as a float",
			file: "dns: {cache_size: 1e4}\n",
			want: `t.yaml:1: dns.cache_size: bad value "1e4": not a whole number (allowed: ` + sizeForm + ")",
		},
		{
			name: "empty cache size",
			file: "dns:\n  cache_size:\n",
			want: `t.yaml:2: dns.cache_size: bad value "": empty; leave the key out to keep its default (allowed: ` + sizeForm + ")",
		},
		{
			name: "cache size as a list",
			file: "dns: {cache_size: [100]}\n",
			want: `t.yaml:1: dns.cache_size: bad value "[100]": a list, where a single value is needed (allowed: ` + sizeForm + ")",
		},
		{
			name: "cache bytes under a megabyte",
			file: "dns:\n  cache_bytes: 1000KiB\n",
			want: `t.yaml:2: dns.cache_bytes: bad value "1000KiB": less than 1MiB (allowed: ` + bytesForm + ")",
		},
		{
			name: "cache bytes past 64GiB",
			file: "dns: {cache_bytes: 65GiB}\n",
			want: `t.yaml:1: dns.cache_bytes: bad value "65GiB": more than 64GiB (allowed: ` + bytesForm + ")",
		},
		{
			// 0 does not turn the cache off: cache_size: 0 does.
			name: "cache bytes 0",
			file: "dns: {cache_bytes: 0}\n",
			want: `t.yaml:1: dns.cache_bytes: bad value "0": less than 1MiB (allowed: ` + bytesForm + ")",
		},
		{
			name: "cache bytes with an unknown unit",
			file: "dns: {cache_bytes: 32 megs}\n",
			want: `t.yaml:1: dns.cache_bytes: bad value "32 megs": unknown unit "megs" (allowed: ` + bytesForm + ")",
		},
		{
			name: "cache bytes as a list",
			file: "dns: {cache_bytes: [32MiB]}\n",
			want: `t.yaml:1: dns.cache_bytes: bad value "[32MiB]": a list, where a single value is needed (allowed: ` + bytesForm + ")",
		},
		{
			name: "metrics listen on a host name",
			file: "metrics:\n  listen: metrics.example.net:9095\n",
			want: `t.yaml:2: metrics.listen: bad value "metrics.example.net:9095": host "metrics.example.net" is not an IP address or localhost (allowed: ` + httpForm + ")",
		},
		{
			name: "metrics listen without port",
			file: "metrics: {listen: 127.0.0.1}\n",
			want: `t.yaml:1: metrics.listen: bad value "127.0.0.1": no port (allowed: ` + httpForm + ")",
		},
		{
			name: "metrics listen with the milter's syntax",
			file: "metrics: {listen: \"inet:127.0.0.1:9095\"}\n",
			want: `t.yaml:1: metrics.listen: bad value "inet:127.0.0.1:9095": not HOST:PORT; write the address alone, without a scheme, socket type or path (allowed: ` + httpForm + ")",
		},
		{
			name: "decision log relative path",
			file: "decision_log:\n  path: decisions.jsonl\n",
			want: `t.yaml:2: decision_log.path: bad value "decisions.jsonl": the path must be absolute (allowed: ` + logPathForm + ")",
		},
		{
			name: "decision log path of a directory",
			file: "decision_log: {path: /var/log/spf-milter/}\n",
			want: `t.yaml:1: decision_log.path: bad value "/var/log/spf-milter/": the path names a directory; name the file (allowed: ` + logPathForm + ")",
		},
		{
			name: "decision log path as a list",
			file: "decision_log: {path: [/var/log/a]}\n",
			want: `t.yaml:1: decision_log.path: bad value "[/var/log/a]": a list, where a single value is needed (allowed: ` + logPathForm + ")",
		},
		{
			name: "decision log size with an unknown unit",
			file: "decision_log:\n  path: /var/log/d.jsonl\n  max_size: 100 megs\n",
			want: `t.yaml:3: decision_log.max_size: bad value "100 megs": unknown unit "megs" (allowed: ` + logSizeForm + ")",
		},
		{
			name: "decision log size with a fraction",
			file: "decision_log: {max_size: 1.5GB}\n",
			want: `t.yaml:1: decision_log.max_size: bad value "1.5GB": unknown unit ".5GB" (allowed: ` + logSizeForm + ")",
		},
		{
			name: "decision log size without a number",
			file: "decision_log: {max_size: MB}\n",
			want: `t.yaml:1: decision_log.max_size: bad value "MB": not a whole number with a unit (allowed: ` + logSizeForm + ")",
		},
		{
			name: "decision log size too small",
			file: "decision_log: {max_size: 999}\n",
			want: `t.yaml:1: decision_log.max_size: bad value "999": less than 1KB (allowed: ` + logSizeForm + ")",
		},
		{
			name: "decision log size too large",
			file: "decision_log: {max_size: 1TiB}\n",
			want: `t.yaml:1: decision_log.max_size: bad value "1TiB": more than 1TB (allowed: ` + logSizeForm + ")",
		},
		{
			name: "decision log size overflowing",
			file: "decision_log: {max_size: 99999999999999999999999}\n",
			want: `t.yaml:1: decision_log.max_size: bad value "99999999999999999999999": more than 1TB (allowed: ` + logSizeForm + ")",
		},
		{
			name: "decision log keep negative",
			file: "decision_log: {keep: -1}\n",
			want: `t.yaml:1: decision_log.keep: bad value "-1": must not be negative (allowed: ` + logKeepForm + ")",
		},
		{
			name: "decision log keep too many",
			file: "decision_log: {keep: 1001}\n",
			want: `t.yaml:1: decision_log.keep: bad value "1001": more than 1000 (allowed: ` + logKeepForm + ")",
		},
		{
			name: "unknown decision log key",
			file: "decision_log: {rotate: daily}\n",
			want: "t.yaml:1: decision_log.rotate: unknown key (allowed: path, max_size, keep)",
		},
		{
			name: "metrics listen as a mapping",
			file: "metrics:\n  listen: {host: 127.0.0.1}\n",
			want: `t.yaml:2: metrics.listen: bad value "{host: 127.0.0.1}": a mapping, where a single value is needed (allowed: ` + httpForm + ")",
		},
		{
			name: "unknown metrics key",
			file: "metrics: {path: /metrics}\n",
			want: "t.yaml:1: metrics.path: unknown key (allowed: listen)",
		},
		{
			name: "metrics as a single value",
			file: "metrics: 127.0.0.1:9095\n",
			want: `t.yaml:1: metrics: bad value "127.0.0.1:9095": a single value, where a mapping of keys is needed (allowed: listen)`,
		},
		{
			name: "unknown why key",
			file: "why: {frobnicate: /why}\n",
			want: "t.yaml:1: why.frobnicate: unknown key (allowed: " + whyKeys + ")",
		},
		{
			name: "why listen on a host name",
			file: "why:\n  listen: www.example.net:80\n",
			want: `t.yaml:2: why.listen: bad value "www.example.net:80": host "www.example.net" is not an IP address or localhost (allowed: ` + httpForm + ")",
		},
		{
			name: "why listen on the metrics listener",
			file: "metrics: {listen: 127.0.0.1:9095}\nwhy: {listen: \"127.0.0.1:09095\"}\n",
			want: `t.yaml:2: why.listen: bad value "127.0.0.1:09095": the same as metrics.listen; leave why.listen empty to serve the page there (allowed: ` + httpForm + ")",
		},
		{
			name: "why url with a query",
			file: "why:\n  url: \"https://mx.example.net/why?lang=en\"\n",
			want: `t.yaml:2: why.url: bad value "https://mx.example.net/why?lang=en": a query is not allowed: the page's parameters are appended as the query (allowed: ` + whyURLForm + ")",
		},
		{
			name: "why url without the scheme",
			file: "why: {url: mx.example.net/why}\n",
			want: `t.yaml:1: why.url: bad value "mx.example.net/why": not an http or https URL (allowed: ` + whyURLForm + ")",
		},
		{
			name: "why limits out of range",
			file: "why:\n  rate: 0\n  concurrent: 1001\n  cache: 2h\n",
			want: `t.yaml:2: why.rate: bad value "0": must be at least 1 (allowed: ` + whyRateForm + ")\n" +
				`t.yaml:3: why.concurrent: bad value "1001": more than 1000 (allowed: ` + whyConcForm + ")\n" +
				`t.yaml:4: why.cache: bad value "2h": more than 1h (allowed: ` + whyTTLForm + ")",
		},
		{
			name: "why limits of the wrong form",
			file: "why:\n  rate: 1.5\n  concurrent: -2\n  cache: 60\n",
			want: `t.yaml:2: why.rate: bad value "1.5": not a whole number (allowed: ` + whyRateForm + ")\n" +
				`t.yaml:3: why.concurrent: bad value "-2": must not be negative (allowed: ` + whyConcForm + ")\n" +
				`t.yaml:4: why.cache: bad value "60": a number needs a unit (allowed: ` + whyTTLForm + ")",
		},
		{
			name: "why cache negative",
			file: "why: {cache: -1s}\n",
			want: `t.yaml:1: why.cache: bad value "-1s": must not be negative (allowed: ` + whyTTLForm + ")",
		},
		{
			name: "reply link without why.url",
			file: "replies:\n  fail: \"see {why_url}\"\n  permerror: \"no link\"\n  softfail: \"{why_url}\"\n",
			want: `t.yaml:2: replies.fail: bad value "see {why_url}": {why_url} needs why.url, the address of the page` + "\n" +
				`t.yaml:4: replies.softfail: bad value "{why_url}": {why_url} needs why.url, the address of the page`,
		},
		{
			name: "reply link with a bad why.url is reported once",
			file: "replies: {fail: \"see {why_url}\"}\nwhy: {url: \"https://mx.example.net/why#x\"}\n",
			want: `t.yaml:2: why.url: bad value "https://mx.example.net/why#x": a fragment (#) is not allowed (allowed: ` + whyURLForm + ")",
		},
		{
			name: "the link token is not a macro",
			file: "why: {url: \"https://mx.example.net/why\"}\nreplies: {fail: \"see %{why_url}\"}\n",
			want: `t.yaml:2: replies.fail: bad value "see %{why_url}": bad macro "%{why_url}": unknown macro letter "w" (allowed: ` + macroForm + ")",
		},
		{
			name: "YAML syntax error",
			file: "listen: inet:127.0.0.1:8895\nlog:\n  format: text\n level: info\n",
			want: "t.yaml:4: YAML syntax error: did not find expected key",
		},
		{
			name: "YAML syntax error on the first line",
			file: "listen: @socket\n",
			want: "t.yaml:1: YAML syntax error: found character that cannot start any token",
		},
		{
			name: "unclosed flow list",
			file: "dry_run: false\ntrusted_networks: [127.0.0.0/8,\nlog: {}\n",
			want: "t.yaml:2: YAML syntax error: did not find expected ',' or ']'",
		},
		{
			name: "syntax error after a list spanning lines",
			file: "trusted_networks: [127.0.0.0/8,\n  \"::1/128\"]\nlisten: @x\n",
			want: "t.yaml:3: YAML syntax error: found character that cannot start any token",
		},
		{
			name: "syntax error in a second document",
			file: "dry_run: true\n---\n[\n",
			want: "t.yaml:3: YAML syntax error: did not find expected node content",
		},
		{
			name: "not UTF-8",
			file: "dry_run: false\nreceiver: caf\xe9.example\n",
			want: "t.yaml:2: byte 0xe9 is not UTF-8 (the file must be UTF-8 text)",
		},
		{
			name: "binary garbage",
			file: "\x00\x01\x02PK",
			want: "t.yaml:1: control character U+0000 (the file must be text)",
		},
		{
			name: "not a mapping",
			file: "- listen\n- inet:127.0.0.1:8895\n",
			want: `t.yaml:1: bad value "[listen, inet:127.0.0.1:8895]": the file must be a mapping of keys such as listen:`,
		},
		{
			name: "two documents",
			file: "dry_run: true\n---\ndry_run: false\n",
			want: "t.yaml:2: a second YAML document: the file must hold one",
		},
		{
			name: "key with a newline is quoted on one line",
			file: "\"log\\nlevel\": debug\n",
			want: `t.yaml:1: "log\nlevel": unknown key (allowed: ` + topKeys + ")",
		},
		{
			name: "value with a newline is quoted on one line",
			file: "authserv_id: \"mx\\n.example.net\"\n",
			want: `t.yaml:1: authserv_id: bad value "mx\n.example.net": a space or control character (allowed: a host name such as mx.example.net)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("t.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("Parse succeeded; want error\n%s\ngot config:\n%s", tt.want, cfg.YAML())
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with its error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got: %s\nwant: %s", got, tt.want)
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is %T, want *Error", err)
			}
			if n := strings.Count(tt.want, "\n") + 1; len(cerr.Problems) != n {
				t.Errorf("%d problems, want %d", len(cerr.Problems), n)
			}
			for _, p := range cerr.Problems {
				if p.File != "t.yaml" || p.Line < 1 {
					t.Errorf("problem %+v: want file t.yaml and a line", p)
				}
			}
		})
	}
}

// full sets every key to a value other than its default.
const full = `# every key
listen: inet6:[::1]:10025
socket_mode: "0600"
authserv_id: mx.example.net
receiver: mx1.example.net
dns:
  servers: ["192.0.2.53", "[2001:db8::53]:5353", 2001:db8::54]
  timeout: 2s
  check_timeout: 1m30s
  cache_size: 500
  cache_bytes: 64MB
policy:
  mailfrom: {none: accept, neutral: accept, pass: accept, fail: quarantine, softfail: tempfail, temperror: accept, permerror: reject}
  helo:
    none: accept
    neutral: accept
    pass: accept
    fail: accept
    softfail: accept
    temperror: tempfail
    permerror: reject
trusted_networks: [10.0.0.0/8, 192.0.2.1, "2001:db8::/32", "::1"]
skip_authenticated: false
dry_run: true
headers: {received_spf: false, authentication_results: false, remove_forged: false}
log: {format: json, level: debug}
explanation: "see https://www.example.net/spf?s=%{s}"
replies:
  fail: "%{i} may not send for %{o}: https://www.example.net/why?s=%{s}&i=%{i}&r=%{r}"
  permerror: "broken SPF record at %{o}; 100%% sure"
skip_senders: [Lists.Example.ORG., example.com]
skip_clients: [198.51.100.0/24]
never_refuse: [postmaster, abuse, "abuse@example.net"]
session: {idle_timeout: 30s, max_duration: 2h}
metrics:
  listen: "[::1]:09095"
decision_log: {path: /var/log/spf-milter/decisions.jsonl, max_size: 512KiB, keep: 0}
why: {listen: "0.0.0.0:8080", url: "https://mx.example.net:8443/why", rate: 5, concurrent: 2, cache: 0}
`

// fullConfig is what full must give.
func fullConfig() *Config {
	return &Config{
		Listen:     "inet6:[::1]:10025",
		SocketMode: 0o600,
		AuthservID: "mx.example.net",
		Receiver:   "mx1.example.net",
		DNS: DNS{
			Servers:      []string{"192.0.2.53:53", "[2001:db8::53]:5353", "[2001:db8::54]:53"},
			Timeout:      2 * time.Second,
			CheckTimeout: 90 * time.Second,
			CacheSize:    500,
			CacheBytes:   64_000_000,
		},
		Policy: Policy{
			MailFrom: map[spf.Result]Action{
				spf.None: Accept, spf.Neutral: Accept, spf.Pass: Accept, spf.Fail: Quarantine,
				spf.Softfail: Tempfail, spf.TempError: Accept, spf.PermError: Reject,
			},
			HELO: map[spf.Result]Action{
				spf.None: Accept, spf.Neutral: Accept, spf.Pass: Accept, spf.Fail: Accept,
				spf.Softfail: Accept, spf.TempError: Tempfail, spf.PermError: Reject,
			},
		},
		TrustedNetworks: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"),
			netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128"),
		},
		SkipAuthenticated: false,
		DryRun:            true,
		Headers:           Headers{},
		Log:               Log{Format: "json", Level: "debug"},
		Explanation:       "see https://www.example.net/spf?s=%{s}",
		Replies: map[spf.Result]string{
			spf.Fail:      "%{i} may not send for %{o}: https://www.example.net/why?s=%{s}&i=%{i}&r=%{r}",
			spf.PermError: "broken SPF record at %{o}; 100%% sure",
		},
		SkipSenders: []string{"lists.example.org", "example.com"},
		SkipClients: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		NeverRefuse: []string{"postmaster", "abuse", "abuse@example.net"},
		Session:     Session{IdleTimeout: 30 * time.Second, MaxDuration: 2 * time.Hour},
		Metrics:     Metrics{Listen: "[::1]:9095"},
		DecisionLog: DecisionLog{Path: "/var/log/spf-milter/decisions.jsonl", MaxSize: 512 << 10, Keep: 0},
		Why:         Why{Listen: "0.0.0.0:8080", URL: "https://mx.example.net:8443/why", Rate: 5, Concurrent: 2, Cache: 0},
	}
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	withDefaults := func(change func(c *Config)) *Config {
		c := Default()
		change(c)
		return c
	}
	tests := []struct {
		name string
		file string
		want *Config
	}{
		{"full", full, fullConfig()},
		{"empty file", "", Default()},
		{"comments only", "# nothing here\n\n   # nor here\n", Default()},
		{"empty document", "---\n", Default()},
		{"sections with every key commented out", "dns:\n  # timeout: 9s\npolicy:\nheaders: {}\n", Default()},
		{
			name: "partial policy keeps the other defaults",
			file: "policy:\n  mailfrom: {softfail: quarantine}\n  helo:\n    temperror: tempfail\n",
			want: withDefaults(func(c *Config) {
				c.Policy.MailFrom[spf.Softfail] = Quarantine
				c.Policy.HELO[spf.TempError] = Tempfail
			}),
		},
		{
			name: "receiver defaults to authserv_id",
			file: "authserv_id: mx.example.net\n",
			want: withDefaults(func(c *Config) { c.AuthservID, c.Receiver = "mx.example.net", "mx.example.net" }),
		},
		{
			name: "authserv_id defaults to the host name without receiver",
			file: "receiver: mx.example.net\n",
			want: withDefaults(func(c *Config) { c.AuthservID, c.Receiver = host, "mx.example.net" }),
		},
		{
			name: "empty lists replace the defaults",
			file: "trusted_networks: []\nnever_refuse:\n",
			want: withDefaults(func(c *Config) { c.TrustedNetworks = nil }),
		},
		{
			name: "block lists, aliases and Sendmail's listen form",
			file: "listen: inet:8895@127.0.0.1\nskip_clients: &nets\n  - 192.0.2.0/24\ntrusted_networks: *nets\nsocket_mode: '640'\n",
			want: withDefaults(func(c *Config) {
				c.Listen = "inet:8895@127.0.0.1"
				c.SocketMode = 0o640
				c.SkipClients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
				c.TrustedNetworks = c.SkipClients
			}),
		},
		{
			name: "cache off",
			file: "dns: {cache_size: 0}\n",
			want: withDefaults(func(c *Config) { c.DNS.CacheSize = 0 }),
		},
		{
			name: "smallest cache bytes, in bytes",
			file: "dns: {cache_bytes: 1048576}\n",
			want: withDefaults(func(c *Config) { c.DNS.CacheBytes = 1 << 20 }),
		},
		{
			name: "largest cache bytes",
			file: "dns: {cache_bytes: 64 gib}\n",
			want: withDefaults(func(c *Config) { c.DNS.CacheBytes = 64 << 30 }),
		},
		{
			name: "largest cache, quoted",
			file: "dns:\n  cache_size: \"10000000\"\n",
			want: withDefaults(func(c *Config) { c.DNS.CacheSize = 10_000_000 }),
		},
		{
			name: "metrics on every address",
			file: "metrics:\n  listen: 0.0.0.0:9095\n",
			want: withDefaults(func(c *Config) { c.Metrics.Listen = "0.0.0.0:9095" }),
		},
		{
			name: "metrics listener off",
			file: "metrics: {listen: \"\"}\n",
			want: Default(),
		},
		{
			name: "metrics section empty",
			file: "metrics:\n",
			want: Default(),
		},
		{
			name: "decision log on, sizes in each unit",
			file: "decision_log:\n  path: /var/log/spf-milter/decisions.jsonl\n  max_size: 2 gb\n  keep: 10\n",
			want: withDefaults(func(c *Config) {
				c.DecisionLog = DecisionLog{Path: "/var/log/spf-milter/decisions.jsonl", MaxSize: 2e9, Keep: 10}
			}),
		},
		{
			name: "decision log size in bytes",
			file: "decision_log: {max_size: 1000}\n",
			want: withDefaults(func(c *Config) { c.DecisionLog.MaxSize = 1000 }),
		},
		{
			name: "decision log size in MiB",
			file: "decision_log: {max_size: 64MiB}\n",
			want: withDefaults(func(c *Config) { c.DecisionLog.MaxSize = 64 << 20 }),
		},
		{
			name: "decision log off",
			file: "decision_log: {path: \"\"}\n",
			want: Default(),
		},
		{
			name: "why page on the metrics listener, with a link",
			file: "why:\n  url: http://[2001:db8::25]/spf/why\nreplies: {softfail: \"{why_url} %{i} {why_url}\"}\n",
			want: withDefaults(func(c *Config) {
				c.Why.URL = "http://[2001:db8::25]/spf/why"
				c.Replies[spf.Softfail] = "{why_url} %{i} {why_url}"
			}),
		},
		{
			name: "why page on its own listener, limits and cache in other units",
			file: "why: {listen: \"[::]:8080\", url: \"https://xn--mx-1la.example/why\", rate: 10000, concurrent: 1, cache: 1h}\n",
			want: withDefaults(func(c *Config) {
				c.Why = Why{Listen: "[::]:8080", URL: "https://xn--mx-1la.example/why", Rate: 10000, Concurrent: 1, Cache: time.Hour}
			}),
		},
		{
			name: "why cache off, why listen port 0 beside metrics port 0",
			file: "metrics: {listen: 127.0.0.1:0}\nwhy: {listen: 127.0.0.1:0, cache: 0s}\n",
			want: withDefaults(func(c *Config) {
				c.Metrics.Listen, c.Why.Listen, c.Why.Cache = "127.0.0.1:0", "127.0.0.1:0", 0
			}),
		},
		{
			name: "why section empty",
			file: "why:\n",
			want: Default(),
		},
		{
			name: "unix socket",
			file: "listen: unix:/run/spf-milter/spf-milter.sock\nsocket_mode: \"0666\"\n",
			want: withDefaults(func(c *Config) {
				c.Listen = "unix:/run/spf-milter/spf-milter.sock"
				c.SocketMode = 0o666
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse("t.yaml", []byte(tt.file))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config:\n%s\nwant:\n%s", got.YAML(), tt.want.YAML())
			}
		})
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	c := Default()
	// The values the issue names as defaults.
	if c.Listen != "inet:127.0.0.1:8895" || c.SocketMode != 0o660 ||
		c.DNS.Timeout != 5*time.Second || c.DNS.CheckTimeout != 20*time.Second ||
		!c.SkipAuthenticated || c.DryRun ||
		c.Headers != (Headers{true, true, true}) || c.Log != (Log{"text", "info"}) ||
		c.Policy.MailFrom[spf.Fail] != Reject || c.Policy.MailFrom[spf.TempError] != Tempfail ||
		c.Policy.HELO[spf.TempError] != Accept || len(c.DNS.Servers) != 0 ||
		c.Explanation != spf.DefaultExplanation || c.DNS.CacheSize != 10000 || c.Metrics.Listen != "" ||
		c.Why != (Why{Rate: 20, Concurrent: 4, Cache: time.Minute}) {
		t.Errorf("Default() =\n%s", c.YAML())
	}
	for _, id := range []map[spf.Result]Action{c.Policy.MailFrom, c.Policy.HELO} {
		if len(id) != len(spf.Results) {
			t.Errorf("policy %v does not name every result", id)
		}
	}
	if c.AuthservID == "" || c.Receiver != c.AuthservID {
		t.Errorf("authserv_id %q, receiver %q: want the host name for both", c.AuthservID, c.Receiver)
	}
	// Default must hand out fresh maps: a caller changing one config must
	// not change the next.
	c.Policy.MailFrom[spf.Pass] = Reject
	if Default().Policy.MailFrom[spf.Pass] != Accept {
		t.Error("Default shares its policy map between calls")
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]*Config{"default": Default(), "full": fullConfig()} {
		out := c.YAML()
		back, err := Parse("effective.yaml", out)
		if err != nil {
			t.Errorf("%s: effective config does not load: %v\n%s", name, err, out)
			continue
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("%s: round trip changed the config:\n%s\nback:\n%s", name, out, back.YAML())
		}
	}
	// Every key is written out, defaults included, so that the output
	// documents the effective value of each.
	out := string(Default().YAML())
	for _, key := range strings.Split(topKeys, ", ") {
		if !strings.Contains(out, "\n"+key+":") && !strings.HasPrefix(out, key+":") {
			t.Errorf("YAML() lacks top key %q:\n%s", key, out)
		}
	}
	for _, want := range []string{
		"socket_mode: \"0660\"\n",
		"  mailfrom: {none: accept, neutral: accept, pass: accept, fail: reject, softfail: accept, temperror: tempfail, permerror: accept}\n",
		"session: {idle_timeout: 10m, max_duration: 1h}\n",
		"  check_timeout: 20s\n",
		"  cache_size: 10000\n",
		"  cache_bytes: 32MiB\n",
		"metrics: {listen: \"\"}\n",
		"decision_log: {path: \"\", max_size: 100MB, keep: 5}\n",
		"why:\n  listen: \"\"\n  url: \"\"\n  rate: 20\n  concurrent: 4\n  cache: 1m\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("YAML() lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckWhyURL checks the forms why.url may take: the URL goes into
// SMTP replies and gets the page's query appended.
func TestCheckWhyURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", ""},
		{"https://mx.example.net/why", ""},
		{"http://mx.example.net:8080/why", ""},
		{"https://192.0.2.25/why", ""},
		{"https://[2001:db8::25]:8443/", ""},
		{"https://mx.example.net", ""},
		{"https://mx_1.example.net/why", ""},
		{"ftp://mx.example.net/why", "not an http or https URL"},
		{"mx.example.net/why", "not an http or https URL"},
		{"//mx.example.net/why", "not an http or https URL"},
		{"https:///why", "no host"},
		{"https://:443/why", "no host"},
		{"http:mx.example.net", "no host"},
		{"https://user:pw@mx.example.net/why", "a user name or password is not allowed"},
		{"https://mx.example.net/why?", "a query is not allowed: the page's parameters are appended as the query"},
		{"https://mx.example.net/why?a=b", "a query is not allowed: the page's parameters are appended as the query"},
		{"https://mx.example.net/why#top", "a fragment (#) is not allowed"},
		{"https://mx.example.net/why#", "a fragment (#) is not allowed"},
		{"https://mx.example.net:0/why", "port 0 is out of range (1 to 65535)"},
		{"https://mx.example.net:70000/why", "port 70000 is out of range (1 to 65535)"},
		{"https://mx.example.net/w hy", "spaces, control characters and non-ASCII characters are not allowed (write a non-ASCII host name in its xn-- form)"},
		{"https://mx.example.net/why\r\n250 OK", "spaces, control characters and non-ASCII characters are not allowed (write a non-ASCII host name in its xn-- form)"},
		{"https://b\u00fccher.example/why", "spaces, control characters and non-ASCII characters are not allowed (write a non-ASCII host name in its xn-- form)"},
		{"https://-mx.example.net/why", "bad host: a label starting or ending with '-'"},
		{"https://mx..example.net/why", "bad host: an empty label (a dot at the start or end, or two dots)"},
		{"https://mx.exa'mple.net/why", "bad host: character '\\'' not allowed in a host name"},
		{"https://%6dx.example.net/why", "not a URL"},
	}
	for _, tt := range tests {
		if got := checkWhyURL(tt.in); got != tt.want {
			t.Errorf("checkWhyURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseListen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, network, address string
		reason               string // for a bad one, the reason in the error
	}{
		{"inet:127.0.0.1:8895", "tcp", "127.0.0.1:8895", ""},
		{"inet:localhost:8895", "tcp", "localhost:8895", ""},
		{"inet:0.0.0.0:25", "tcp", "0.0.0.0:25", ""},
		{"inet:127.0.0.1:0", "tcp", "127.0.0.1:0", ""},
		{"inet6:[::1]:8895", "tcp6", "[::1]:8895", ""},
		{"inet6:[::]:8895", "tcp6", "[::]:8895", ""},
		{"inet6:localhost:8895", "tcp6", "localhost:8895", ""},
		{"inet:[::1]:8895", "tcp6", "[::1]:8895", ""},
		{"inet:8895@127.0.0.1", "tcp", "127.0.0.1:8895", ""},
		{"inet:8895@localhost", "tcp", "localhost:8895", ""},
		{"inet:8895@[::1]", "tcp6", "[::1]:8895", ""},
		{"inet:8895@::1", "tcp6", "[::1]:8895", ""},
		{"inet6:8895@::1", "tcp6", "[::1]:8895", ""},
		{"inet6:8895@[2001:db8::1]", "tcp6", "[2001:db8::1]:8895", ""},
		{"inet:127.0.0.1:08895", "tcp", "127.0.0.1:8895", ""},
		{"unix:/run/spf-milter.sock", "unix", "/run/spf-milter.sock", ""},
		{"local:/var/spool/postfix/spf/spf.sock", "unix", "/var/spool/postfix/spf/spf.sock", ""},

		{"", "", "", "no socket type"},
		{"/run/spf.sock", "", "", "no socket type"},
		{"tcp:127.0.0.1:25", "", "", `unknown socket type "tcp"`},
		{"INET:127.0.0.1:25", "", "", `unknown socket type "INET"`},
		{"unix:", "", "", "no socket path"},
		{"unix:run/spf.sock", "", "", "the socket path must be absolute"},
		{"inet:127.0.0.1", "", "", "no port"},
		{"inet:8895", "", "", "no host; write inet:127.0.0.1:8895 for this host only, or inet:0.0.0.0:8895 for every address"},
		{"inet::8895", "", "", "no host; write 0.0.0.0 (or [::] with inet6) to listen on every address"},
		{"inet:8895@", "", "", "no host; write 0.0.0.0 (or [::] with inet6) to listen on every address"},
		{"inet:127.0.0.1:smtp", "", "", `port "smtp" is not a number`},
		{"inet:127.0.0.1:-1", "", "", `port "-1" is not a number`},
		{"inet:@127.0.0.1", "", "", `port "" is not a number`},
		{"inet:127.0.0.1:65536", "", "", "port 65536 is out of range (at most 65535)"},
		{"inet6:::1:8895", "", "", "an IPv6 address needs brackets, as in inet6:[::1]:8895"},
		{"inet6:[127.0.0.1]:8895", "", "", "127.0.0.1 is an IPv4 address; use inet: for it"},
		{"inet:mx_1..example:25", "", "", `host "mx_1..example" is neither an IP address nor a host name: an empty label (a dot at the start or end, or two dots)`},
		{"inet:bad host:25", "", "", `host "bad host" is neither an IP address nor a host name: a space or control character`},
	}
	for _, tt := range tests {
		network, address, err := ParseListen(tt.in)
		if tt.reason == "" {
			if err != nil || network != tt.network || address != tt.address {
				t.Errorf("ParseListen(%q) = %q, %q, %v; want %q, %q", tt.in, network, address, err, tt.network, tt.address)
			}
			continue
		}
		want := `bad listen address "` + tt.in + `": ` + tt.reason + " (allowed: " + listenForm + ")"
		if err == nil || err.Error() != want || network != "" || address != "" {
			t.Errorf("ParseListen(%q) = %q, %q, %v; want error %s", tt.in, network, address, err, want)
		}
	}
}

func TestParseHTTPListen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, addr string
		reason   string // for a bad one
	}{
		{"", "", ""},
		{"127.0.0.1:9095", "127.0.0.1:9095", ""},
		{"0.0.0.0:9095", "0.0.0.0:9095", ""},
		{"localhost:9095", "localhost:9095", ""},
		{"[::1]:9095", "[::1]:9095", ""},
		{"[::]:80", "[::]:80", ""},
		{"[2001:DB8::1]:9095", "[2001:db8::1]:9095", ""},
		{"[::ffff:127.0.0.1]:9095", "[::ffff:127.0.0.1]:9095", ""},
		{"127.0.0.1:0", "127.0.0.1:0", ""},
		{"127.0.0.1:009095", "127.0.0.1:9095", ""},

		{"9095", "", "no host; write 127.0.0.1:9095 for this host only, or 0.0.0.0:9095 for every address"},
		{":9095", "", "no host; write 127.0.0.1 for this host only, or 0.0.0.0 for every address"},
		{"127.0.0.1", "", "no port"},
		{"localhost", "", "no port"},
		{"::1:9095", "", "an IPv6 address needs brackets, as in [::1]:9095"},
		{"127.0.0.1:", "", `port "" is not a number`},
		{"127.0.0.1:http", "", `port "http" is not a number`},
		{"127.0.0.1:-1", "", `port "-1" is not a number`},
		{"127.0.0.1:65536", "", "port 65536 is out of range (at most 65535)"},
		{"mx.example.net:9095", "", `host "mx.example.net" is not an IP address or localhost`},
		{"LOCALHOST:9095", "", `host "LOCALHOST" is not an IP address or localhost`},
		{"[fe80::1%eth0]:9095", "", "an IPv6 zone is not supported"},
		{"http://127.0.0.1:9095/metrics", "", "not HOST:PORT; write the address alone, without a scheme, socket type or path"},
		{"inet:127.0.0.1:9095", "", "not HOST:PORT; write the address alone, without a scheme, socket type or path"},
		{"127.0.0.1:9095:1", "", "not HOST:PORT"},
	}
	for _, tt := range tests {
		addr, reason := parseHTTPListen(tt.in)
		if addr != tt.addr || reason != tt.reason {
			t.Errorf("parseHTTPListen(%q) = %q, %q; want %q, %q", tt.in, addr, reason, tt.addr, tt.reason)
		}
	}
}

// TestExampleFile keeps examples/config.yaml honest: it loads, and since
// it says that each value it sets is the default, it gives Default().
func TestExampleFile(t *testing.T) {
	t.Parallel()
	got, err := Load(filepath.Join("..", "examples", "config.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("the example is not the defaults:\n%s\nwant:\n%s", got.YAML(), want.YAML())
	}
}

// TestExampleCommentedKeys uncomments the example's optional settings
// ("# key: value" lines naming a known key) and checks that the result
// still loads, so that what the comments suggest works when copied.
func TestExampleCommentedKeys(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "examples", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	known := strings.Split(topKeys+", servers, path, url", ", ")
	var lines []string
	uncommented := map[string]bool{}
	all := strings.Split(string(data), "\n")
	for i, line := range all {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		body := strings.TrimLeft(line, " ")
		if rest, ok := strings.CutPrefix(body, "# "); ok {
			key, _, isKey := strings.Cut(rest, ":")
			if isKey && slices.Contains(known, key) {
				// Uncomment it, with the indented lines commented under it,
				// and drop the active line of the same key just before.
				if n := len(lines); n > 0 && strings.HasPrefix(strings.TrimLeft(lines[n-1], " "), key+":") {
					lines = lines[:n-1]
				}
				lines = append(lines, strings.Repeat(" ", indent)+rest)
				uncommented[key] = true
				for j := i + 1; j < len(all) && strings.HasPrefix(all[j], "#   "); j++ {
					all[j] = "  " + strings.TrimPrefix(all[j], "# ")
				}
				continue
			}
		}
		lines = append(lines, line)
	}
	for _, key := range []string{"authserv_id", "receiver", "servers", "replies", "skip_senders", "skip_clients", "never_refuse", "path", "url"} {
		if !uncommented[key] {
			t.Errorf("the example shows no commented-out %s", key)
		}
	}
	text := strings.Join(lines, "\n")
	got, err := Parse("example-uncommented.yaml", []byte(text))
	if err != nil {
		t.Fatalf("uncommented example: %v\n%s", err, text)
	}
	if len(got.Replies) == 0 || len(got.NeverRefuse) == 0 || len(got.DNS.Servers) == 0 || got.AuthservID != "mx.example.net" ||
		got.Metrics.Listen == "" || got.DecisionLog.Path == "" || got.Why.Listen == "" || got.Why.URL == "" ||
		!strings.Contains(got.Replies[spf.Softfail], WhyURLToken) {
		t.Errorf("uncommented example did not set the optional keys:\n%s", got.YAML())
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("dry_run: true\nlog: {level: loud}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:2: log.level: bad value "loud": unknown value (allowed: debug, info, warn, error)`
	if err == nil || err.Error() != want {
		t.Errorf("Load: %v\nwant: %s", err, want)
	}
	var cerr *Error
	if !errors.As(err, &cerr) || len(cerr.Problems) != 1 {
		t.Fatalf("Load error %T %v: want *Error with one problem", err, err)
	}
	p := cerr.Problems[0]
	if p.File != path || p.Line != 2 || p.Key != "log.level" || p.Value != "loud" ||
		p.Reason != "unknown value" || p.Allowed != "debug, info, warn, error" {
		t.Errorf("problem %+v", p)
	}
}

// FuzzParse checks that no input panics, that every problem has a line,
// and that whatever loads comes back equal through YAML().
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("listen: inet:8895@[::1]\npolicy: {helo: {fail: accept}}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte(billionLaughs("trusted_networks")))
	f.Add([]byte("policy: &x {mailfrom: *x, helo: *x}\n"))
	f.Add([]byte("dns: {servers: [1.2.3.4, 1.2.3.4:53]}\nreplies: {fail: \"%{s}\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err != nil {
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
				t.Fatalf("error %T %v: want *Error with problems", err, err)
			}
			for _, p := range cerr.Problems {
				if p.Line < 1 || strings.ContainsAny(p.String(), "\r\n") {
					t.Fatalf("problem %q: want a line number and one line", p.String())
				}
			}
			return
		}
		back, err := Parse("effective.yaml", cfg.YAML())
		if err != nil {
			t.Fatalf("effective config does not load: %v\n%s", err, cfg.YAML())
		}
		if !reflect.DeepEqual(back, cfg) {
			t.Fatalf("round trip changed the config:\n%s\nback:\n%s", cfg.YAML(), back.YAML())
		}
	})
}
