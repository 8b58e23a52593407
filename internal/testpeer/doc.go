// Package testpeer is ferry's one test-peer kit: the real peers that
// tests of every package run against, each started one way (as nats.go's
// test helpers start every server one way).
//
//   - NATS: an in-process nats-server with JetStream on t.TempDir(), which
//     can be shut down and restarted on the same port and store for
//     outage tests; NATSCluster: several of them clustered.
//   - Child: a binary run as a child process, stopped with SIGTERM and a
//     bounded wait or killed with SIGKILL (kill -9 crash tests), its
//     output kept in a file.
//   - ParseMetrics: the Prometheus text exposition read into series, found
//     by name and labels.
//   - ModbusCounter: a proxy in front of a Modbus TCP server that counts
//     (and can log) the function codes on the wire and can drop answers;
//     MaskWriteServer: a small register server that speaks FC22, which the
//     simonvetter server does not.
//
// Two rules hold for every peer here and for the tests that use them:
//
//   - Listeners are bound on 127.0.0.1 port 0 and handed over open (or,
//     where the server cannot take a listener, bound by the server itself
//     on a port it picks and reports). No port is ever picked by opening
//     a listener, closing it and hoping nobody takes the number before it
//     is used again. The one rebind is a restart after an outage: the
//     server binds again the port it had, which clients must find.
//   - Waits poll a condition with a deadline (testutil.WaitFor); a fixed
//     sleep is never a wait.
//
// It is a normal package so that tests of any package can import it, but
// only _test.go files may: it links nats-server, and nothing in the
// daemon depends on it. Every peer fails the test through t, cleans up
// with t.Cleanup, and waits for every goroutine it starts.
package testpeer
