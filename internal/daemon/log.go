package daemon

import (
	"context"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
)

// ParseLevel parses a log level as the configuration writes it: debug,
// info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("log level %q is not one of debug, info, warn, error", s)
}

// NewLogger returns ferry's logger writing to w: format "json" gives one
// JSON object a line, anything else logfmt-style text. An unknown level
// means info (the configuration loader has already refused it). See
// NewLoggerLevel for what changes under journald.
func NewLogger(level, format string, w io.Writer) *slog.Logger {
	lv, _ := ParseLevel(level)
	return NewLoggerLevel(lv, format, w)
}

// NewLoggerLevel is NewLogger with a slog.Leveler, so that a reload can
// change the level of a running logger through a *slog.LevelVar.
//
// When w is the stream journald reads (UnderJournal), each line starts
// with its syslog priority ("<4>" for a warning), which journald strips
// and records, and text lines carry no timestamp (journald adds its own).
// JSON lines keep their "time" field for log shippers.
func NewLoggerLevel(level slog.Leveler, format string, w io.Writer) *slog.Logger {
	if UnderJournal(w) {
		return slog.New(newPriorityHandler(level, format, w))
	}
	return slog.New(newHandler(level, format, w, false))
}

func newHandler(level slog.Leveler, format string, w io.Writer, journal bool) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	if journal {
		opts.ReplaceAttr = dropTime
	}
	return slog.NewTextHandler(w, opts)
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// UnderJournal reports whether w is the stream journald reads: the
// JOURNAL_STREAM variable systemd sets names the device and inode of the
// service's stdout/stderr. When w is a file, it must be that stream (ferry
// run from a shell inside a service, with output redirected, is not under
// journald); any other writer is trusted to the variable.
func UnderJournal(w io.Writer) bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return true
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(js, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// priorityHandler prefixes each record with its syslog priority. The
// inner handler writes into a shared buffer; the prefix and the line then
// go to the output in one Write. The buffer's lock serialises every
// record of the logger and of the loggers derived from it.
type priorityHandler struct {
	inner slog.Handler
	buf   *lineBuffer
}

type lineBuffer struct {
	mu  sync.Mutex
	b   []byte
	out io.Writer
}

func (l *lineBuffer) Write(p []byte) (int, error) { l.b = append(l.b, p...); return len(p), nil }

func newPriorityHandler(level slog.Leveler, format string, w io.Writer) *priorityHandler {
	buf := &lineBuffer{out: w}
	return &priorityHandler{inner: newHandler(level, format, buf, true), buf: buf}
}

func (h *priorityHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	h.buf.mu.Lock()
	defer h.buf.mu.Unlock()
	h.buf.b = append(h.buf.b[:0], priority(r.Level)...)
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := h.buf.out.Write(h.buf.b)
	if cap(h.buf.b) > 64<<10 {
		h.buf.b = nil // do not keep one huge record's buffer forever
	}
	return err
}

func (h *priorityHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &priorityHandler{inner: h.inner.WithAttrs(as), buf: h.buf}
}

func (h *priorityHandler) WithGroup(name string) slog.Handler {
	return &priorityHandler{inner: h.inner.WithGroup(name), buf: h.buf}
}

// priority maps a slog level to the sd-daemon(3) prefix.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

// CaptureStdLog sends what libraries print with the standard log package
// (the serial library, for one, when it cannot restore a port's settings
// after the adapter was unplugged) through l, at Warn with part=library,
// so that the journal gets one format. It returns a function that puts
// the standard logger back.
func CaptureStdLog(l *slog.Logger) (restore func()) {
	out, flags, prefix := stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	std := slog.NewLogLogger(l.With("part", "library").Handler(), slog.LevelWarn)
	stdlog.SetOutput(std.Writer())
	stdlog.SetFlags(0)
	stdlog.SetPrefix("")
	return func() {
		stdlog.SetOutput(out)
		stdlog.SetFlags(flags)
		stdlog.SetPrefix(prefix)
	}
}
