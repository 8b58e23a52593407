package uplink

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Batch bodies may be compressed (compression: s2 or zstd); the
// Ferry-Compression header names it. Compression is deterministic for a
// given input and ferry version, so a batch sent again after a restart has
// the bytes of the first try.

// The zstd encoder and decoder are made on first use and shared
// (EncodeAll and DecodeAll are safe for concurrent use): a sender never
// builds the decoder, a reader never the encoder. The encoder keeps one
// 256 KiB window (a default batch) and its lower-memory tables: measured
// in the cost benchmark, that is what keeps its RSS small.
var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
	zstdEncErr  error
	zstdDecOnce sync.Once
	zstdDec     *zstd.Decoder
	zstdDecErr  error
)

func zstdEncoder() (*zstd.Encoder, error) {
	zstdEncOnce.Do(func() {
		zstdEnc, zstdEncErr = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(256<<10), zstd.WithLowerEncoderMem(true), zstd.WithZeroFrames(true))
	})
	return zstdEnc, zstdEncErr
}

func zstdDecoder() (*zstd.Decoder, error) {
	zstdDecOnce.Do(func() {
		zstdDec, zstdDecErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxBatchBody))
	})
	return zstdDec, zstdDecErr
}

// compress appends the body src compressed with algo to dst.
func compress(algo string, dst, src []byte) ([]byte, error) {
	switch algo {
	case "", CompressionNone:
		return append(dst, src...), nil
	case CompressionS2:
		out := s2.Encode(dst[len(dst):cap(dst)], src)
		return append(dst, out...), nil
	case CompressionZstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, err
		}
		return enc.EncodeAll(src, dst), nil
	}
	return nil, fmt.Errorf("unknown compression %q", algo)
}

// maxBatchBody bounds a decompressed batch body: a sender never builds a
// larger one (batch.max_bytes is at most 64 MiB).
const maxBatchBody = 64 << 20

// decompress returns the body data decompressed as the Ferry-Compression
// header algo says.
func decompress(algo string, data []byte) ([]byte, error) {
	switch algo {
	case "", CompressionNone:
		return data, nil
	case CompressionS2:
		n, err := s2.DecodedLen(data)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if n > maxBatchBody {
			return nil, fmt.Errorf("s2: body of %d bytes exceeds %d", n, maxBatchBody)
		}
		out, err := s2.Decode(nil, data)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		return out, nil
	case CompressionZstd:
		dec, err := zstdDecoder()
		if err != nil {
			return nil, err
		}
		out, err := dec.DecodeAll(data, nil)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown %s %q", HeaderCompression, algo)
}
