#!/usr/bin/env bash
# Builds the packages (scripts/package.sh) and tries the Debian one as an
# admin would, on this machine, then removes every trace of it:
#
#   lintian (no errors); dpkg -i; the user, the log directory, the
#   conffile, the unit installed but not enabled; spf-milter validate on
#   the installed config; spf-milter version; systemd-analyze verify on the
#   installed unit; mandoc -T lint and man on the installed pages; a
#   reinstall keeps an edited config; dpkg --purge leaves no file,
#   directory, link, user or group behind. The RPM is checked for its files
#   and scriptlets with rpm -qp.
#
# Needs root, and a machine where spf-milter is not installed; CI runs it
# from .ci/run. It works without systemd as PID 1 (a container): the unit
# is verified and enabled offline.
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
fail() {
	echo "package-test: $*" >&2
	exit 1
}

[[ "$(id -u)" -eq 0 ]] || fail "must run as root: it installs and purges the package"
for tool in dpkg lintian mandoc man systemd-analyze systemctl rpm; do
	command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/test.sh installs it)"
done
if dpkg-query -W -f='${Status}' spf-milter 2>/dev/null | grep -q 'installed'; then
	fail "spf-milter is installed already; this test installs and purges its own build"
fi
if getent passwd spf-milter >/dev/null || getent group spf-milter >/dev/null || [[ -e /etc/spf-milter || -e /var/log/spf-milter ]]; then
	fail "an spf-milter user, group, /etc/spf-milter or /var/log/spf-milter exists already: the purge check would be meaningless"
fi

step "scripts/package.sh"
scripts/package.sh
debs=(dist/spf-milter_*.deb)
rpms=(dist/spf-milter-*.rpm)
[[ ${#debs[@]} -eq 1 && -f "${debs[0]}" ]] || fail "want one .deb in dist/, have: ${debs[*]}"
[[ ${#rpms[@]} -eq 1 && -f "${rpms[0]}" ]] || fail "want one .rpm in dist/, have: ${rpms[*]}"
deb="${debs[0]}"
rpm="${rpms[0]}"

step "mandoc -T lint on the sources"
(cd docs/man && mandoc -T lint spf-milter.8 spf-milter.yaml.5)

step "lintian $deb"
lintian --fail-on error --display-info "$deb"

step "rpm -qp $rpm"
rpm_files="$(rpm -qp --list "$rpm")"
for f in /usr/bin/spf-milter /usr/lib/systemd/system/spf-milter.service /etc/spf-milter/config.yaml \
	/usr/share/man/man8/spf-milter.8.gz /usr/share/man/man5/spf-milter.yaml.5.gz /var/log/spf-milter; do
	grep -qx "$f" <<<"$rpm_files" || fail "the RPM lacks $f"
done
rpm -qp --configfiles "$rpm" | grep -qx /etc/spf-milter/config.yaml || fail "the RPM's config is not %config"
rpm -qp --scripts "$rpm" | grep -q 'useradd -r' || fail "the RPM's %pre does not create the user"

# From here on the package is on the machine: purge it whatever happens.
purge() { dpkg --purge spf-milter >/dev/null 2>&1 || true; }
trap purge EXIT

step "dpkg -i $deb"
dpkg -i "$deb"
files="$(dpkg -L spf-milter)"
unit=/lib/systemd/system/spf-milter.service
for f in /usr/bin/spf-milter "$unit" /etc/spf-milter/config.yaml \
	/usr/share/man/man8/spf-milter.8.gz /usr/share/man/man5/spf-milter.yaml.5.gz /var/log/spf-milter; do
	[[ -e "$f" ]] || fail "$f was not installed"
done
dpkg-query -W -f='${Conffiles}\n' spf-milter | grep -q '^ /etc/spf-milter/config.yaml ' ||
	fail "/etc/spf-milter/config.yaml is not a conffile"
cmp /etc/spf-milter/config.yaml examples/config.yaml || fail "the installed config is not examples/config.yaml"

step "the system user and the log directory"
getent passwd spf-milter | grep -q ':/nonexistent:/usr/sbin/nologin$' || fail "no system user spf-milter without home and shell: $(getent passwd spf-milter)"
uid="$(id -u spf-milter)"
((uid < 1000)) || fail "spf-milter's uid $uid is not a system uid"
getent group spf-milter >/dev/null || fail "no group spf-milter"
[[ "$(stat -c '%U %a' /var/log/spf-milter)" == "spf-milter 750" ]] ||
	fail "/var/log/spf-milter is $(stat -c '%U %a' /var/log/spf-milter), want spf-milter 750"

step "the unit is installed but not enabled"
state="$(systemctl is-enabled spf-milter.service 2>&1 || true)"
[[ "$state" == disabled ]] || fail "systemctl is-enabled says $state, want disabled"
if compgen -G '/etc/systemd/system/*.wants/spf-milter.service' >/dev/null; then
	fail "the install enabled the unit"
fi

step "spf-milter validate --config /etc/spf-milter/config.yaml"
spf-milter validate --config /etc/spf-milter/config.yaml >/dev/null

step "spf-milter version"
spf-milter version
version="$(dpkg-query -W -f='${Version}' spf-milter)"
first="$(spf-milter version | head -1)"
[[ "$first" != *devel* ]] || fail "the packaged binary says devel"
# The package's version is the binary's, with - written + and . (see
# scripts/package.sh), and the Debian revision -1.
binver="${first#spf-milter }"
base="${binver%%-*}"
[[ "$base" == "$binver" ]] || { rest="${binver#"$base"-}"; binver="$base+${rest//-/.}"; }
[[ "$version" == "$binver-1" ]] || fail "package version $version, binary version $first"

step "systemd-analyze verify $unit"
out="$(systemd-analyze verify "$unit" 2>&1)" || fail "systemd-analyze verify failed: $out"
# Unknown keys are only warnings to verify: any word about the unit fails.
if grep -q 'spf-milter' <<<"$out"; then
	fail "systemd-analyze verify: $out"
fi

step "man pages"
for page in /usr/share/man/man8/spf-milter.8.gz /usr/share/man/man5/spf-milter.yaml.5.gz; do
	# Linted alone, a page may not find the other in mandoc's database
	# (which mandoc's own makewhatis keeps, not man-db): only that is let
	# through.
	lint="$(mandoc -T lint "$page" 2>&1 || true)"
	lint="$(grep -v -e 'referenced manual not found: Xr spf-milter' -e 'mandoc.db lacks spf-milter' <<<"$lint" || true)"
	[[ -z "$lint" ]] || fail "mandoc -T lint $page: $lint"
	man -l "$page" >/dev/null
done
[[ "$(man -w 8 spf-milter)" == /usr/share/man/man8/spf-milter.8.gz ]] || fail "man 8 spf-milter does not find the page"
[[ "$(man -w 5 spf-milter.yaml)" == /usr/share/man/man5/spf-milter.yaml.5.gz ]] || fail "man 5 spf-milter.yaml does not find the page"
man -l /usr/share/man/man5/spf-milter.yaml.5.gz | grep -q 'dns.cache_bytes' || fail "spf-milter.yaml(5) lacks dns.cache_bytes"

step "a reinstall keeps the admin's config"
echo "# edited by the admin" >>/etc/spf-milter/config.yaml
dpkg -i --force-confold "$deb" >/dev/null
tail -1 /etc/spf-milter/config.yaml | grep -qx '# edited by the admin' || fail "the reinstall overwrote the edited config"

step "what an admin leaves behind: the unit enabled, a decision log"
systemctl enable spf-milter.service 2>&1
compgen -G '/etc/systemd/system/*.wants/spf-milter.service' >/dev/null || fail "systemctl enable made no link"
echo '{}' >/var/log/spf-milter/decisions.jsonl
chown spf-milter: /var/log/spf-milter/decisions.jsonl

step "dpkg --purge spf-milter"
trap - EXIT
dpkg --purge spf-milter
if dpkg-query -W -f='${Status}' spf-milter 2>/dev/null | grep -q 'installed'; then
	fail "spf-milter is still installed"
fi
while read -r f; do
	# Directories the package shares with the system stay.
	[[ -d "$f" && "$f" != */spf-milter && "$f" != /etc/spf-milter ]] && continue
	[[ ! -e "$f" && ! -L "$f" ]] || fail "$f is left after the purge"
done <<<"$files"
for f in /etc/spf-milter /var/log/spf-milter /run/spf-milter; do
	[[ ! -e "$f" ]] || fail "$f is left after the purge"
done
if compgen -G '/etc/systemd/system/*.wants/spf-milter.service' >/dev/null; then
	fail "the enable link is left after the purge"
fi
! getent passwd spf-milter >/dev/null || fail "the user spf-milter is left after the purge"
! getent group spf-milter >/dev/null || fail "the group spf-milter is left after the purge"

step "package test passed"
