// Package soak is ferry's field soak (issue 27): the real ferry binary,
// for a long time, against third-party implementations of every protocol
// it speaks, each restarted once in the middle, counting what a plant
// engineer would notice.
//
// The peers are not Go libraries written beside ferry: node-opcua (npm,
// pinned in internal/testpeer/testdata/nodeopcua) with quiet, slow and
// fast nodes, subscribed (security None and Basic256Sha256) and polled;
// Debian's pymodbus (a Modbus TCP server with several units); Debian's
// mosquitto with a QoS 1 and a QoS 0 publisher; Debian's nats-server
// (JetStream) upstream.
//
// Counted over the run: unexpected reconnects (a device or the uplink
// lost outside its server's restart window; goal 0), the reconnect time
// after each restart, records lost or doubled upstream and QoS 1 messages
// lost or doubled (goal 0), subscribed OPC UA samples delivered twice
// (goal 0), Bad-quality samples outside the restart windows (goal 0), RSS
// and goroutines at the start and the end, and log lines per hour. The
// test prints a table and fails when a goal is missed.
//
// Memory is sampled once a minute: RSS from /proc/PID/smaps_rollup split
// into anonymous memory (the Go heap, stacks, the runtime) and file-backed
// pages (the mapped binary, buffer.db), the Go heap in use and the
// goroutines from /metrics, and the size of the mapped files. The series
// is printed at the end with a verdict: flat when, after the first third
// of the run and at least 15 minutes (the warm-up that fills the bounded
// structures: the 10-minute dedupe window is the longest), every
// sample of RSS lies within ±3 MiB of their median, RSS's least-squares
// slope is under 2 MiB an hour, and the file-backed part never exceeds
// the mapped files' size (runs of 30 minutes or more; a run found not
// flat fails). FERRY_SOAK_ARTIFACTS=DIR keeps the series, the table and
// ferry's heap profiles after the warm-up and at the end with their
// difference (http.pprof is on in the soak's configuration).
//
// The soak has no code of its own outside its test, which is built only
// with the soak build tag:
//
//	make soak             # 30 minutes
//	make soak SOAK=5m     # a short run
//	go test -tags soak -v -count=1 -timeout 2h ./internal/soak   # SOAK=30m by default
//
// FERRY_SOAK_REPORT=FILE appends the table to FILE. It needs node and npm,
// mosquitto, nats-server and /usr/bin/python3 with pymodbus (make soak
// installs them with apt-get when missing, as .ci/run does).
package soak
