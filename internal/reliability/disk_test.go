package reliability

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/internal/testpeer"
)

// mountTmpfs mounts a tmpfs of size at dir, or skips the test saying why
// it cannot (not root, no CAP_SYS_ADMIN in this container, …).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs for the data dir (needs root with CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

func remount(t *testing.T, dir, mode string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, mode, err, out)
	}
}

// readiness is /readyz?format=json.
type readiness struct {
	Ready  bool `json:"ready"`
	Checks []struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"checks"`
}

func (p *proc) readiness() (readiness, error) {
	var r readiness
	_, body, err := p.Get("/readyz?format=json")
	if err != nil {
		return r, err
	}
	err = json.Unmarshal([]byte(body), &r)
	return r, err
}

// check returns the error of the named check ("" when it passes).
func (r readiness) check(name string) (string, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Error, c.OK
		}
	}
	return "", false
}

// fill writes zeros into path until the filesystem is full.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

// TestDiskFull: the data dir is a small tmpfs that fills up while NATS is
// down. ferry must say so clearly (log, buffer_disk_error alert, /readyz
// naming the buffer), refuse scans without crashing, and recover by itself
// once space returns; the MQTT QoS 1 messages refused meanwhile come back
// from the broker and reach upstream.
func TestDiskFull(t *testing.T) {
	needProfile(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mountTmpfs(t, data, "16m")

	plant := startPlant(t, plantsim.Options{Presses: 2, ExtraPoints: 40, Rate: 100 * time.Millisecond})
	const gw, topic = "disk", "rel/seq"
	cfg := writeConfig(t, dir, cfgOpts{Gateway: gw, DataDir: data, Plant: plant, Interval: "100ms", Extra: 40,
		SeqTopic: topic, MaxSize: "64MiB"})
	plant.NATS.Shutdown()
	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(30*time.Second, func() error {
		m, err := f.Metrics()
		if err == nil && m.Sum("ferry_device_connected", "device=seq") != 1 {
			err = errors.New("device seq not connected")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pub := startSeqPublisher(plant, topic, 20*time.Millisecond)
	// Numbered messages go through before the disk fills.
	if err := waitFor(30*time.Second, f.metricAtLeast("ferry_mqtt_messages_total", 50, "device=seq", "result=ok")); err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(data, "filler")
	filled := fill(t, filler)
	fullAt := time.Now()
	var why string
	if err := waitFor(60*time.Second, func() error {
		r, err := f.readiness()
		if err != nil {
			return err
		}
		msg, ok := r.check("buffer")
		if ok || r.Ready {
			return errors.New("/readyz: buffer still ready")
		}
		why = msg
		return nil
	}); err != nil {
		t.Fatalf("disk full, but: %v", err)
	}
	detect := time.Since(fullAt)
	if !strings.Contains(why, "no space left on device") {
		t.Errorf("/readyz buffer check says %q; want the cause (no space left on device)", why)
	}
	// The disk stays full while ferry refuses scan after scan.
	if err := waitFor(60*time.Second, f.metricAtLeast("ferry_buffer_dropped_total", 20, "reason=disk_error")); err != nil {
		t.Errorf("scans refused while the disk is full (dropped_total{reason=disk_error}): %v", err)
	}
	m, err := f.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	refused := m.Sum("ferry_buffer_dropped_total", "reason=disk_error")
	if code, _, err := f.Get("/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz on a full disk: %d %v", code, err)
	}
	for _, want := range []string{"buffer commit failed", "rule=buffer_disk_error state=raised"} {
		if err := waitFor(30*time.Second, func() error {
			if !strings.Contains(f.Log(), want) {
				return fmt.Errorf("log lacks %q", want)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}

	// Space returns.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	if err := waitFor(60*time.Second, func() error {
		r, err := f.readiness()
		if err != nil {
			return err
		}
		if msg, ok := r.check("buffer"); !ok {
			return fmt.Errorf("buffer: %s", msg)
		}
		return nil
	}); err != nil {
		t.Fatalf("space is back, but: %v", err)
	}
	recovered := time.Since(freedAt)
	natsUp(t, plant)
	lastN := pub.Stop()
	if err := waitFor(2*time.Minute, func() error {
		got := seqNumbers(t, readSubject(t, plant.NATS.URL, "ferry.rel."+gw+".telemetry.seq", func(string) bool { return true }), nil)
		for n := int64(1); n <= lastN; n++ {
			if got[n] == 0 {
				return fmt.Errorf("MQTT message %d of %d not upstream", n, lastN)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := waitFor(30*time.Second, func() error {
		if !strings.Contains(f.Log(), "rule=buffer_disk_error state=cleared") {
			return errors.New("buffer_disk_error not cleared")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := f.Stop(60 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	msgs := readSubject(t, plant.NATS.URL, "ferry.rel."+gw+".telemetry.seq", func(string) bool { return true })
	got := seqNumbers(t, msgs, dumpBuffer(t, data))
	dups := 0
	for _, c := range got {
		dups += max(0, c-1)
	}
	if dups > 0 {
		t.Errorf("%d MQTT messages stored twice", dups)
	}
	result(t, "disk full (16 MiB tmpfs)", fmt.Sprintf("filled with %d MiB; /readyz named the buffer (%q) after %v; %v scans refused and counted, buffer_disk_error raised and cleared, no crash; ready again %v after space returned; %d numbered MQTT QoS 1 messages all upstream, %d duplicates",
		filled>>20, why, detect.Round(100*time.Millisecond), refused, recovered.Round(100*time.Millisecond), lastN, dups))
}

// TestReadOnlyDataDir: a data dir on a read-only filesystem at start gives
// a clear error and exit status 1 (systemd retries), not a panic; once the
// filesystem is writable again ferry starts with its data.
func TestReadOnlyDataDir(t *testing.T) {
	needProfile(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mountTmpfs(t, data, "16m")
	plant := startPlant(t, plantsim.Options{Presses: 1})
	cfg := writeConfig(t, dir, cfgOpts{Gateway: "ro", DataDir: data, Plant: plant, NoOPCUA: true, NoMQTT: true})
	plant.NATS.Shutdown()
	f := newProc(t, cfg)
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(30*time.Second, f.metricAtLeast("ferry_buffer_appended_total", 1, "lane=telemetry")); err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	before := lastSeqs(t, data)

	remount(t, data, "ro")
	var out string
	exit := func() string {
		f.Start()
		err, ok := f.Wait(30 * time.Second)
		if !ok {
			t.Fatal("ferry kept running on a read-only data dir")
		}
		out = f.RunLog()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("ferry on a read-only data dir: %v, want an exit status", err)
		}
		return ee.String()
	}
	status := exit()
	if !strings.Contains(out, "read-only file system") || !strings.Contains(out, data) {
		t.Errorf("the error does not say what is wrong (read-only file system, %s):\n%s", data, tail(out, 10))
	}
	remount(t, data, "rw")
	f.Start()
	if err := f.WaitUp(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// New records in this run (its counters start at zero).
	if err := waitFor(30*time.Second, f.metricAtLeast("ferry_buffer_appended_total", 1, "lane=telemetry")); err != nil {
		t.Error(err)
	}
	if err := f.Stop(30 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	after := lastSeqs(t, data)
	if after["telemetry"] <= before["telemetry"] {
		t.Errorf("no new records after the filesystem was writable again")
	}
	msg := strings.TrimSpace(tail(out, 1))
	result(t, "read-only data dir at start", fmt.Sprintf("%s with %q; no panic; starts normally with its data once writable", status, msg))
}

// damage is one way to break buffer.db.
type damage struct {
	name           string
	mustQuarantine bool // else junk may land in record values (dropped by checksum) or free pages
	do             func(t *testing.T, path string, r *rand.Rand)
}

var damages = []damage{
	{"random bytes in pages", false, func(t *testing.T, path string, r *rand.Rand) {
		fh, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		fi, _ := fh.Stat()
		pages := fi.Size() / 4096
		for i := 0; i < 4; i++ {
			pg := 2 + r.Int64N(max(1, pages-2))
			junk := make([]byte, 512)
			for j := range junk {
				junk[j] = byte(r.Uint32())
			}
			if _, err := fh.WriteAt(junk, pg*4096+r.Int64N(4096-512)); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"flipped bytes in records", false, func(t *testing.T, path string, r *rand.Rand) {
		// Every record of press2 gets one byte of its device name flipped:
		// the file's structure stays sound, the records' checksums fail.
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for i := 0; ; {
			j := bytes.Index(b[i:], []byte("press2"))
			if j < 0 {
				break
			}
			b[i+j] = 'P'
			i += j + 6
			n++
		}
		if n == 0 {
			t.Fatal("no press2 record in the file")
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}},
	{"truncated", true, func(t *testing.T, path string, r *rand.Rand) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/3); err != nil {
			t.Fatal(err)
		}
	}},
	{"both meta pages", true, func(t *testing.T, path string, r *rand.Rand) {
		fh, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if _, err := fh.WriteAt([]byte(strings.Repeat("\xa5", 8192)), 0); err != nil {
			t.Fatal(err)
		}
	}},
	{"not a bbolt file", true, func(t *testing.T, path string, r *rand.Rand) {
		junk := make([]byte, 256<<10)
		for j := range junk {
			junk[j] = byte(r.Uint32())
		}
		if err := os.WriteFile(path, junk, 0o600); err != nil {
			t.Fatal(err)
		}
	}},
}

var (
	salvagedRe = regexp.MustCompile(`msg="buffer file quarantined".* salvaged=(\d+)`)
	droppedRe  = regexp.MustCompile(`msg="damaged records dropped".* records=(\d+)`)
)

// TestCorruptStore: a damaged buffer.db at start is moved aside
// (buffer.db.corrupt-*), what can be read is salvaged into a fresh store,
// buffer_quarantined is raised (log sink and upstream), ferry serves, and
// later starts (after kill -9) open the fresh store without another
// quarantine: no crash loop. Junk inside record values leaves the file
// sound: then exactly the records counted as damaged may be missing.
// Every record stored before the damage is upstream at most once.
func TestCorruptStore(t *testing.T) {
	needProfile(t)
	r := rng(t)
	plant := startPlant(t, plantsim.Options{Presses: 2, Rate: 100 * time.Millisecond})
	var summary []string
	cases := damages
	restarts := pick(1, 3)
	if profile == short {
		cases = []damage{damages[0], damages[1]} // random junk, damaged records (unit tests cover the rest)
	}
	for _, dmg := range cases {
		t.Run(dmg.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			gw := "corrupt" + fmt.Sprint(len(summary))
			cfg := writeConfig(t, dir, cfgOpts{Gateway: gw, DataDir: data, Plant: plant, Interval: "50ms", NoOPCUA: true})
			// Fill the buffer with NATS unreachable: point the uplink at
			// a closed port for the first run.
			deadCfg := writeConfig(t, t.TempDir(), cfgOpts{Gateway: gw, DataDir: data, Plant: plant, Interval: "50ms", NoOPCUA: true,
				Uplink: fmt.Sprintf("uplink:\n  nats: {urls: [\"nats://%s\"], stream: FERRY}\n", testpeer.DownAddr(t))})
			f0 := newProc(t, deadCfg)
			f0.Start()
			if err := f0.WaitUp(60 * time.Second); err != nil {
				t.Fatal(err)
			}
			if err := waitFor(30*time.Second, f0.metricAtLeast("ferry_buffer_appended_total", 20, "lane=telemetry")); err != nil {
				t.Fatal(err)
			}
			if err := f0.Stop(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			before := map[string]bool{}
			for _, rec := range dumpBuffer(t, data) {
				before[rec.ID] = true
			}
			dmg.do(t, filepath.Join(data, "buffer.db"), r)

			f := newProc(t, cfg)
			f.Start()
			if err := f.WaitUp(60 * time.Second); err != nil {
				t.Fatalf("ferry does not start on a damaged store: %v", err)
			}
			q, _ := filepath.Glob(filepath.Join(data, "buffer.db.corrupt-*"))
			quarantined := len(q) == 1
			switch {
			case len(q) > 1:
				t.Errorf("quarantined files %v, want one", q)
			case dmg.mustQuarantine && !quarantined:
				t.Errorf("no buffer.db.corrupt-* after %s", dmg.name)
			}
			if quarantined {
				if err := waitFor(30*time.Second, func() error {
					if !strings.Contains(f.Log(), "rule=buffer_quarantined state=raised") {
						return errors.New("no buffer_quarantined alert in the log sink")
					}
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
			// Restarts after kill -9 open the store as it is.
			for i := 0; i < restarts; i++ {
				time.Sleep(time.Duration(300+r.IntN(1500)) * time.Millisecond) // the random kill moment under test: not a wait
				f.Kill()
				f.Start()
				if err := f.WaitUp(60 * time.Second); err != nil {
					t.Fatalf("restart %d after the damage: %v", i+1, err)
				}
				if strings.Contains(f.RunLog(), "quarantin") {
					t.Errorf("restart %d quarantined again:\n%s", i+1, tail(f.RunLog(), 10))
				}
			}
			q2, _ := filepath.Glob(filepath.Join(data, "buffer.db.corrupt-*"))
			if len(q2) != len(q) {
				t.Errorf("after restarts: quarantined files %v, want %v", q2, q)
			}
			// The alert reaches upstream too (alerts lane).
			upstream := false
			if quarantined {
				if err := waitFor(30*time.Second, func() error {
					for _, m := range readSubject(t, plant.NATS.URL, "ferry.rel."+gw+".alerts", func(string) bool { return true }) {
						if m.Msg != nil && m.Msg.Alert != nil && m.Msg.Alert.Rule == "buffer_quarantined" {
							upstream = true
							return nil
						}
					}
					return errors.New("buffer_quarantined not upstream")
				}); err != nil {
					t.Error(err)
				}
			}
			// Let the backlog go, then account for every record stored
			// before the damage: upstream once, or lost to the damage.
			if err := waitFor(60*time.Second, func() error {
				m, err := f.Metrics()
				if err != nil {
					return err
				}
				if n := m.Sum("ferry_buffer_records"); n > 10 {
					return fmt.Errorf("%v records buffered", n)
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
			if err := f.Stop(30 * time.Second); err != nil {
				t.Errorf("stop: %v", err)
			}
			seen := map[string]int{}
			for _, m := range readSubject(t, plant.NATS.URL, "ferry.rel."+gw+".>", nil) {
				seen[m.ID]++
			}
			for _, rec := range dumpBuffer(t, data) {
				seen[rec.ID]++
			}
			lost, dups := 0, 0
			for id := range before {
				switch n := seen[id]; {
				case n == 0:
					lost++
				case n > 1:
					dups++
				}
			}
			if dups > 0 {
				t.Errorf("%d records stored before the damage are upstream twice", dups)
			}
			dropped := 0
			if m := droppedRe.FindStringSubmatch(f.Log()); m != nil {
				fmt.Sscan(m[1], &dropped)
			}
			var how string
			switch {
			case quarantined:
				salvaged := "?"
				if m := salvagedRe.FindStringSubmatch(f.Log()); m != nil {
					salvaged = m[1]
				}
				how = fmt.Sprintf("quarantined (%s entries salvaged), alert in the log sink and upstream %v", salvaged, upstream)
			default:
				// A sound file: only records whose checksum fails may go,
				// each counted.
				if lost != dropped {
					t.Errorf("%d records lost, %d counted as damaged", lost, dropped)
				}
				how = fmt.Sprintf("file sound, %d damaged records dropped and counted", dropped)
			}
			summary = append(summary, fmt.Sprintf("%s: %d records before, %d upstream after, %d lost to the damage, %d duplicated; %s; %d kill -9 restarts without a new quarantine",
				dmg.name, len(before), len(before)-lost, lost, dups, how, restarts))
		})
	}
	result(t, "corrupt store at start", fmt.Sprintf("%d damages: %s", len(cases), strings.Join(summary, "; ")))
}
