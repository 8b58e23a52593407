// Package opcua is ferry's OPC UA driver: it reads PLCs, SCADA servers
// and historians over OPC UA binary (opc.tcp) with the gopcua client,
// either by subscription (monitored items) or by batched polling (Read).
//
// # Promises
//
//   - Secure by default. A device uses the strongest security policy the
//     server offers (Aes256_Sha256_RsaPss > Aes128_Sha256_RsaOaep >
//     Basic256Sha256) with SignAndEncrypt, unless it names a policy and
//     mode. Policy None is refused unless the device sets allow_insecure,
//     and then a warning is logged at start.
//   - Servers are trusted explicitly. The gateway's application instance
//     certificate is generated on first use under <data_dir>/pki/own, with
//     ferry's application URI in its subject alternative name. A server
//     certificate must be in <data_dir>/pki/trusted (or be issued by a CA
//     there); an unknown one is refused, copied to pki/rejected, and the
//     error says how to trust it (`ferry pki trust FILE`). The store is
//     read on every connect: trusting needs no restart.
//   - One bad node hurts no other point. A node id the server does not
//     know, a namespace URI it does not have, a node the user may not read
//     or a value ferry cannot carry makes only that point Bad, with the
//     OPC UA status name (BadNodeIdUnknown, BadUserAccessDenied, …) or a
//     short reason as the quality reason, logged once — for Read results,
//     for monitored item results, and for Bad statuses in notifications,
//     in every session after a reconnect too.
//   - Recovery without restart. A lost session, a restarted server or a cut
//     connection makes every point Bad with reason "disconnected" (emitted
//     at the interval, so stale and quality rules fire) while ferry
//     reconnects with the shared backoff, resolves nsu= node ids again
//     (namespace indexes may change on a server restart) and creates the
//     subscription again. Each state change is logged once.
//   - Batches respect the server. Reads are split by the server's
//     MaxNodesPerRead, monitored items are created in calls of at most
//     MaxMonitoredItemsPerCall (1000 when the server does not say), and a
//     batch the server refuses as too large is halved.
//   - Writes lose nothing and are never repeated. Driver implements
//     ferry.Writer: a point declared with write: is written with one
//     Attribute Write in the node's DataType (read once per session), the
//     command's value converted only where no information is lost (else
//     refused, nothing sent), on the device's own session (a device that is
//     not connected refuses at once); a Bad status is the reason, no answer
//     is ErrWriteUnknown, and a Good write is read back and compared. A
//     declared method is called with inputs typed from its declaration.
//     Nothing is retried (write.go, call.go).
//   - Values keep the server's source timestamp (else the server
//     timestamp, else the time of reading); status codes map to Good,
//     Uncertain or Bad by their severity bits.
//
// # Types
//
// Boolean, SByte…UInt64, Float, Double, String, DateTime (RFC 3339 text,
// UTC), LocalizedText (its text) and StatusCode (its name). A Float is
// widened to the float64 with the same shortest decimal form (0.1f reads
// 0.1). Arrays are not flattened: a point reads one element with `index`,
// and an array value without `index` is Bad "array value". Other types
// (ByteString, Guid, ExtensionObject, …) are Bad "unsupported type X".
//
// # Caveats
//
// gopcua v0.9.1 decodes server messages without recovering from panics:
// a malformed Variant (an array length below -1, or a huge array
// dimension count) crashes the process. Only connect to servers you
// trust — which the PKI enforces for secured policies.
package opcua
