package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
)

// This file reads a bbolt file with plain positioned reads, checking every
// structure before it uses it. It runs before bbolt opens a file: bbolt
// trusts its pages (a damaged one can make it fault on the memory map, or
// panic in a goroutine of its own while it rebuilds the free list, which no
// recover can catch), so a file goes to bbolt only after this walk found it
// sound. The same walk salvages the records of a damaged file and serves
// `ferry buffer stats|dump`, which must work on any file.
//
// The checks are those of bbolt's own Tx.Check (pages within the high water
// mark, each referenced once, of branch or leaf type, keys ordered within
// and across pages) plus bounds on every offset and length read from disk.
//
// The layout (bbolt 1.x, native little endian on every platform ferry
// targets):
//
//	page     = id:u64 flags:u16 count:u16 overflow:u32 elements…
//	meta     = magic:u32 version:u32 page_size:u32 flags:u32 root:u64 sequence:u64
//	           freelist:u64 pgid:u64 txid:u64 checksum:u64 (FNV-64a of the first 56 bytes)
//	branch   = pos:u32 ksize:u32 pgid:u64          key at element+pos
//	leaf     = flags:u32 pos:u32 ksize:u32 vsize:u32  key, then value, at element+pos
//	bucket   = root:u64 sequence:u64 [inline leaf page when root is 0]

// errCorrupt marks a file whose structure is damaged (as opposed to one that
// cannot be read at all).
var errCorrupt = errors.New("corrupt")

const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16
	elementSize      = 16
	bucketHeaderSize = 16
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	metaPageFlag     = 0x04
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
	noFreelist       = ^uint64(0)
	maxTreeDepth     = 64
)

type rawMeta struct {
	pageSize uint32
	root     uint64
	sequence uint64
	freelist uint64
	hwm      uint64 // pgid: the first page id past the end of the data
	txid     uint64
}

// rawFile is a bbolt file opened for checking.
type rawFile struct {
	r        io.ReaderAt
	size     int64
	pageSize int
	meta     rawMeta
	// reachable marks every page id referenced by the tree (and the meta
	// and free list pages).
	reachable []uint64
	// salvage: skip damaged subtrees instead of stopping at the first.
	salvage bool
	damage  []error
	// sequences holds the sequence of every bucket walked, by path.
	sequences map[string]uint64
	// pages counts the pages read, for stats.
	branchPages, leafPages, overflowPages int
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
}

// openRaw reads the meta pages of the bbolt file r of size bytes and picks
// the one bbolt would use: the valid meta with the highest transaction id.
// In salvage mode a truncated file is read as far as it goes.
func openRaw(r io.ReaderAt, size int64, salvage bool) (*rawFile, error) {
	f := &rawFile{r: r, size: size, salvage: salvage, sequences: map[string]uint64{}}
	if size < 2*512 {
		return nil, corruptf("file of %d bytes is too small for a bbolt file", size)
	}
	m0, err0 := f.readMeta(0, 0)
	ps := 0
	if err0 == nil {
		ps = int(m0.pageSize)
	} else {
		// The first meta is damaged: find the page size from the second.
		for try := 512; try <= 1<<16; try <<= 1 {
			if m1, err := f.readMeta(int64(try), try); err == nil && int(m1.pageSize) == try {
				ps = try
				break
			}
		}
		if ps == 0 {
			if isIOError(err0) {
				return nil, err0
			}
			return nil, corruptf("both meta pages are invalid (%v)", err0)
		}
	}
	f.pageSize = ps
	m0, err0 = f.readMeta(0, ps)
	m1, err1 := f.readMeta(int64(ps), ps)
	for _, err := range []error{err0, err1} {
		if isIOError(err) {
			return nil, err
		}
	}
	a, b, errA, errB := m0, m1, err0, err1
	if m1.txid > m0.txid {
		a, b, errA, errB = m1, m0, err1, err0
	}
	switch {
	case errA == nil:
		f.meta = a
	case errB == nil:
		f.meta = b
	default:
		return nil, corruptf("both meta pages are invalid (%v; %v)", err0, err1)
	}
	// A file cut short may have lost the root page of the newest meta
	// (bbolt writes a transaction's pages wherever they fit, often at the
	// end); the previous transaction's tree may still be there. Salvage
	// reads it then: records of one transaction back beat none.
	if salvage && errA == nil && errB == nil && a.root >= uint64(size/int64(ps)) && b.root < uint64(size/int64(ps)) {
		f.damage = append(f.damage, corruptf("root page %d of transaction %d is past the end of the file; read transaction %d", a.root, a.txid, b.txid))
		f.meta = b
	}
	m := f.meta
	if m.hwm < 3 || m.root < 2 || m.root >= m.hwm || (m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.hwm)) {
		return nil, corruptf("meta page: root %d, free list %d, high water mark %d are inconsistent", m.root, m.freelist, m.hwm)
	}
	if need := int64(m.hwm) * int64(ps); need > size || need/int64(ps) != int64(m.hwm) {
		err := corruptf("file is truncated: %d bytes, the data needs %d (%d pages of %d bytes)", size, need, m.hwm, ps)
		if !salvage {
			return nil, err
		}
		// Read what is there: pages past the end are missing.
		f.damage = append(f.damage, err)
		f.meta.hwm = uint64(size / int64(ps))
		if f.meta.root >= f.meta.hwm {
			return nil, err
		}
	}
	f.reachable = make([]uint64, (m.hwm+63)/64)
	f.mark(0)
	f.mark(1)
	return f, nil
}

// readMeta reads the meta at offset; ps, when not zero, is the page size the
// meta must state.
func (f *rawFile) readMeta(off int64, ps int) (rawMeta, error) {
	var buf [pageHeaderSize + 64]byte
	if _, err := f.r.ReadAt(buf[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return rawMeta{}, corruptf("meta page at %d: truncated", off)
		}
		return rawMeta{}, fmt.Errorf("read meta page at %d: %w", off, err)
	}
	le := binary.LittleEndian
	p := buf[pageHeaderSize:]
	// Like bbolt, judge a meta page by its magic, version and checksum
	// only (not its page header), so that both pick the same meta.
	if le.Uint32(p[0:]) != boltMagic {
		return rawMeta{}, corruptf("meta page at %d: bad magic", off)
	}
	if v := le.Uint32(p[4:]); v != boltVersion {
		return rawMeta{}, corruptf("meta page at %d: version %d is not %d", off, v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(p[:56])
	if h.Sum64() != le.Uint64(p[56:]) {
		return rawMeta{}, corruptf("meta page at %d: checksum mismatch", off)
	}
	m := rawMeta{
		pageSize: le.Uint32(p[8:]),
		root:     le.Uint64(p[16:]),
		sequence: le.Uint64(p[24:]),
		freelist: le.Uint64(p[32:]),
		hwm:      le.Uint64(p[40:]),
		txid:     le.Uint64(p[48:]),
	}
	if m.pageSize < 512 || m.pageSize > 1<<16 || m.pageSize&(m.pageSize-1) != 0 {
		return rawMeta{}, corruptf("meta page at %d: page size %d", off, m.pageSize)
	}
	if ps != 0 && int(m.pageSize) != ps {
		return rawMeta{}, corruptf("meta page at %d: page size %d, want %d", off, m.pageSize, ps)
	}
	return m, nil
}

func isIOError(err error) bool { return err != nil && !errors.Is(err, errCorrupt) }

func (f *rawFile) mark(id uint64) bool {
	w, bit := id/64, uint64(1)<<(id%64)
	if f.reachable[w]&bit != 0 {
		return false
	}
	f.reachable[w] |= bit
	return true
}

// reachableCount returns the number of pages marked reachable.
func (f *rawFile) reachableCount() int {
	n := 0
	for _, w := range f.reachable {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// readPage reads page id with its overflow pages, checking its header.
func (f *rawFile) readPage(id uint64) ([]byte, error) {
	if id < 2 || id >= f.meta.hwm {
		return nil, corruptf("page %d is outside 2..%d", id, f.meta.hwm-1)
	}
	ps := int64(f.pageSize)
	buf := make([]byte, ps)
	if err := f.readAt(buf, int64(id)*ps); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if got := le.Uint64(buf); got != id {
		return nil, corruptf("page %d: header says page %d", id, got)
	}
	if ov := uint64(le.Uint32(buf[12:])); ov > 0 {
		if id+ov >= f.meta.hwm {
			return nil, corruptf("page %d: %d overflow pages run past the high water mark %d", id, ov, f.meta.hwm)
		}
		full := make([]byte, (1+int64(ov))*ps)
		copy(full, buf)
		if err := f.readAt(full[ps:], (int64(id)+1)*ps); err != nil {
			return nil, err
		}
		buf = full
	}
	return buf, nil
}

func (f *rawFile) readAt(buf []byte, off int64) error {
	if _, err := f.r.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			return corruptf("read %d bytes at %d: truncated file", len(buf), off)
		}
		return fmt.Errorf("read %d bytes at %d: %w", len(buf), off, err)
	}
	return nil
}

// visitFunc receives every key/value of a bucket; path names the bucket
// ("telemetry", "state/rules"). Slices are only valid during the call.
type visitFunc func(path string, key, value []byte) error

// walk checks the whole tree (and the free list page, if any), calling
// visit for every key/value that is not a bucket. In salvage mode a damaged
// subtree is recorded in f.damage and skipped; otherwise the first problem
// is returned.
func (f *rawFile) walk(visit visitFunc) error {
	var free []uint64
	if fl := f.meta.freelist; fl != noFreelist {
		buf, err := f.readPage(fl)
		if err == nil && binary.LittleEndian.Uint16(buf[8:]) != freelistPageFlag {
			err = corruptf("page %d: free list page has flags %#x", fl, binary.LittleEndian.Uint16(buf[8:]))
		}
		if err == nil {
			free, err = f.freeIDs(fl, buf)
		}
		if err != nil {
			if !f.salvage || isIOError(err) {
				return err
			}
			f.damage = append(f.damage, err)
		} else {
			f.markRun(fl, buf)
		}
	}
	if err := f.walkBucket("", f.meta.root, nil, visit, 0); err != nil {
		return err
	}
	// bbolt loads a stored free list as it is (ferry writes none, but the
	// meta pages of a new file point at one, and an older meta page may
	// be the one left): a page both free and in the tree would be handed
	// out again and overwritten (found by FuzzCheckedFileOpensInBolt).
	for _, id := range free {
		if f.reachable[id/64]&(1<<(id%64)) != 0 {
			return f.fail(corruptf("page %d is on the free list and in use", id))
		}
	}
	return nil
}

// freeIDs decodes the free list page fl: its page ids, each a page that
// is neither a meta page nor past the high water mark, none twice.
func (f *rawFile) freeIDs(fl uint64, buf []byte) ([]uint64, error) {
	le := binary.LittleEndian
	n, at := uint64(le.Uint16(buf[10:])), pageHeaderSize
	if n == 0xFFFF { // the count overflowed into the first element
		if len(buf) < pageHeaderSize+8 {
			return nil, corruptf("page %d: free list page too short", fl)
		}
		n, at = le.Uint64(buf[pageHeaderSize:]), pageHeaderSize+8
	}
	if n > uint64(len(buf)-at)/8 {
		return nil, corruptf("page %d: a free list of %d page ids does not fit its %d bytes", fl, n, len(buf))
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = le.Uint64(buf[at+8*i:])
	}
	slices.Sort(ids)
	for i, id := range ids {
		if id < 2 || id >= f.meta.hwm {
			return nil, corruptf("page %d: free page id %d outside 2..%d", fl, id, f.meta.hwm-1)
		}
		if i > 0 && ids[i-1] == id {
			return nil, corruptf("page %d: page %d is free twice", fl, id)
		}
	}
	return ids, nil
}

func (f *rawFile) markRun(id uint64, buf []byte) bool {
	n := uint64(len(buf) / f.pageSize)
	ok := true
	for i := uint64(0); i < n; i++ {
		if !f.mark(id + i) {
			ok = false
		}
	}
	return ok
}

// walkBucket walks the bucket at path whose root page is root, or whose
// inline leaf page is inline when root is 0.
func (f *rawFile) walkBucket(path string, root uint64, inline []byte, visit visitFunc, depth int) error {
	if root == 0 {
		if len(inline) < pageHeaderSize {
			return f.fail(corruptf("bucket %q: inline page of %d bytes", path, len(inline)))
		}
		if flags := binary.LittleEndian.Uint16(inline[8:]); flags != leafPageFlag {
			return f.fail(corruptf("bucket %q: inline page has flags %#x", path, flags))
		}
		_, _, err := f.walkLeaf(path, 0, inline, nil, nil, visit, depth, true)
		return err
	}
	_, _, err := f.walkPage(path, root, nil, nil, visit, depth)
	return err
}

// fail returns err, or records it and returns nil in salvage mode (an I/O
// error always stops the walk).
func (f *rawFile) fail(err error) error {
	if f.salvage && !isIOError(err) {
		f.damage = append(f.damage, err)
		return nil
	}
	return err
}

// walkPage walks the subtree at page id whose keys must lie in [min, max)
// (nil: unbounded) and returns its smallest and largest keys.
func (f *rawFile) walkPage(path string, id uint64, min, max []byte, visit visitFunc, depth int) (first, last []byte, err error) {
	if depth > maxTreeDepth {
		return nil, nil, f.fail(corruptf("bucket %q: tree deeper than %d pages at page %d", path, maxTreeDepth, id))
	}
	buf, err := f.readPage(id)
	if err != nil {
		return nil, nil, f.fail(err)
	}
	if !f.markRun(id, buf) {
		return nil, nil, f.fail(corruptf("bucket %q: page %d is referenced twice", path, id))
	}
	flags := binary.LittleEndian.Uint16(buf[8:])
	f.overflowPages += len(buf)/f.pageSize - 1
	switch flags {
	case branchPageFlag:
		f.branchPages++
		return f.walkBranch(path, id, buf, min, max, visit, depth)
	case leafPageFlag:
		f.leafPages++
		return f.walkLeaf(path, id, buf, min, max, visit, depth, false)
	}
	return nil, nil, f.fail(corruptf("bucket %q: page %d has type %#x, want branch or leaf", path, id, flags))
}

// element returns the key (and, for a leaf, the value) of element i of the
// page in buf, checking that they lie inside it.
func element(buf []byte, i int, leaf bool) (flags uint32, key, value []byte, child uint64, err error) {
	le := binary.LittleEndian
	at := pageHeaderSize + i*elementSize
	e := buf[at : at+elementSize]
	var pos, ksize, vsize uint64
	if leaf {
		flags = le.Uint32(e[0:])
		pos, ksize, vsize = uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
	} else {
		pos, ksize = uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))
		child = le.Uint64(e[8:])
	}
	start := uint64(at) + pos
	end := start + ksize + vsize
	if end > uint64(len(buf)) {
		return 0, nil, nil, 0, corruptf("element %d runs past its page (%d > %d bytes)", i, end, len(buf))
	}
	return flags, buf[start : start+ksize], buf[start+ksize : end], child, nil
}

func elementCount(buf []byte) (int, error) {
	n := int(binary.LittleEndian.Uint16(buf[10:]))
	if pageHeaderSize+n*elementSize > len(buf) {
		return 0, corruptf("%d elements do not fit in %d bytes", n, len(buf))
	}
	return n, nil
}

func (f *rawFile) walkBranch(path string, id uint64, buf, min, max []byte, visit visitFunc, depth int) (first, last []byte, err error) {
	n, err := elementCount(buf)
	if err == nil && n == 0 {
		err = corruptf("no elements")
	}
	if err != nil {
		return nil, nil, f.fail(fmt.Errorf("bucket %q: branch page %d: %w", path, id, err))
	}
	running := min
	for i := 0; i < n; i++ {
		_, key, _, child, err := element(buf, i, false)
		if err == nil {
			err = checkOrder(key, running, max, i == 0)
		}
		if err != nil {
			if err := f.fail(fmt.Errorf("bucket %q: branch page %d: %w", path, id, err)); err != nil {
				return nil, nil, err
			}
			return first, last, nil // the rest of this page cannot be trusted
		}
		next := max
		if i+1 < n {
			if _, k, _, _, err := element(buf, i+1, false); err == nil {
				next = k
			}
		}
		subFirst, subLast, err := f.walkPage(path, child, key, next, visit, depth+1)
		if err != nil {
			return nil, nil, err
		}
		// bbolt keeps a branch key equal to its child's first key, and
		// finds the child by it when it rewrites the child: a key that
		// differs, or a child with no key at all (bbolt removes emptied
		// pages at commit), makes bbolt corrupt the tree on the next write.
		// Its own check only asks for order.
		if !bytes.Equal(subFirst, key) {
			if err := f.fail(corruptf("bucket %q: branch page %d: key %x differs from the first key %x of page %d", path, id, key, subFirst, child)); err != nil {
				return nil, nil, err
			}
		}
		if i == 0 {
			first = key
		}
		// As bbolt's check: the next key must follow this subtree's
		// largest key.
		running = subLast
		if subLast != nil {
			last = subLast
		}
	}
	return first, last, nil
}

// checkOrder mirrors bbolt's key order check: the first key of a page is at
// least the lower bound, later keys are greater than the one before, and
// every key is below the upper bound.
func checkOrder(key, prev, max []byte, first bool) error {
	if first && prev != nil && bytes.Compare(prev, key) > 0 {
		return corruptf("key %x is below its lower bound %x", key, prev)
	}
	if !first && bytes.Compare(prev, key) >= 0 {
		return corruptf("key %x does not follow %x", key, prev)
	}
	if max != nil && bytes.Compare(key, max) >= 0 {
		return corruptf("key %x is not below its upper bound %x", key, max)
	}
	return nil
}

func (f *rawFile) walkLeaf(path string, id uint64, buf, min, max []byte, visit visitFunc, depth int, inline bool) (first, last []byte, err error) {
	n, err := elementCount(buf)
	if err != nil {
		return nil, nil, f.fail(fmt.Errorf("bucket %q: leaf page %d: %w", path, id, err))
	}
	running := min
	for i := 0; i < n; i++ {
		flags, key, value, _, err := element(buf, i, true)
		if err == nil {
			err = checkOrder(key, running, max, i == 0)
		}
		if err != nil {
			if err := f.fail(fmt.Errorf("bucket %q: leaf page %d: %w", path, id, err)); err != nil {
				return nil, nil, err
			}
			return first, last, nil
		}
		if i == 0 {
			first = key
		}
		running, last = key, key
		if flags&bucketLeafFlag == 0 {
			if err := visit(path, key, value); err != nil {
				return nil, nil, err
			}
			continue
		}
		child := string(key)
		if path != "" {
			child = path + "/" + child
		}
		if inline {
			// bbolt inlines only buckets without sub-buckets.
			if err := f.fail(corruptf("bucket %q: inline page holds bucket %q", path, child)); err != nil {
				return nil, nil, err
			}
			continue
		}
		if len(value) < bucketHeaderSize {
			if err := f.fail(corruptf("bucket %q: header of %d bytes", child, len(value))); err != nil {
				return nil, nil, err
			}
			continue
		}
		root := binary.LittleEndian.Uint64(value)
		f.sequences[child] = binary.LittleEndian.Uint64(value[8:])
		if err := f.walkBucket(child, root, value[bucketHeaderSize:], visit, depth+1); err != nil {
			return nil, nil, err
		}
	}
	return first, last, nil
}

// checkFile opens path and walks it strictly. It returns an error wrapping
// errCorrupt when the file is damaged, another error when it cannot be read.
func checkFile(path string, visit visitFunc) (*rawFile, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	f, err := openRaw(fh, st.Size(), false)
	if err != nil {
		return nil, err
	}
	if err := f.walk(visit); err != nil {
		return nil, err
	}
	f.r = nil
	return f, nil
}
