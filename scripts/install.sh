#!/bin/sh
# install.sh — install ferry on a systemd machine without dpkg, with the
# same layout as the .deb:
#
#   /usr/bin/ferry                       the binary
#   /lib/systemd/system/ferry.service    the unit (/usr/lib/… when /lib is absent)
#   /usr/lib/sysusers.d/ferry.conf       the ferry user, member of dialout
#   /etc/ferry/ferry.yaml                the configuration (never overwritten)
#   /etc/ferry/devices.d/                device maps
#   /var/lib/ferry/                      data: buffer, alert state, certificates
#   /usr/share/doc/ferry/                operations.md and example configurations
#
# Usage:
#   install.sh [--binary FILE] [--root DIR] [--no-start]
#   install.sh --uninstall [--purge] [--root DIR]
#
# Run it from an unpacked release tarball (ferry-VERSION-linux-ARCH/), or
# from a source checkout after `make build` or `make dist`. Running it again
# upgrades: the binary and unit are replaced, the configuration is kept, a
# running ferry is restarted.
#
#   --binary FILE  install this binary instead of the one found
#   --root DIR     install below DIR (an image being built, a test); the
#                  user is created in DIR's files, systemd is not contacted
#   --no-start     enable ferry but do not start it (first install only)
#   --uninstall    stop and remove ferry; /etc/ferry and /var/lib/ferry stay
#   --purge        with --uninstall: delete /etc/ferry and /var/lib/ferry too
#                  (buffered data not yet sent upstream is lost)
set -eu

ARGS="$*"
ROOT=
BINARY=
UNINSTALL=0
PURGE=0
NO_START=0

die() {
	echo "install.sh: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case "$1" in
	--root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
	--root=*) ROOT=${1#--root=} ;;
	--binary) [ $# -ge 2 ] || die "--binary needs a file"; BINARY=$2; shift ;;
	--binary=*) BINARY=${1#--binary=} ;;
	--uninstall) UNINSTALL=1 ;;
	--purge) PURGE=1 ;;
	--no-start) NO_START=1 ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
	shift
done
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"

if [ -n "$ROOT" ]; then
	[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
	ROOT=$(cd "$ROOT" && pwd)
	[ "$ROOT" = / ] && ROOT=
fi
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
	die "must run as root to install into / (try: sudo $0 $ARGS), or use --root DIR"
fi
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

HERE=$(cd "$(dirname "$0")" && pwd)

# Where the pieces are: an unpacked tarball has them side by side, a
# source checkout in its own folders.
if [ -f "$HERE/ferry.service" ]; then
	SRC_UNIT=$HERE/ferry.service
	SRC_SYSUSERS=$HERE/ferry.sysusers
	SRC_CONF=$HERE/ferry.yaml
	SRC_MAINT=$HERE/maint
	SRC_DOC=$HERE/doc/operations.md
	SRC_EXAMPLES=$HERE/doc/examples
	FOUND_BINARY=$HERE/ferry
else
	TOP=$(cd "$HERE/.." && pwd)
	SRC_UNIT=$TOP/systemd/ferry.service
	SRC_SYSUSERS=$TOP/systemd/ferry.sysusers
	SRC_CONF=$TOP/configs/ferry.yaml
	SRC_MAINT=$TOP/scripts/deb
	SRC_DOC=$TOP/docs/operations.md
	SRC_EXAMPLES=
	case "$(uname -m)" in
	x86_64 | amd64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	armv7* | armv8l) arch=armv7 ;;
	*) arch=unknown ;;
	esac
	FOUND_BINARY=$TOP/dist/ferry-linux-$arch
	[ -f "$FOUND_BINARY" ] || FOUND_BINARY=$TOP/bin/ferry
fi

# The unit goes where the distribution keeps packaged units.
UNITDIR=/lib/systemd/system
if [ ! -d "$ROOT/lib/systemd/system" ] && [ -d "$ROOT/usr/lib/systemd/system" ]; then
	UNITDIR=/usr/lib/systemd/system
fi

# maint runs one of the package's maintainer scripts, so that this install
# and the .deb set the machine up the same way.
maint() {
	script=$1
	shift
	[ -f "$SRC_MAINT/$script" ] || die "$SRC_MAINT/$script is missing"
	if [ "$IS_ROOT" = 0 ]; then
		echo "not root: skipping the $script steps (user ferry, ownership, systemd)"
		return 0
	fi
	DPKG_ROOT=$ROOT FERRY_NO_START=$NO_START sh "$SRC_MAINT/$script" "$@"
}

# put FILE DEST MODE copies FILE to DEST atomically (a running ferry keeps
# its open binary; the next start uses the new one).
put() {
	mkdir -p "$(dirname "$2")"
	cp "$1" "$2.install-tmp"
	chmod "$3" "$2.install-tmp"
	mv -f "$2.install-tmp" "$2"
}

if [ "$UNINSTALL" = 1 ]; then
	maint prerm remove
	rm -f "$ROOT/usr/bin/ferry" "$ROOT/lib/systemd/system/ferry.service" "$ROOT/usr/lib/systemd/system/ferry.service" \
		"$ROOT/usr/lib/sysusers.d/ferry.conf"
	rm -rf "$ROOT/usr/share/doc/ferry"
	if [ "$PURGE" = 1 ]; then
		maint postrm purge
		rm -rf "$ROOT/var/lib/ferry" "$ROOT/etc/ferry"
		echo "ferry removed with its configuration and data (the ferry user stays)"
	else
		maint postrm remove
		echo "ferry removed; kept $ROOT/etc/ferry and $ROOT/var/lib/ferry (--uninstall --purge deletes them)"
	fi
	exit 0
fi

[ -n "$BINARY" ] || BINARY=$FOUND_BINARY
[ -f "$BINARY" ] || die "no ferry binary at $BINARY: run 'make build' or 'make dist', or give --binary FILE"
for f in "$SRC_UNIT" "$SRC_SYSUSERS" "$SRC_CONF"; do
	[ -f "$f" ] || die "$f is missing"
done
if ! version=$("$BINARY" version 2>&1); then
	[ -n "$ROOT" ] || die "$BINARY does not run here (wrong architecture?): $version"
	version="(not runnable on this machine: $BINARY)"
fi

# An upgrade when the binary is already there.
OLD=
[ -f "$ROOT/usr/bin/ferry" ] && OLD=installed

put "$BINARY" "$ROOT/usr/bin/ferry" 0755
put "$SRC_UNIT" "$ROOT$UNITDIR/ferry.service" 0644
put "$SRC_SYSUSERS" "$ROOT/usr/lib/sysusers.d/ferry.conf" 0644
mkdir -p "$ROOT/etc/ferry/devices.d" "$ROOT/var/lib/ferry"
chmod 0750 "$ROOT/etc/ferry" "$ROOT/etc/ferry/devices.d" "$ROOT/var/lib/ferry"
if [ -f "$ROOT/etc/ferry/ferry.yaml" ]; then
	echo "kept $ROOT/etc/ferry/ferry.yaml (the shipped default is $ROOT/usr/share/doc/ferry/examples/ferry.yaml)"
else
	put "$SRC_CONF" "$ROOT/etc/ferry/ferry.yaml" 0640
fi
DOC=$ROOT/usr/share/doc/ferry
mkdir -p "$DOC/examples"
[ -f "$SRC_DOC" ] && put "$SRC_DOC" "$DOC/operations.md" 0644
put "$SRC_CONF" "$DOC/examples/ferry.yaml" 0644
if [ -n "$SRC_EXAMPLES" ]; then
	cp -R "$SRC_EXAMPLES/." "$DOC/examples/"
else
	put "$TOP/configs/example.yaml" "$DOC/examples/example.yaml" 0644
	mkdir -p "$DOC/examples/devices.d"
	cp "$TOP"/configs/devices.d/*.yaml "$DOC/examples/devices.d/"
fi

maint postinst configure "$OLD"

if [ -z "$ROOT" ]; then
	/usr/bin/ferry validate /etc/ferry/ferry.yaml || echo "install.sh: /etc/ferry/ferry.yaml does not validate: fix it, then systemctl restart ferry" >&2
fi
if [ -n "$OLD" ]; then
	echo "ferry upgraded: $version"
else
	echo "ferry installed: $version"
fi
