// Package mqtt is ferry's MQTT driver: it subscribes to a broker on behalf
// of configured devices and turns each message into a [ferry.Scan].
//
// Payloads are JSON (points taken by path, optional timestamp field), a
// single value, or Sparkplug B (NBIRTH/NDATA/NDEATH, DBIRTH/DDATA/DDEATH;
// aliases learned from BIRTH, sequence numbers checked, DEATH marks the
// points Bad). Topics may hold + and # wildcards and {name} captures that
// name the device a message belongs to.
//
// # No loss on QoS 1 and 2
//
// The driver connects with a fixed client id and a persistent session
// (clean session off) and acknowledges a QoS 1/2 message only when every
// scan it produced is durably committed: the scan's Done callback, called
// by the buffer after its fsync, releases the acknowledgement. If ferry
// stops before that, the message stays unacknowledged and the broker sends
// it again (DUP set) on the next connection. If ferry stops after the
// commit but before the acknowledgement, the redelivered message is a
// duplicate; each scan carries Key (a digest of device, topic, payload and
// packet identifier, see messageID)
// and Redelivered (the DUP flag), and the buffer drops a redelivered scan
// whose key it committed within its dedupe window.
//
// A scan that is not committed (the pipeline was full, the buffer closed)
// is not acknowledged; the messages behind it are. Since a broker resends
// unacknowledged messages only on a new connection, the driver then
// reconnects (paced by a backoff) to have them sent again. Redelivered
// messages arrive after newer ones: samples carry their source time when
// the payload has one, else the time they were received.
//
// Bad payloads (not JSON, missing path, wrong type, truncated protobuf)
// are counted per device and reason, logged at Debug, and become Bad
// samples where the point is known. Their messages are still acknowledged
// once handled: a poison message is not redelivered forever.
//
// # Sparkplug rebirth requests
//
// The driver publishes nothing unless a Sparkplug device sets rebirth:
// then, when an edge node's data cannot be resolved (data before its
// BIRTH, an unknown alias, a sequence gap), it publishes an NCMD
// Node Control/Rebirth to that node (QoS 0, at most once per 30s per
// node) from a goroutine of the connection, never from the router.
//
// # Failover
//
// A connection may list fallback brokers: each attempt tries the broker,
// then the fallbacks in order, and keeps the first that accepts until that
// connection is lost. Independent brokers keep one session each; a cluster
// shares them by client id.
//
// # Caveats
//
// The persistent session outlives configuration changes: a topic removed
// from the configuration stays subscribed on the broker, and its messages
// are acknowledged and counted as unmatched. Sparkplug B BIRTH and DATA
// messages are QoS 0 by specification, so the broker does not keep them
// for ferry while it is away; the no-loss promise holds for QoS 1/2 only.
package mqtt
