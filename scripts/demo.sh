#!/usr/bin/env bash
# make demo: runs a simulated plant (plantsim) and ferry with the
# configuration plantsim writes for it, then shows what arrives upstream in
# NATS JetStream: live values from all three protocols (Modbus presses, an
# OPC UA boiler, an MQTT sensor), and the overheating alert of press1 about
# 20 s after the start, which ferry also raises locally (marked LOCAL).
# Faults repeat every 2 minutes: press1 overheats, the hall sensor's humidity
# sticks, press2 goes silent. Ctrl-C stops everything.
#
# FERRY_DEMO_HTTP (default 127.0.0.1:9440) is the console's address: set it
# when that port is taken. FERRY_DEMO_DIR (default .ferry-demo) holds the
# binaries, configuration, logs and data.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" # go.mod names the toolchain (docs/security.md)

DIR=${FERRY_DEMO_DIR:-.ferry-demo}
HTTP=${FERRY_DEMO_HTTP:-127.0.0.1:9440}
rm -rf "$DIR"
mkdir -p "$DIR"

echo "building ferry and plantsim…"
go build -o "$DIR/ferry" ./cmd/ferry
go build -o "$DIR/plantsim" ./cmd/plantsim

# The programs run in their own sessions (setsid), so that Ctrl-C reaches
# only this script, which then stops each of them once, cleanly.
pids=()
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "stopping…"
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "logs and data are in $DIR/"
}
trap cleanup INT TERM EXIT

setsid "$DIR/plantsim" -write-config "$DIR/ferry.yaml" -data-dir "$DIR/data" -http "$HTTP" -nats-dir "$DIR/nats" >"$DIR/plantsim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$DIR/ferry.yaml" ] && break; sleep 0.1; done
[ -s "$DIR/ferry.yaml" ] || { cat "$DIR/plantsim.log"; echo "plantsim did not start"; exit 1; }
sed -n '/plantsim running/,/fault cycle/p' "$DIR/plantsim.log"

"$DIR/ferry" validate "$DIR/ferry.yaml"
setsid "$DIR/ferry" run -config "$DIR/ferry.yaml" >"$DIR/ferry.log" 2>&1 &
ferry=$!
pids+=($ferry)
# Wait for ferry's listener: a start that fails (a port in use, most
# often) shows its cause here, not only in the log file.
for _ in $(seq 100); do
	grep -q 'msg="http listening"' "$DIR/ferry.log" 2>/dev/null && break
	if ! kill -0 "$ferry" 2>/dev/null; then
		echo
		echo "ferry did not start:"
		tail -n 5 "$DIR/ferry.log" | sed 's/^/  /'
		if grep -q 'address already in use' "$DIR/ferry.log"; then
			echo
			echo "Something else listens on $HTTP. Pick another address for the console, e.g."
			echo "  FERRY_DEMO_HTTP=127.0.0.1:9441 make demo"
		fi
		exit 1
	fi
	sleep 0.1
done
echo "ferry running: console on http://$HTTP/, metrics on http://$HTTP/metrics (log: $DIR/ferry.log)"
echo
echo "what arrives upstream (ferry tail), and alerts raised locally (LOCAL):"
# The local log sink's alert lines; tail ends with ferry.
tail -n +1 -F --pid="$ferry" "$DIR/ferry.log" 2>/dev/null |
	grep --line-buffered -E 'msg="alert (raised|cleared|acknowledged)' |
	sed -u -E 's/^time=([^ ]+) .*msg="([^"]*)".*/LOCAL  \1 \2/' &
pids+=($!)
# A few points of each protocol; `ferry tail -config $DIR/ferry.yaml -compact` shows them all.
setsid "$DIR/ferry" tail -config "$DIR/ferry.yaml" -compact \
	-point press1.oil_temp -point press1.running -point press2.oil_temp \
	-point boiler.pressure -point boiler.temperature \
	-point env.temperature -point env.humidity &
pids+=($!)
wait "$ferry"
