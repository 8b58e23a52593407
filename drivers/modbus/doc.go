// Package modbus is ferry's Modbus driver: it polls PLCs, meters and drives
// over Modbus TCP, Modbus RTU on a serial port, and RTU over TCP (serial
// gateways), and emits one scan per device and poll.
//
// # Links and scheduling
//
// Devices that share a link — one TCP endpoint or one serial port, see
// [GroupKey] — are served by one goroutine that serialises every request on
// it. Each device is polled at its own interval on a fixed-rate schedule
// (start + k × interval): a tick that comes while the previous poll still
// runs is skipped and counted as an overrun, never made up later. The
// requests of devices (or units) whose polls overlap are interleaved
// round-robin, one request at a time, so a slow unit cannot starve the
// others on a shared bus. Links are independent: a dead PLC on one link
// never delays another.
//
// # Requests
//
// The points of one unit and table are merged into the fewest read
// requests (at most 125 registers or 2000 bits, or the device's
// max_registers / max_bits), bridging gaps of up to max_gap unused
// registers. [Driver.Plan] shows the plan; `ferry plan FILE` prints it.
//
// # Fault isolation
//
// When a merged request is answered with exception 0x02 (illegal data
// address) or 0x03 (illegal data value), it is split in two and each half
// read at once, recursively. What the split shows is learned: points the
// device refuses become Bad ("illegal data address") without being asked
// again, a gap between points that the device refuses is no longer
// bridged, and a device that refuses large requests is read in smaller
// ones. From the next poll on the request count is minimal again. Learned
// ranges are forgotten and tried again every `reprobe` (default 10m), so a
// PLC program change that maps them is picked up.
//
// # Failures
//
// Every sample carries a quality. A device that does not answer yields Bad
// samples at its interval with reason "timeout", "connection refused",
// "disconnected", …; an undecodable value (short response, NaN or infinite
// float) a Bad sample with reason "decode error"; a malformed frame Bad
// samples with reason "bad frame". Connections are re-established with the
// shared backoff; state changes are logged once per device (internal/devstat).
//
// # Writes
//
// Driver implements ferry.Writer for points declared `write:` (coils and
// holding registers): FC05/FC15 for a coil, FC06/FC16 for registers, FC22
// for a bit of a register where the device declares mask_write. A write
// goes through the link's goroutine between two requests, is never
// retried, and is read back and compared raw. Values are encoded with the
// point's type, order, scale and offset reversed; what does not fit
// losslessly is refused, never rounded (encode.go, README "Writing").
//
// # Caveats
//
// The Modbus library (github.com/grid-x/modbus) cannot abandon a request in
// flight, so Run returns up to one device timeout after its context ends.
// Modbus TCP answers are matched by transaction id, so a late answer after a
// timeout is skipped; RTU over TCP has no ids, so the connection is renewed
// after a timeout or a malformed frame. On a serial port the read timeout is
// fixed when the port opens: the longest timeout of its devices.
package modbus
