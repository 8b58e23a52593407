#!/usr/bin/env bash
# make bench: measures ferry and prints one table, each figure with its
# goal and the machine it came from. It runs
#   - the buffer's benchmarks (durable ingest, write amplification),
#   - the uplink's drain benchmark (1M-sample backlog into JetStream),
#   - the rule engine's evaluation benchmarks,
#   - TestSystemBench: the ferry binary against plantsim with 10k tags at
#     1 Hz (CPU, RSS, sample → stream latency, Modbus requests, a drain).
#     Its knobs (cmd/ferry/sysbench_test.go): FERRY_BENCH_WARMUP (7m runs
#     past buffer.retain_acked, to the steady state), FERRY_BENCH_ENV
#     ("GOGC=50": ferry's own environment), FERRY_BENCH_PROFILES=DIR,
#     FERRY_BENCH_LOG=FILE, FERRY_BENCH_WINDOW.
# Nothing here asserts a speed; the table is for reading (and for the
# README's performance section). Takes about 5 minutes.
#
# scripts/bench.sh cost (make bench-cost): the end-to-end cost with real
# processes instead — Debian's mosquitto (installed when missing) → the
# ferry binary → nats-server, QoS 1 JSON messages of 50 fields at 200 and
# 1000 msg/s (cmd/ferry TestCostBench): ferry's CPU per million samples as
# top shows it, its peak RSS, upstream messages and bytes, exactly-once.
# Takes about a minute. FERRY_BENCH_RATES, FERRY_BENCH_COST_WINDOW and
# FERRY_BENCH_PROFILES=DIR pass through to the test.
#
# scripts/bench.sh retention (make bench-retention): see below.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" # go.mod names the toolchain (docs/security.md)

# scripts/bench.sh retention: the cost of keeping acknowledged records
# (buffer.retain_acked, issue 28) at 10k samples/s, on and off, and what
# nats-server's sync_interval costs in throughput (uplink
# TestRetentionCost, TestSyncIntervalCost; docs/durability.md). About four
# minutes; FERRY_BENCH_WINDOW (default 60s) is each run's length.
if [ "${1:-}" = retention ]; then
	out=$(mktemp)
	trap 'rm -f "$out"' EXIT
	echo "running the retention benchmark (about four minutes)…" >&2
	FERRY_BENCH=retention go test -run '^(TestRetentionCost|TestSyncIntervalCost)$' -count 1 -v -timeout 20m ./uplink >"$out" 2>&1 || { cat "$out"; exit 1; }
	cpu=$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)
	echo
	echo "$(nproc) cores, ${cpu}, $(go version | awk '{print $3}'), $(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	grep -E '^(retention cost|nats-server throughput|upstream:|\|)' "$out"
	exit 0
fi

if [ "${1:-}" = cost ]; then
	if ! command -v mosquitto >/dev/null; then
		echo "bench: installing mosquitto"
		sudo=()
		if [ "$(id -u)" != 0 ]; then
			command -v sudo >/dev/null || { echo "bench: need root or sudo to install mosquitto"; exit 1; }
			sudo=(sudo)
		fi
		"${sudo[@]}" apt-get update -qq
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
	fi
	out=$(mktemp)
	trap 'rm -f "$out"' EXIT
	echo "running the end-to-end cost benchmark (about a minute)…" >&2
	FERRY_BENCH=cost go test -run '^TestCostBench$' -count 1 -v -timeout 15m ./cmd/ferry >"$out" 2>&1 || { cat "$out"; exit 1; }
	cpu=$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)
	echo
	echo "$(nproc) cores, ${cpu}, $(free -g | awk '/Mem:/ {print $2}') GiB, $(mosquitto -h 2>&1 | head -n 1 | awk '{print $1, $3}'), $(go version | awk '{print $3}'), $(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg) (CPU seconds rise on a busy box)"
	grep -E '^(ferry end-to-end cost|\|)' "$out"
	exit 0
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "running benchmarks (about 5 minutes)…" >&2
go test -run '^$' -bench 'Ingest|WriteAmplification' -benchtime 3s ./buffer >"$out/buffer.txt" 2>&1 || { cat "$out/buffer.txt"; exit 1; }
go test -run '^$' -bench 'Drain/samples_per_record=(10|50)$' -benchtime 1x ./uplink >"$out/uplink.txt" 2>&1 || { cat "$out/uplink.txt"; exit 1; }
go test -run '^$' -bench 'Threshold$|Zscore$' -cpu 1 ./rules >"$out/rules.txt" 2>&1 || { cat "$out/rules.txt"; exit 1; }
FERRY_BENCH=1 go test -run '^TestSystemBench$' -count 1 -v -timeout 15m ./cmd/ferry >"$out/system.txt" 2>&1 || { cat "$out/system.txt"; exit 1; }

# metric FILE BENCH-REGEX UNIT: the value reported with UNIT on the first
# line matching BENCH-REGEX.
metric() {
	awk -v re="$2" -v unit="$3" '$1 ~ re { for (i = 2; i < NF; i++) if ($(i+1) == unit) { print $i; exit } }' "$1"
}
sys() { awk -v k="$1" '$1 == "BENCH" && $2 == k { print $3; exit }' "$out/system.txt"; }
fmt() { awk -v v="${1:-}" -v d="${2:-0}" 'BEGIN { if (v == "") print "n/a"; else if (v >= 1e6) printf "%.2fM\n", v/1e6; else if (v >= 1e4) printf "%.0fk\n", v/1e3; else printf "%.*f\n", d, v }'; }

cpu=$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)
echo
echo "ferry benchmarks — $(nproc) cores, ${cpu}, $(free -g | awk '/Mem:/ {print $2}') GiB, $(go version | awk '{print $3}'), $(date -u +%Y-%m-%d)"
echo
printf '| %-44s | %-14s | %-24s |\n' "figure" "measured" "goal (2-core dev machine)"
printf '|%s|%s|%s|\n' "----------------------------------------------" "----------------" "--------------------------"
row() { printf '| %-44s | %-14s | %-24s |\n' "$1" "$2" "$3"; }
row "durable ingest, 50-point scans (samples/s)" "$(fmt "$(metric "$out/buffer.txt" 'Ingest/points=50-' samples/s)")" "≥ 2M"
row "durable ingest, 1-point scans (samples/s)" "$(fmt "$(metric "$out/buffer.txt" 'Ingest/points=1-' samples/s)")" "≥ 300k"
row "write amplification, 50-point scans" "$(fmt "$(metric "$out/buffer.txt" 'WriteAmplification/points=50-' disk-B/payload-B)" 2)" "≤ 1.5"
row "write amplification, 1-point scans" "$(fmt "$(metric "$out/buffer.txt" 'WriteAmplification/points=1-' disk-B/payload-B)" 2)" "≤ 1.5"
row "bytes on disk per sample, 50-point scans" "$(fmt "$(metric "$out/buffer.txt" 'WriteAmplification/points=50-' disk-B/sample)" 1)" "(reported)"
row "drain to JetStream, 10 samples/record" "$(fmt "$(metric "$out/uplink.txt" 'samples_per_record=10-' samples/s)")" "≥ 1M samples/s"
row "drain to JetStream, 50 samples/record" "$(fmt "$(metric "$out/uplink.txt" 'samples_per_record=50-' samples/s)")" "≥ 1M samples/s"
row "wire bytes per sample, 50 samples/record" "$(fmt "$(metric "$out/uplink.txt" 'samples_per_record=50-' wire-bytes/sample)" 1)" "(reported)"
row "threshold rule evaluations/s, one core" "$(fmt "$(metric "$out/rules.txt" 'Threshold' evals/s)")" "≥ 5M, 0 allocs"
row "z-score rule evaluations/s, one core" "$(fmt "$(metric "$out/rules.txt" 'Zscore' evals/s)")" "≥ 5M, 0 allocs"
row "system: tags polled at 1 Hz" "$(fmt "$(sys tags)")" "10k"
row "system: ingest (samples/s)" "$(fmt "$(sys ingest_rate)")" "10k"
row "system: scan read → stored upstream p50 (ms)" "$(fmt "$(sys scan_to_stream_p50)" 1)" ""
row "system: scan read → stored upstream p99 (ms)" "$(fmt "$(sys scan_to_stream_p99)" 1)" "≤ 10 ms (sample → PubAck)"
row "system: CPU per million samples (s)" "$(fmt "$(sys cpu_per_million)" 2)" "≤ 2 s"
row "system: RSS, 10k tags @ 1 Hz (MiB)" "$(fmt "$(sys rss)" 1) ($(fmt "$(sys rss_anon)" 1) anon)" "≤ 40 MB"
row "system: drain while ingesting 10k/s" "$(fmt "$(sys drain_rate)")" "≥ 1M samples/s"
row "system: Modbus requests per scan" "$(fmt "$(sys modbus_requests_per_scan)" 2)" "= planned $(fmt "$(sys modbus_planned_per_scan)" 2)"
