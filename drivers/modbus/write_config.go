package modbus

import (
	"math"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/setting"
)

// MaxWriteRegisters is the most registers one FC16 request writes: a
// written string point is at most this long.
const MaxWriteRegisters = 123

// validateWrite checks the point's `write:` block against what Modbus can
// write: only coils and holding registers, a bit of a register only with
// FC22 (c.MaskWrite), limits in order and allowed values that encode as
// the point's type. A point whose own keys are wrong is left to validate.
// (The interlock expression and the rate limit belong to the command path,
// which checks them.)
func (p *Point) validateWrite(errs *setting.Errors, at string, c *Config) {
	w := p.Write
	if w == nil {
		return
	}
	field := func(f string) string { return at + ".write" + f }
	t, _, msg := p.location()
	if msg != "" {
		return
	}
	switch t {
	case tableInput:
		errs.Add(field(""), "input registers are read-only (function 04): only coils and holding registers can be written")
		return
	case tableDiscrete:
		errs.Add(field(""), "discrete inputs are read-only (function 02): only coils and holding registers can be written")
		return
	}
	typ := p.Type
	if typ == "" {
		typ = defaultType(t)
	}
	ti, ok := typeInfo[typ]
	if !ok || (t.bits() && typ != "bool") || (p.Bit != nil && (*p.Bit > 15 || typ != "bool")) {
		return // validate reported it
	}
	if _, err := p.order(); err != nil {
		return
	}
	if ti.kind == kindString && (p.Length == 0 || p.Length > MaxWriteRegisters) {
		if p.Length > MaxWriteRegisters {
			errs.Add(field(""), "a string of %d registers cannot be written: one write (FC16) takes at most %d", p.Length, MaxWriteRegisters)
		}
		return
	}
	if p.Bit != nil && !c.MaskWrite {
		errs.Add(field(""), "bit %d of holding %d can only be written with FC22 (mask write register): set modbus.mask_write: true if the device supports it (ferry never read-modify-writes a register)", *p.Bit, p.Address)
		return
	}
	numeric := ti.kind != kindBool && ti.kind != kindString
	for _, b := range []struct {
		name string
		v    *float64
	}{{"min", w.Min}, {"max", w.Max}} {
		switch {
		case b.v == nil:
		case !numeric:
			errs.Add(field("."+b.name), "is only for numbers, not %s points (use allowed)", typ)
		case math.IsNaN(*b.v) || math.IsInf(*b.v, 0):
			errs.Add(field("."+b.name), "must be a finite number")
		}
	}
	if numeric && w.Min != nil && w.Max != nil && *w.Min > *w.Max {
		errs.Add(field(".min"), "%v is above max %v", *w.Min, *w.Max)
	}
	if len(w.Allowed) > 0 {
		dec := newDecoder(p, t)
		for i, a := range w.Allowed {
			if _, err := dec.encode(t, ferry.StringValue(a), true); err != nil {
				errs.Add(setting.Index(field(".allowed"), i), "%s", unwrapRefusal(err))
			}
		}
	}
}

// unwrapRefusal returns the reason of a refusal without the sentinel's
// text.
func unwrapRefusal(err error) string {
	s := err.Error()
	if p := ferry.ErrWriteRefused.Error() + ": "; len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
