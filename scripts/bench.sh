#!/usr/bin/env bash
# The load benchmark: plays Postfix against spf-milter and two reference
# milters -- a do-nothing milter on go-milter (the ceiling of that protocol
# stack) and Debian's pyspf-milter -- one after the other, over a loopback
# DNS server of realistic SPF policies, checks every verdict and prints a
# Markdown table (docs/benchmarks/method.md). Progress goes to stderr, the table
# to stdout; it exits non-zero if any session failed or got a wrong verdict.
#
# Installs pyspf-milter with apt-get when it is missing and this runs as
# root on Debian; without it the pyspf-milter rows say "not installed".
# Arguments go to the load generator, for example:
#   scripts/bench.sh -duration 60s -conns 8,32,64
#   scripts/bench.sh -only spf,null -dns-delay 0 -idle 0
# and scripts/bench.sh -h lists them all. Run from anywhere; needs Go 1.26.
#
# The soak (docs/benchmarks/method.md) runs spf-milter alone under 1000 busy
# connections and prints the curve of its memory and goroutines; it exits
# non-zero on any error or if the daemon does not come back to its idle
# baseline once the connections close:
#   scripts/bench.sh -soak 5m -soak-conns 1000
# It needs no pyspf-milter, and two file descriptors per connection, so
# the soft limit on open files is raised to the hard one here.
set -euo pipefail

cd "$(dirname "$0")/../bench"

soak=0
for arg in "$@"; do
	case "$arg" in
	-soak | --soak | -soak=* | --soak=*) soak=1 ;;
	esac
done
hard="$(ulimit -Hn)"
if [[ "$hard" != unlimited ]]; then
	ulimit -n "$hard"
fi

if [[ "$soak" -eq 1 ]]; then
	: # spf-milter alone: pyspf-milter is not needed
elif [[ ! -x /usr/bin/pyspf-milter ]] || ! /usr/bin/python3 -c 'import DNS, spf, spf_engine.milter_spf' 2>/dev/null; then
	if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
		printf '==> apt-get install pyspf-milter python3-spf\n' >&2
		apt-get update -qq >&2
		# The package's service is not needed: the benchmark starts its
		# own instance (where policy-rc.d allows, Debian starts it on
		# port 8893; stop it with systemctl if that is in the way).
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			pyspf-milter python3-spf >&2
	else
		printf 'bench.sh: pyspf-milter is not installed (needs Debian and root to install); its rows will say so\n' >&2
	fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/milterload" ./cmd/milterload
# Defaults (see -h): 8 and 32 connections, 20 s per row in 4 rounds, 1000
# warm-up messages per target, cold rows with a 20 ms DNS delay, 1000 idle
# connections for the memory figure.
"$tmp/milterload" -dir "$tmp/work" "$@"
