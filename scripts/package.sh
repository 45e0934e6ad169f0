#!/usr/bin/env bash
# Builds the Debian and RPM packages of spf-milter into dist/:
#
#   scripts/package.sh    # dist/spf-milter_VERSION-1_ARCH.deb, dist/spf-milter-VERSION-1.ARCH.rpm
#
# The binary comes from scripts/build.sh, so the package's version is the
# binary's (git describe; 0.0.0+COMMIT without a tag), written the way
# dpkg and rpm order versions: 1.2.3-4-gabcdef becomes 1.2.3+4.gabcdef.
# The packages are described in deploy/package/nfpm.yaml and made by
# nfpm, a Go program run at the pinned version below (the first run
# downloads and builds it). Set FORMATS="deb" to build only one.
set -euo pipefail

cd "$(dirname "$0")/.."

NFPM_VERSION="v2.48.0"
FORMATS="${FORMATS:-deb rpm}"

step() { printf '\n==> %s\n' "$*"; }

# deploy/package/nfpm.yaml takes the built files from here.
STAGE=dist/stage
rm -rf "$STAGE"
mkdir -p "$STAGE"
trap 'rm -rf "$STAGE"' EXIT

step "scripts/build.sh"
OUT="$STAGE/spf-milter" scripts/build.sh >/dev/null
VERSION="$("$STAGE/spf-milter" version | sed -n '1s/^spf-milter //p')"
base="${VERSION%%-*}"
if [[ "$base" != "$VERSION" ]]; then
	rest="${VERSION#"$base"-}"
	VERSION="$base+${rest//-/.}"
fi
ARCH="$(go env GOARCH)"
export VERSION ARCH
echo "version $VERSION, $ARCH"

# Man pages and the copyright file, as Debian wants them: gzipped with no
# timestamp, and in the machine-readable copyright format.
gzip -9n <docs/man/spf-milter.8 >"$STAGE/spf-milter.8.gz"
gzip -9n <docs/man/spf-milter.yaml.5 >"$STAGE/spf-milter.yaml.5.gz"
# The years of the copyright notice are those of the history.
first="$(git log --reverse --format=%cd --date=format:%Y 2>/dev/null | sed -n 1p)"
last="$(git log -1 --format=%cd --date=format:%Y 2>/dev/null || true)"
years="${first:-$(date +%Y)}"
[[ -z "$last" || "$last" == "$years" ]] || years="$years-$last"
{
	echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
	echo "Upstream-Name: spf-milter"
	echo "Source: https://github.com/spf-milter/spf-milter"
	echo
	echo "Files: *"
	echo "Copyright: $years The spf-milter authors"
	echo "License: Expat"
	echo
	echo "License: Expat"
	# The license text, without its title and copyright line, indented
	# with blank lines as " .".
	sed -n '/^Permission/,$p' LICENSE | sed -e 's/^$/./' -e 's/^/ /'
} >"$STAGE/copyright"

# The Debian changelog names the build; what changed is in CHANGELOG.md,
# shipped as the upstream changelog. The date is the commit's, so that a
# build of one commit gives one package.
date="$(git log -1 --format=%cD 2>/dev/null || date -R)"
{
	echo "spf-milter ($VERSION-1) unstable; urgency=medium"
	echo
	echo "  * spf-milter $VERSION; the changes are in changelog.gz."
	echo
	echo " -- The spf-milter authors <spf-milter@users.noreply.github.com>  $date"
} | gzip -9n >"$STAGE/changelog.Debian.gz"
gzip -9n <CHANGELOG.md >"$STAGE/changelog.gz"

rm -f dist/spf-milter_*.deb dist/spf-milter-*.rpm
for format in $FORMATS; do
	step "nfpm $format"
	GOFLAGS= go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" package \
		--config deploy/package/nfpm.yaml --packager "$format" --target dist/
done
ls -l dist/*.deb dist/*.rpm 2>/dev/null || true
