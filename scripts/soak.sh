#!/usr/bin/env bash
# Soak: the real ferry binary for SOAK (default 30m) against third-party
# servers — node-opcua (npm, pinned in internal/testpeer/testdata/nodeopcua),
# Debian's pymodbus, mosquitto and nats-server — each restarted once in the
# middle; prints the table of what a plant engineer would notice
# (internal/soak, issue 27).
#
# Installs the Debian packages when missing (apt-get; root or sudo);
# node-opcua is installed by the test itself (npm ci into the user cache,
# once). FERRY_SOAK_REPORT=FILE appends the table to FILE.
# FERRY_SOAK_ARTIFACTS=DIR (default: a new directory under ${TMPDIR:-/tmp})
# keeps the memory series (one sample a minute: RSS, anonymous and
# file-backed, Go heap in use, goroutines), the table and ferry's heap
# profiles after the warm-up and at the end, with their difference.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH:/usr/sbin:/sbin"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" # go.mod names the toolchain (docs/security.md)
SOAK="${SOAK:-30m}"

need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v nats-server >/dev/null || need+=(nats-server)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# Debian's python: the pymodbus package is for it, not for a python on PATH.
/usr/bin/python3 -c 'import pymodbus' 2>/dev/null || need+=(python3-pymodbus)
if [ ${#need[@]} -gt 0 ]; then
	echo "soak: installing ${need[*]}"
	sudo=()
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || { echo "soak: need root or sudo to install ${need[*]}"; exit 1; }
		sudo=(sudo)
	fi
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# The test's time limit: the soak plus 20 minutes (start-up, drain, reading
# the stream back).
secs() {
	local d="$1" total=0 n
	while [[ "$d" =~ ^([0-9]+)(h|m|s)(.*)$ ]]; do
		n=${BASH_REMATCH[1]}
		case ${BASH_REMATCH[2]} in h) total=$((total + n * 3600));; m) total=$((total + n * 60));; s) total=$((total + n));; esac
		d=${BASH_REMATCH[3]}
	done
	[ -z "$d" ] && [ "$total" -gt 0 ] || { echo "soak: SOAK=$1: want a duration such as 5m, 30m or 1h30m" >&2; exit 2; }
	echo "$total"
}
limit=$(( $(secs "$SOAK") + 1200 ))s

export FERRY_SOAK_ARTIFACTS="${FERRY_SOAK_ARTIFACTS:-$(mktemp -d "${TMPDIR:-/tmp}/ferry-soak.XXXXXX")}"
echo "soak: artifacts in $FERRY_SOAK_ARTIFACTS"

SOAK="$SOAK" go test -tags soak -v -count=1 -timeout "$limit" -run '^TestSoak$' ./internal/soak
