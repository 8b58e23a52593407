// Package ferry holds the domain of the ferry edge gateway: the values a
// driver reads ([Sample], [Value], [Quality], [Scan]), the alerts the rule
// engine raises ([Alert]), the records the buffer stores and the uplink ships
// ([Record]), the small interfaces that connect those parts ([Driver],
// [AlertSink], [StateStore]) and the sentinel errors they share.
//
// The package imports only the standard library. Every technology lives in a
// subpackage (drivers/modbus, drivers/opcua, drivers/mqtt, buffer, uplink,
// rules) that imports this one; cmd/ferry is the only package that knows all
// of them and wires them together.
//
// The flow through a running gateway is
//
//	driver ─emit(Scan)─▶ pipeline ─▶ rules ─▶ Alert ─▶ local sinks
//	                         │                  │
//	                         ▼                  ▼
//	                   buffer (bbolt, lanes: alerts before telemetry)
//	                         │  a record is deleted only after PubAck
//	                         ▼
//	                   uplink (NATS JetStream, Nats-Msg-Id = Record.ID)
package ferry
