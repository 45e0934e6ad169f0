#!/usr/bin/env bash
# Builds the spf-milter binary with its version and commit stamped in, the
# documented way to build a release:
#
#   scripts/build.sh            # writes bin/spf-milter
#   OUT=/tmp/x scripts/build.sh # writes /tmp/x
#
# The version is "git describe --tags --always --dirty" without the tag's
# leading v: 1.2.3 on the tag v1.2.3, 1.2.3-4-gabcdef123456 four commits
# after it, and "-dirty" appended when the tree has uncommitted changes.
# With no tag it is 0.0.0+COMMIT (0.0.0+COMMIT.dirty), and 0.0.0+unknown
# outside a git checkout; SPF_MILTER_VERSION overrides it. GOOS and GOARCH
# are honoured for a cross build. Prints the path written.
set -euo pipefail

cd "$(dirname "$0")/.."

OUT="${OUT:-bin/spf-milter}"

commit=""
described=""
if git rev-parse --git-dir >/dev/null 2>&1; then
	commit="$(git rev-parse HEAD)"
	if ! git diff --quiet HEAD -- 2>/dev/null; then
		commit="$commit-dirty"
	fi
	described="$(git describe --tags --always --dirty --abbrev=12 --match 'v[0-9]*')"
fi

if [[ -n "${SPF_MILTER_VERSION:-}" ]]; then
	version="$SPF_MILTER_VERSION"
elif [[ "$described" =~ ^v[0-9] ]]; then
	version="${described#v}"
elif [[ -n "$described" ]]; then
	# No release tag: describe gave the abbreviated hash, maybe -dirty.
	version="0.0.0+${described/-dirty/.dirty}"
else
	version="0.0.0+unknown"
fi

mkdir -p "$(dirname "$OUT")"
# -trimpath keeps the build machine's paths out of the binary; the VCS
# stamp is off because the commit is stamped here, also for a tree
# exported without .git. Without cgo the binary needs no C library; as a
# position-independent executable its address space layout is randomized
# (BUILDMODE=default for a platform without PIE).
CGO_ENABLED="${CGO_ENABLED:-0}" go build -trimpath -buildvcs=false -buildmode="${BUILDMODE:-pie}" \
	-ldflags "-s -w -X main.version=$version -X main.commit=${commit:-unknown}" \
	-o "$OUT" ./cmd/spf-milter
echo "$OUT"
