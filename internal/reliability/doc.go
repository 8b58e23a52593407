// Package reliability is ferry's whole-daemon reliability and security
// suite. It has no code of its own: its tests build the real ferry binary
// once, run it as a child process against real peers in the test process
// (the plantsim presses, OPC UA boiler, MQTT broker and NATS JetStream
// server, plus fake peers for what no real one can show) and attack it:
// kill -9 storms while NATS comes and goes, long outages against a small
// buffer, full and read-only disks, a damaged store, hostile frames,
// payloads, status codes and configuration files, secrets that must never
// be printed, a 30-minute soak, and every fuzz target of the repository.
//
// The suite runs only when FERRY_RELIABILITY is set:
//
//	FERRY_RELIABILITY=short go test -v -timeout 15m ./internal/reliability   # CI: ~3 min
//	FERRY_RELIABILITY=long  go test -v -timeout 3h  ./internal/reliability   # make test-reliability
//
// Other variables: FERRY_RELIABILITY_SEED (reproduce a random schedule),
// FERRY_RELIABILITY_RACE=1|0 (build ferry with the race detector; default
// on in the short profile), FERRY_RELIABILITY_REPORT=FILE (append the
// figures of each scenario as Markdown table rows), FERRY_FUZZTIME (time per
// fuzz target in the long profile, default 45s), FERRY_SOAK (soak length,
// default 30m).
//
// Each scenario logs one line starting with "RESULT" with what it measured;
// README.md ("Reliability") holds the table of the last long run.
package reliability
