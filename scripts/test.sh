#!/usr/bin/env bash
# Installs what the tests need and runs every test: unit tests (with the race
# detector), the RFC 7208 suite, a short run of each fuzz target, and the
# benchmark module as a smoke test. Run from anywhere; exits non-zero on the
# first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

# System packages the tests need, installed with apt-get when running as
# root, space-separated. The end-to-end tests (integration/) run Postfix and
# NSD; Sendmail runs from its downloaded packages (it conflicts with
# Postfix) and needs m4, libwrap0 and liblockfile1; OpenDMARC and
# SpamAssassin read our headers downstream; docker-compose checks
# docker-compose.yml; chromium loads the why page in a real browser;
# pyspf-milter and python3-spf are the reference milter of the load
# generator's smoke test (bench/); swaks and dnsutils (dig) are for poking
# by hand. unbound is the caching resolver of the production topology's
# test (integration/unbound_test.go); lintian, mandoc, man-db, systemd (for
# systemd-analyze and systemctl) and rpm check the packages
# (scripts/package-test.sh).
APT_PACKAGES="postfix nsd swaks dnsutils m4 libwrap0 liblockfile1 docker-compose opendmarc spamassassin chromium pyspf-milter python3-spf unbound lintian mandoc man-db systemd rpm"

# How long each fuzz target runs; long enough to catch shallow crashes,
# short enough for every CI run.
FUZZTIME="${FUZZTIME:-10s}"

# The race detector makes the tests several times slower; set RACE= to run
# without it.
RACE="${RACE--race}"

step() { printf '\n==> %s\n' "$*"; }

if [[ -n "$APT_PACKAGES" ]] && [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
	missing=()
	for p in $APT_PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]} > 0)); then
		step "apt-get install ${missing[*]}"
		apt-get update
		# Postfix's package asks what kind of mail system this is; the
		# tests run their own instance, so: none (and no question).
		if [[ " ${missing[*]} " == *" postfix "* ]]; then
			echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
	fi
fi

step "go mod download"
go mod download
(cd bench && go mod download)

step "go build ./..."
go build ./...

step "go test $RACE -count=1 ./..."
# shellcheck disable=SC2086 # RACE is one flag or nothing
go test $RACE -count=1 ./...

# fuzz_once runs one fuzz target. On a loaded machine Go's fuzzing
# coordinator can miss its own deadline and report "context deadline
# exceeded" with no failing input; that run is tried once more. A real
# failure writes its input under testdata/fuzz and is never retried.
fuzz_once() {
	local pkg="$1" name="$2" out
	if out="$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1)"; then
		printf '%s\n' "$out"
		return 0
	fi
	printf '%s\n' "$out"
	if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
		step "fuzz $pkg $name again: the coordinator missed its deadline, no input failed"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"
		return
	fi
	return 1
}

# Every fuzz target of every package, found afresh so that new ones are
# picked up: "go test -fuzz" takes one package and one target at a time.
for pkg in $(go list ./...); do
	for name in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		step "fuzz $pkg $name for $FUZZTIME"
		fuzz_once "$pkg" "$name"
	done
done

step "bench module: tests and one iteration of each benchmark"
(cd bench && go test -count=1 -run . -bench . -benchtime 1x ./...)

step "all tests passed"
