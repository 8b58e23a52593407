package gateway

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestConsoleWrite drives the console's Write control in a real headless
// Chromium against a gateway with commands and a real Modbus server: the
// writable point has a Write button (a read-only one has none), a wrong
// operator password is refused with the reason shown and nothing
// written, and the operator's write lands in the server's registers with
// its read back shown.
func TestConsoleWrite(t *testing.T) {
	chrome := testutil.Chromium(t)
	r := newCmdRig(t, true, writablePoints...)
	ctx := testutil.Browser(t, chrome)
	testutil.Browse(t, ctx, 30*time.Second, "open press's points",
		chromedp.Navigate(r.h.url("/#points/press")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-point="press.setpoint"] button.write`)))
	if n := mustRun(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('tr[data-point="press.line_speed"] button.write').length`)); n != 0 {
		t.Fatalf("the read-only point has %d Write buttons", n)
	}

	write := func(value, pass, status string) string {
		t.Helper()
		testutil.Browse(t, ctx, 20*time.Second, "write "+value,
			chromedp.Click(chromedp.CSS(`tr[data-point="press.setpoint"] button.write`)),
			chromedp.WaitVisible(chromedp.CSS(`#write-dialog[open]`)),
			chromedp.SetValue(chromedp.CSS(`#write-value`), value),
			chromedp.SetValue(chromedp.CSS(`#write-user`), operator),
			chromedp.SetValue(chromedp.CSS(`#write-pass`), pass),
			chromedp.Click(chromedp.CSS(`#write-submit`)),
			chromedp.WaitVisible(chromedp.CSS(`#write-result[data-status="`+status+`"]`)))
		text := textOf(t, ctx, `#write-result`)
		testutil.Browse(t, ctx, 10*time.Second, "close the dialog",
			chromedp.Click(chromedp.CSS(`#write-cancel`)),
			chromedp.WaitNotPresent(chromedp.CSS(`#write-dialog[open]`)))
		return text
	}
	if got := write("42.5", "wrong", "error"); !strings.Contains(got, "operator credential") {
		t.Fatalf("wrong password shows %q", got)
	}
	if w := r.bank.Writes(); len(w) != 0 {
		t.Fatalf("the Modbus server took writes: %+v", w)
	}
	if got := write("300", operatorPwd, "refused"); !strings.Contains(got, "above max 250") {
		t.Fatalf("out of range shows %q", got)
	}
	if got := write("42.5", operatorPwd, "done"); !strings.Contains(got, "read back 42.5") {
		t.Fatalf("write shows %q", got)
	}
	// float32(425) in CDAB order (scale 0.1).
	bits := math.Float32bits(425)
	if lo, hi := r.bank.Reg(10), r.bank.Reg(11); uint32(hi)<<16|uint32(lo) != bits {
		t.Fatalf("registers 10, 11 = %#04x %#04x, want %#08x in CDAB", lo, hi, bits)
	}
}
