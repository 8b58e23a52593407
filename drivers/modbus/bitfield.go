package modbus

import (
	"fmt"
	"strconv"
	"strings"
)

// bitRange is a field of bits lo..hi (inclusive, 0 = least significant)
// of one register, as `bits: 4-7` names it.
type bitRange struct{ lo, hi uint8 }

func (b bitRange) width() uint8 { return b.hi - b.lo + 1 }

// max is the largest value the field holds.
func (b bitRange) max() uint16 { return uint16(1<<b.width() - 1) }

// mask is the field's bits in the register (before any byte swap).
func (b bitRange) mask() uint16 { return b.max() << b.lo }

func (b bitRange) String() string {
	if b.lo == b.hi {
		return strconv.Itoa(int(b.lo))
	}
	return fmt.Sprintf("%d-%d", b.lo, b.hi)
}

// parseBits parses `bits:`: "4-7" (bits 4 to 7) or "4" (bit 4 alone),
// inside 0..15.
func parseBits(s string) (bitRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	num := func(x string) (uint8, error) {
		x = strings.TrimSpace(x)
		n, err := strconv.ParseUint(x, 10, 8)
		if err != nil || n > 15 {
			return 0, fmt.Errorf("%q is not a bit range: want FIRST-LAST with bits 0..15 (0 = least significant), such as 4-7", s)
		}
		return uint8(n), nil
	}
	a, err := num(lo)
	if err != nil {
		return bitRange{}, err
	}
	b := a
	if isRange {
		if b, err = num(hi); err != nil {
			return bitRange{}, err
		}
	}
	if b < a {
		return bitRange{}, fmt.Errorf("%q runs backwards: write the lower bit first (%d-%d)", s, b, a)
	}
	return bitRange{a, b}, nil
}

// fieldOf returns the point's bit field, if it has a valid one.
func (p *Point) fieldOf() (bitRange, bool) {
	if p.Bits == "" {
		return bitRange{}, false
	}
	b, err := parseBits(p.Bits)
	return b, err == nil
}

// swap16 swaps the bytes of a register.
func swap16(r uint16) uint16 { return r<<8 | r>>8 }
