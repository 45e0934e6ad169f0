#!/usr/bin/env bash
# Runs every fuzz target of the module, one after another, each for the
# same time, and appends one line per run to a log with the figures
# RELIABILITY.md sums: executions and the corpus reached.
#
#   scripts/fuzz.sh [DURATION]        # default 30s per target, or $FUZZTIME
#
# Settings (environment):
#   FUZZTIME          time per target when no argument is given (30s)
#   PARALLEL          fuzzing workers per target, go test's -parallel (1)
#   FUZZLOG           the log appended to (fuzz.log at the repository's root)
#   FUZZMINIMIZETIME  go test's -fuzzminimizetime (10s; see below)
#   FUZZFILTER        only the targets whose "package.Target" matches this
#                     extended regex, such as 'milter' or 'config\.FuzzParse$'
#
# Each log line holds, tab-separated: the UTC start time, the package, the
# target, the -fuzztime asked, -parallel, then from the last status line go
# test printed ("fuzz: elapsed: E, execs: N (R/sec), new interesting: M
# (total: T)"): elapsed, execs, new_interesting (inputs this run added to
# the corpus) and corpus_total (seeds, testdata and the cached corpus), and
# last ok or FAIL. A crasher is saved by go test under the package's
# testdata/fuzz/<Target>/ (commit it as a regression case); the script goes
# on with the other targets and exits non-zero if any failed.
#
# -fuzzminimizetime: when a worker finds an input with new coverage, go
# test minimizes it before going on, up to 60s by default, and shows 0
# execs/sec meanwhile; the executions of a minimization are not counted
# when it runs out of time. With large seeds (a whole config file) that
# takes most of a 30s run, so the default here is 10s.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

fuzztime="${1:-${FUZZTIME:-30s}}"
parallel="${PARALLEL:-1}"
log="${FUZZLOG:-$root/fuzz.log}"
minimize="${FUZZMINIMIZETIME:-10s}"
filter="${FUZZFILTER:-}"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

failed=()
ran=0
for pkg in $(go list ./...); do
	# go test -fuzz takes one package and one target at a time; the
	# targets are found afresh so that new ones are picked up.
	if ! list="$(go test -list '^Fuzz' "$pkg" 2>&1)"; then
		printf '%s\n' "$list" >&2
		echo "fuzz.sh: listing the targets of $pkg failed" >&2
		exit 1
	fi
	for name in $(grep '^Fuzz' <<<"$list" || true); do
		if [[ -n "$filter" ]] && ! [[ "${pkg##*/}.$name" =~ $filter ]]; then
			continue
		fi
		ran=$((ran + 1))
		start="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		printf '\n==> fuzz %s %s for %s, -parallel %s\n' "$pkg" "$name" "$fuzztime" "$parallel"
		status=ok
		if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" \
			-fuzzminimizetime "$minimize" -parallel "$parallel" "$pkg" 2>&1 | tee "$out"; then
			status=FAIL
			failed+=("$pkg $name")
		fi
		# The last status line; a run that failed before fuzzing (a seed
		# that fails) has none, and its figures are 0.
		last="$(grep -E '^fuzz: elapsed: ' "$out" | grep -E 'execs: [0-9]+' | tail -n 1 || true)"
		elapsed="$(sed -nE 's/^fuzz: elapsed: ([^,]+),.*/\1/p' <<<"$last")"
		execs="$(sed -nE 's/.*execs: ([0-9]+) .*/\1/p' <<<"$last")"
		interesting="$(sed -nE 's/.*new interesting: ([0-9]+) .*/\1/p' <<<"$last")"
		total="$(sed -nE 's/.*\(total: ([0-9]+)\).*/\1/p' <<<"$last")"
		printf '%s\t%s\t%s\tfuzztime=%s\tparallel=%s\telapsed=%s\texecs=%s\tnew_interesting=%s\tcorpus_total=%s\t%s\n' \
			"$start" "$pkg" "$name" "$fuzztime" "$parallel" "${elapsed:-0s}" "${execs:-0}" \
			"${interesting:-0}" "${total:-0}" "$status" >>"$log"
	done
done

printf '\n==> %d targets run, figures appended to %s\n' "$ran" "$log"
if ((ran == 0)); then
	echo "no fuzz target matched" >&2
	exit 1
fi
if ((${#failed[@]} > 0)); then
	printf 'FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
