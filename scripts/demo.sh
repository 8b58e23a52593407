#!/usr/bin/env bash
# make demo: runs a simulated plant (plantsim) and ferry with the
# configuration plantsim writes for it, then shows what arrives upstream in
# NATS JetStream: live values from all three protocols, and the overheating
# alert of press1 (within about 30 s), which ferry also logs locally.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

DIR=${FERRY_DEMO_DIR:-.ferry-demo}
HTTP=${FERRY_DEMO_HTTP:-127.0.0.1:9440}
rm -rf "$DIR"
mkdir -p "$DIR"

echo "building ferry and plantsim…"
go build -o "$DIR/ferry" ./cmd/ferry
go build -o "$DIR/plantsim" ./cmd/plantsim

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

"$DIR/plantsim" -write-config "$DIR/ferry.yaml" -data-dir "$DIR/data" -http "$HTTP" -nats-dir "$DIR/nats" >"$DIR/plantsim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$DIR/ferry.yaml" ] && break; sleep 0.1; done
[ -s "$DIR/ferry.yaml" ] || { cat "$DIR/plantsim.log"; echo "plantsim did not start"; exit 1; }
sed -n '/plantsim running/,/fault cycle/p' "$DIR/plantsim.log"

"$DIR/ferry" validate "$DIR/ferry.yaml"
"$DIR/ferry" run -config "$DIR/ferry.yaml" >"$DIR/ferry.log" 2>&1 &
pids+=($!)
echo "ferry running: console and metrics on http://$HTTP/ (log: $DIR/ferry.log)"
echo
echo "what arrives upstream (ferry tail; local alerts are marked LOCAL):"
tail -F "$DIR/ferry.log" 2>/dev/null | grep --line-buffered -E 'alert (raised|cleared|acknowledged)' | sed -u 's/^/LOCAL  /' &
pids+=($!)
"$DIR/ferry" tail -config "$DIR/ferry.yaml" -compact &
pids+=($!)
wait "${pids[1]}"
