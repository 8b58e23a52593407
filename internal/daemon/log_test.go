package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	stdlog "log"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/ferry-edge/ferry/internal/setting"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"debug", slog.LevelDebug, false},
		{"info", slog.LevelInfo, false},
		{"", slog.LevelInfo, false},
		{"WARN", slog.LevelWarn, false},
		{"error", slog.LevelError, false},
		{"verbose", slog.LevelInfo, true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseLevel(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestLoggerFormats(t *testing.T) {
	timeRE := regexp.MustCompile(`time=\d{4}-`)
	tests := []struct {
		name    string
		journal bool
		format  string
		check   func(t *testing.T, lines []string)
	}{
		{"text in a terminal", false, "text", func(t *testing.T, lines []string) {
			if !timeRE.MatchString(lines[0]) || !strings.Contains(lines[0], `level=INFO msg="device connected" device=press3 password=[redacted]`) {
				t.Errorf("line %q", lines[0])
			}
			if !strings.Contains(lines[1], `level=WARN msg="device lost"`) {
				t.Errorf("line %q", lines[1])
			}
		}},
		{"text under journald", true, "text", func(t *testing.T, lines []string) {
			if want := `<6>level=INFO msg="device connected" device=press3 password=[redacted]`; lines[0] != want {
				t.Errorf("line %q, want %q", lines[0], want)
			}
			if want := `<4>level=WARN msg="device lost" device=press3 reason=timeout`; lines[1] != want {
				t.Errorf("line %q, want %q", lines[1], want)
			}
			if want := `<3>level=ERROR msg="buffer failed" part=buffer err="disk full"`; lines[2] != want {
				t.Errorf("line %q, want %q", lines[2], want)
			}
		}},
		{"json under journald", true, "json", func(t *testing.T, lines []string) {
			for i, prio := range []string{"<6>", "<4>", "<3>"} {
				body, ok := strings.CutPrefix(lines[i], prio)
				if !ok {
					t.Fatalf("line %q lacks %s", lines[i], prio)
				}
				var m map[string]any
				if err := json.Unmarshal([]byte(body), &m); err != nil {
					t.Fatalf("line %q: %v", lines[i], err)
				}
				if m["time"] == nil {
					t.Errorf("json line without time: %q", lines[i])
				}
			}
			if !strings.Contains(lines[0], `"password":"[redacted]"`) {
				t.Errorf("line %q", lines[0])
			}
		}},
		{"json in a terminal", false, "json", func(t *testing.T, lines []string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &m); err != nil || m["msg"] != "device connected" || m["time"] == nil {
				t.Errorf("line %q: %v", lines[0], err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.journal {
				t.Setenv("JOURNAL_STREAM", "8:12345")
			} else {
				t.Setenv("JOURNAL_STREAM", "")
			}
			var buf bytes.Buffer
			log := NewLogger("info", tt.format, &buf)
			dev := log.With("device", "press3")
			dev.Debug("poll", "n", 1)
			dev.Info("device connected", "password", setting.Secret("canary-Pw-1"))
			dev.Warn("device lost", "reason", "timeout")
			log.With("part", "buffer").Error("buffer failed", "err", fmt.Errorf("disk full"))
			out := buf.String()
			if strings.Contains(out, "canary-Pw-1") {
				t.Fatalf("secret printed:\n%s", out)
			}
			if strings.Contains(out, "poll") {
				t.Errorf("debug record at level info:\n%s", out)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("%d lines, want 3:\n%s", len(lines), out)
			}
			tt.check(t, lines)
		})
	}
}

// TestUnderJournalFile: a file is journald's stream only when its device
// and inode are the ones in JOURNAL_STREAM.
func TestUnderJournalFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	st := fi.Sys().(*syscall.Stat_t)

	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	if UnderJournal(f) {
		t.Error("another inode counted as the journal stream")
	}
	t.Setenv("JOURNAL_STREAM", "garbage")
	if UnderJournal(f) {
		t.Error("malformed JOURNAL_STREAM accepted")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !UnderJournal(f) {
		t.Fatal("the journal stream not recognised")
	}
	NewLogger("info", "text", f).Warn("watch out")
	b, _ := os.ReadFile(f.Name())
	if got, want := string(b), "<4>level=WARN msg=\"watch out\"\n"; got != want {
		t.Errorf("file holds %q, want %q", got, want)
	}
}

func TestLoggerLevelVar(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "1:1")
	var lv slog.LevelVar
	var buf bytes.Buffer
	log := NewLoggerLevel(&lv, "text", &buf).With("k", "v")
	log.Debug("hidden")
	lv.Set(slog.LevelDebug) // a reload lowered the level
	log.Debug("shown")
	if got, want := buf.String(), "<7>level=DEBUG msg=shown k=v\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A library's log.Printf comes out as one of ferry's records.
func TestCaptureStdLog(t *testing.T) {
	var buf bytes.Buffer
	restore := CaptureStdLog(NewLogger("info", "json", &buf))
	stdlog.Printf("serial: could not restore setting: %v\n", "input/output error")
	restore()
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &rec); err != nil {
		t.Fatalf("output %q is not one JSON record: %v", buf.String(), err)
	}
	if rec["level"] != "WARN" || rec["part"] != "library" || rec["msg"] != "serial: could not restore setting: input/output error" {
		t.Errorf("record %v", rec)
	}
	buf.Reset()
	stdlog.SetOutput(&buf)
	defer stdlog.SetOutput(os.Stderr)
	stdlog.Print("after restore")
	if !strings.Contains(buf.String(), "after restore") || strings.Contains(buf.String(), `"level"`) {
		t.Errorf("after restore: %q", buf.String())
	}
}
