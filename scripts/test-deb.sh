#!/bin/sh
# test-deb.sh — check a ferry .deb without installing it on this machine:
# its file list and conffiles, then its maintainer scripts run against the
# package unpacked in a temporary root (DPKG_ROOT), twice (install, then
# upgrade: idempotent), with systemd-sysusers and with the shadow tools,
# then remove and purge.
#
#   scripts/test-deb.sh [--list-only] dist/ferry_1.4.0-1_amd64.deb
#
# Needs dpkg-deb and awk; the maintainer script checks need root (the
# scripts chown); --list-only checks the file list and control data only.
# CI runs it.
set -eu
LIST_ONLY=0
if [ "${1:-}" = --list-only ]; then LIST_ONLY=1; shift; fi
[ $# -eq 1 ] || { echo "usage: scripts/test-deb.sh [--list-only] FILE.deb" >&2; exit 2; }
DEB=$1
[ "$LIST_ONLY" = 1 ] || [ "$(id -u)" = 0 ] || { echo "test-deb.sh: needs root for the maintainer scripts (the scripts chown); --list-only skips them" >&2; exit 1; }

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
ok() { echo "ok: $*"; }

# 1. The file list.
list=$(dpkg-deb -c "$DEB")
for f in ./usr/bin/ferry ./lib/systemd/system/ferry.service ./usr/lib/sysusers.d/ferry.conf \
	./etc/ferry/ferry.yaml ./etc/ferry/devices.d/ ./usr/share/doc/ferry/operations.md \
	./usr/share/doc/ferry/examples/ferry.yaml ./etc/ferry/ferry.schema.json \
	./usr/share/doc/ferry/examples/ferry.schema.json; do
	echo "$list" | awk '{print $NF}' | grep -qx "$f" || fail "$DEB does not hold $f"
done
echo "$list" | grep -q '^-rwxr-xr-x root/root .* \./usr/bin/ferry$' || fail "/usr/bin/ferry is not root 0755"
ok "dpkg-deb -c lists the binary, unit, sysusers file, config, devices.d and docs"

# 2. The conffile and the maintainer scripts.
[ "$(dpkg-deb -I "$DEB" conffiles)" = /etc/ferry/ferry.yaml ] || fail "conffiles is not /etc/ferry/ferry.yaml"
for s in postinst prerm postrm; do
	dpkg-deb -I "$DEB" | grep -q " $s " || fail "no $s"
done
ok "dpkg-deb -I: conffile /etc/ferry/ferry.yaml, postinst, prerm, postrm"
[ "$LIST_ONLY" = 0 ] || exit 0

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
dpkg-deb -e "$DEB" "$WORK/control"

# newroot DIR: the package unpacked over a minimal /etc.
newroot() {
	r=$1
	mkdir -p "$r/etc"
	dpkg-deb -x "$DEB" "$r"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\ndialout:x:20:\n' >"$r/etc/group"
	printf 'root:*:19000:0:99999:7:::\n' >"$r/etc/shadow"
	printf 'root:*::\ndialout:*::\n' >"$r/etc/gshadow"
	chmod 0640 "$r/etc/shadow" "$r/etc/gshadow"
}

field() { awk -F: -v n="$2" '$1 == n { print $'"$3"' }' "$1"; }

check_installed() {
	r=$1
	[ "$(grep -c '^ferry:' "$r/etc/passwd")" = 1 ] || fail "user ferry not created exactly once in $r/etc/passwd"
	uid=$(field "$r/etc/passwd" ferry 3)
	gid=$(field "$r/etc/group" ferry 3)
	[ -n "$gid" ] || fail "group ferry not created"
	field "$r/etc/group" dialout 4 | tr , '\n' | grep -qx ferry || fail "ferry is not in dialout"
	[ "$(stat -c '%u:%g %a' "$r/var/lib/ferry")" = "$uid:$gid 750" ] || fail "/var/lib/ferry is $(stat -c '%u:%g %a' "$r/var/lib/ferry")"
	[ "$(stat -c '%u:%g %a' "$r/etc/ferry")" = "0:$gid 750" ] || fail "/etc/ferry is $(stat -c '%u:%g %a' "$r/etc/ferry")"
	[ "$(stat -c '%u:%g %a' "$r/etc/ferry/ferry.yaml")" = "0:$gid 640" ] || fail "ferry.yaml is $(stat -c '%u:%g %a' "$r/etc/ferry/ferry.yaml")"
	if command -v systemctl >/dev/null 2>&1; then
		[ -L "$r/etc/systemd/system/multi-user.target.wants/ferry.service" ] || fail "ferry.service not enabled"
	fi
	if "$r/usr/bin/ferry" version >/dev/null 2>&1; then
		"$r/usr/bin/ferry" validate "$r/etc/ferry/ferry.yaml" >/dev/null || fail "the shipped configuration does not validate"
	fi
}

run() { DPKG_ROOT=$1 sh "$WORK/control/$2" "$3" "${4:-}"; }

# 3. Install, upgrade, remove, purge; with systemd-sysusers when present.
R=$WORK/root
newroot "$R"
run "$R" postinst configure ""
check_installed "$R"
echo "data" >"$R/var/lib/ferry/buffer.db"
run "$R" postinst configure "0.0.1"
check_installed "$R"
ok "postinst: user ferry in dialout, owners and modes, unit enabled, config validates; idempotent on upgrade"
run "$R" prerm remove
run "$R" postrm remove
[ ! -e "$R/etc/systemd/system/multi-user.target.wants/ferry.service" ] || fail "unit still enabled after remove"
[ -f "$R/var/lib/ferry/buffer.db" ] && [ -f "$R/etc/ferry/ferry.yaml" ] || fail "remove deleted data or configuration"
run "$R" postrm purge
[ ! -e "$R/var/lib/ferry" ] && [ ! -e "$R/etc/ferry/ferry.yaml" ] || fail "purge left data or configuration"
grep -q '^ferry:' "$R/etc/passwd" || fail "purge deleted the user"
ok "remove keeps data and configuration, purge deletes them, the user stays"

# 4. The same without systemd-sysusers: groupadd/useradd/usermod --prefix.
BIN=$WORK/bin
mkdir -p "$BIN"
for t in sh awk cut getent install chown chmod groupadd useradd usermod rm rmdir id cat grep systemctl; do
	p=$(command -v "$t" 2>/dev/null) && ln -s "$p" "$BIN/$t"
done
R2=$WORK/root2
newroot "$R2"
PATH=$BIN run "$R2" postinst configure ""
PATH=$BIN run "$R2" postinst configure "0.0.1"
check_installed "$R2"
ok "postinst without systemd-sysusers (shadow tools): same result, idempotent"
echo "test-deb.sh: all checks passed for $DEB"
