#!/bin/sh
# dist.sh — release archives from the static binaries `make cross` built.
#
#   scripts/dist.sh VERSION
#   scripts/dist.sh --sums      only rewrite dist/SHA256SUMS (after make deb)
#
# For each dist/ferry-linux-ARCH it writes dist/ferry-VERSION-linux-ARCH.tar.gz
# holding one folder:
#
#   ferry  install.sh  ferry.service  ferry.sysusers  ferry.yaml
#   maint/{postinst,prerm,postrm}  doc/operations.md  doc/examples/…
#
# then dist/SHA256SUMS over the binaries, archives and any .deb in dist/.
# DIST=DIR uses another folder than dist/. Archives are reproducible: fixed
# owner, order and modification time (SOURCE_DATE_EPOCH, else the commit's).
set -eu
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: scripts/dist.sh VERSION|--sums" >&2; exit 2; }
VERSION=$1
DIST=${DIST:-dist}
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

sums() {
	(
		cd "$DIST"
		ls ferry-linux-* ferry-*.tar.gz ./*.deb 2>/dev/null | sed 's|^\./||' | sort | xargs sha256sum >SHA256SUMS
	)
	echo "wrote $DIST/SHA256SUMS"
}
if [ "$VERSION" = --sums ]; then
	sums
	exit 0
fi

found=0
for bin in "$DIST"/ferry-linux-*; do
	case "$bin" in *.tar.gz | *.deb | *.sha256) continue ;; esac
	[ -f "$bin" ] || continue
	found=1
	arch=${bin##*/ferry-linux-}
	name=ferry-$VERSION-linux-$arch
	stage=$(mktemp -d)
	d=$stage/$name
	mkdir -p "$d/maint" "$d/doc/examples/devices.d"
	cp "$bin" "$d/ferry"
	cp scripts/install.sh systemd/ferry.service systemd/ferry.sysusers configs/ferry.yaml "$d/"
	cp scripts/deb/postinst scripts/deb/prerm scripts/deb/postrm "$d/maint/"
	cp docs/operations.md "$d/doc/"
	cp configs/ferry.yaml configs/example.yaml "$d/doc/examples/"
	cp configs/devices.d/*.yaml "$d/doc/examples/devices.d/"
	chmod 0755 "$d/ferry" "$d/install.sh" "$d"/maint/*
	tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
		-cf - "$name" | gzip -n -9 >"$DIST/$name.tar.gz"
	rm -rf "$stage"
	echo "wrote $DIST/$name.tar.gz"
done
[ "$found" = 1 ] || { echo "dist.sh: no $DIST/ferry-linux-* binaries (run make cross)" >&2; exit 1; }

sums
