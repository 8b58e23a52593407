#!/usr/bin/env bash
# Interop: ferry against independent implementations from Debian's packages
# (cmd/ferry TestInterop): Mosquitto 2.0, pymodbus 3.0 (Modbus TCP server,
# scripts/interop/modbus_server.py) and nats-server 2.9 (JetStream). Also
# the uplink's post-outage reconcile against that nats-server
# (uplink TestReconcileAfterLongOutageExternalServer).
#
# Installs the packages when missing (apt-get; root or sudo), then runs the
# tests. The test starts its own broker and servers on free ports: the
# system services the packages may start (mosquitto on 1883) are not used.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH:/usr/sbin:/sbin"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" # go.mod names the toolchain (docs/security.md)

need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v nats-server >/dev/null || need+=(nats-server)
# Debian's python: the pymodbus package is for it, not for a python on PATH.
/usr/bin/python3 -c 'import pymodbus' 2>/dev/null || need+=(python3-pymodbus)
if [ ${#need[@]} -gt 0 ]; then
	echo "interop: installing ${need[*]}"
	sudo=()
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || { echo "interop: need root or sudo to install ${need[*]}"; exit 1; }
		sudo=(sudo)
	fi
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
echo "interop: $(mosquitto -h 2>&1 | head -n 1); $(nats-server --version); pymodbus $(/usr/bin/python3 -c 'import pymodbus; print(pymodbus.__version__)')"

FERRY_NATS_SERVER="$(command -v nats-server)" go test -race -count=1 -v -run '^TestReconcileAfterLongOutageExternalServer$' ./uplink
FERRY_INTEROP=1 go test -race -count=1 -v -timeout 10m -run '^TestInterop$' ./cmd/ferry
