package buffer

import "encoding/binary"

// Dedupe of MQTT redeliveries. A broker redelivers a QoS 1 message whose
// PUBACK it did not get (flagged DUP, ferry.Scan.Redelivered); when ferry had
// committed it before the PUBACK was lost, storing it again would duplicate
// it. So the buffer remembers a 64-bit FNV-1a digest of every committed
// scan's Key for dedupe_window, and drops a redelivered scan whose digest it
// knows (Done(nil), counted in ferry_buffer_deduplicated_total).
//
// The digests are persisted with the scans that carried them, one chunk
// per commit (chunk:u64be → time:i64be digest:u64le…), so a redelivery after
// a crash is caught too. Chunks expire from the front, a bounded number per
// commit; the memory held is about 32 bytes per key, bounded by
// Options.DedupeMaxKeys (the oldest are forgotten first).
//
// Two different keys share a digest with odds of about n²/2⁶⁵ (n keys in the
// window: 1e-8 for a million); a collision matters only when the second
// scan is also a redelivery.

// digestsPerChunk keeps a chunk inside one page.
const digestsPerChunk = 500

type dedupeChunk struct {
	seq     uint64
	time    int64
	digests []uint64
}

// digest is 64-bit FNV-1a of key.
func digest(key string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return h
}

func parseChunk(key, value []byte) (dedupeChunk, bool) {
	if len(key) != 8 || len(value) < 8 || (len(value)-8)%8 != 0 {
		return dedupeChunk{}, false
	}
	c := dedupeChunk{seq: binary.BigEndian.Uint64(key), time: int64(binary.BigEndian.Uint64(value))}
	c.digests = make([]uint64, 0, (len(value)-8)/8)
	for p := value[8:]; len(p) >= 8; p = p[8:] {
		c.digests = append(c.digests, binary.LittleEndian.Uint64(p))
	}
	return c, true
}

func appendChunk(dst []byte, t int64, digests []uint64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(t))
	for _, d := range digests {
		dst = binary.LittleEndian.AppendUint64(dst, d)
	}
	return dst
}

// dedupe is owned by the writer goroutine.
type dedupe struct {
	window  int64 // nanoseconds; 0 disables
	maxKeys int
	seen    map[uint64]int64 // digest → time of the commit that stored it
	chunks  []dedupeChunk    // persisted, oldest first
	head    int
	keys    int // digests in chunks[head:]
	// chunkSeq is the dedupe bucket's sequence: the last chunk written.
	chunkSeq uint64

	// This cycle's changes, applied or undone after the commit.
	added  []uint64
	undo   []undoDigest
	expire int // chunks[head:head+expire] are deleted by this cycle
}

type undoDigest struct {
	d    uint64
	prev int64 // 0: was not there
}

// known reports whether d was committed within the window.
func (dd *dedupe) known(d uint64, now int64) bool {
	t, ok := dd.seen[d]
	return ok && now-t < dd.window
}

// record notes that d is stored by this cycle.
func (dd *dedupe) record(d uint64, now int64) {
	prev := dd.seen[d]
	dd.undo = append(dd.undo, undoDigest{d, prev})
	dd.seen[d] = now
	dd.added = append(dd.added, d)
}

// planExpiry picks the chunks to delete this cycle: those past the window,
// and the oldest while more than maxKeys are kept; at most limit.
func (dd *dedupe) planExpiry(now int64, limit int) {
	dd.expire = 0
	keys := dd.keys + len(dd.added)
	for i := dd.head; i < len(dd.chunks) && dd.expire < limit; i++ {
		c := &dd.chunks[i]
		if now-c.time < dd.window && keys <= dd.maxKeys {
			break
		}
		keys -= len(c.digests)
		dd.expire++
	}
}

// commit applies the cycle after a successful commit: the new chunks join
// the list, the expired ones leave it and the map.
func (dd *dedupe) commit(newChunks []dedupeChunk) {
	for i := dd.head; i < dd.head+dd.expire; i++ {
		c := &dd.chunks[i]
		for _, d := range c.digests {
			if dd.seen[d] == c.time {
				delete(dd.seen, d)
			}
		}
		dd.keys -= len(c.digests)
		dd.chunks[i] = dedupeChunk{}
	}
	dd.head += dd.expire
	for _, c := range newChunks {
		dd.chunks = append(dd.chunks, c)
		dd.keys += len(c.digests)
		// The next commit's chunks follow this one's: without this, each
		// commit overwrote the previous one's chunk on disk.
		dd.chunkSeq = max(dd.chunkSeq, c.seq)
	}
	if dd.head > 1024 && dd.head > len(dd.chunks)/2 {
		n := copy(dd.chunks, dd.chunks[dd.head:])
		clear(dd.chunks[n:])
		dd.chunks = dd.chunks[:n]
		dd.head = 0
	}
	dd.reset()
}

// rollback undoes the cycle's map changes after a failed commit.
func (dd *dedupe) rollback() {
	for i := len(dd.undo) - 1; i >= 0; i-- {
		u := dd.undo[i]
		if u.prev == 0 {
			delete(dd.seen, u.d)
		} else {
			dd.seen[u.d] = u.prev
		}
	}
	dd.reset()
}

func (dd *dedupe) reset() {
	dd.added = dd.added[:0]
	dd.undo = dd.undo[:0]
	dd.expire = 0
}

// bytes is what the persisted chunks take in the file, about.
func (dd *dedupe) bytes() int64 {
	return int64(dd.keys*8 + (len(dd.chunks)-dd.head)*(8+8+recordOverhead))
}
