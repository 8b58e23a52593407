package sparkplug

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testutil"
	"github.com/ferry-edge/ferry/uplink/sparkplug/sproto"
)

// tahuTypes are the names Eclipse Tahu's JavaScript library gives the
// data types ferry publishes.
var tahuTypes = map[uint32]string{
	TypeInt64: "Int64", TypeUInt64: "UInt64", TypeDouble: "Double", TypeBoolean: "Boolean", TypeString: "String", TypeInt32: "Int32",
}

// tahuDir installs sparkplug-payload (npm ci from the committed lock) in
// the user cache, once per lock file, under a file lock; it skips the
// test when node or npm is absent.
func tahuDir(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (Debian: apt-get install nodejs npm): Tahu interop test skipped", bin)
		}
	}
	src := filepath.Join("testdata", "tahujs")
	var all []byte
	for _, f := range []string{"package.json", "package-lock.json", "decode.js"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	sum := sha256.Sum256(all)
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "ferry", "tahujs-"+hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(filepath.Join(dir, ".done")); err == nil {
		return dir
	}
	for _, f := range []string{"package.json", "package-lock.json", "decode.js"} {
		b, _ := os.ReadFile(filepath.Join(src, f))
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci sparkplug-payload in %s: %v\n%s", dir, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, ".done"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

type tahuMetric struct {
	Name         *string         `json:"name"`
	Alias        *string         `json:"alias"`
	Type         string          `json:"type"`
	Value        json.RawMessage `json:"value"`
	IsHistorical bool            `json:"isHistorical"`
	Timestamp    string          `json:"timestamp"`
	Properties   map[string]struct {
		Type  string          `json:"type"`
		Value json.RawMessage `json:"value"`
	} `json:"properties"`
}

type tahuOut struct {
	Topic   string `json:"topic"`
	Error   string `json:"error"`
	Payload struct {
		Timestamp string       `json:"timestamp"`
		Seq       *string      `json:"seq"`
		Metrics   []tahuMetric `json:"metrics"`
	} `json:"payload"`
}

// TestTahuDecodes: every payload of a session (births with properties,
// DDATA of every type, nulls with Quality, historical data, an alert,
// DDEATH, NDEATH) decoded by Eclipse Tahu's JavaScript library
// (sparkplug-payload 1.0.3, node) gives the same seq, names, aliases,
// types, values and flags as ferry meant.
func TestTahuDecodes(t *testing.T) {
	dir := tahuDir(t)
	r := newRig(t, func(c *Config) { c.PrimaryHostID = testHost })
	r.node.SetCatalog(testCatalog)
	r.run()
	r.host.State(true)
	r.waitBorn(0)
	t0 := time.Now()
	r.add("press", t0, good("pressure", ferry.FloatValue(-1.25)), good("count", ferry.IntValue(-7)), good("running", ferry.BoolValue(true)),
		good("big", ferry.UintValue(math.MaxUint64)), good("recipe", ferry.StringValue("A-ü")))
	r.add("press", t0.Add(time.Second), bad("pressure"), good("count", ferry.IntValue(8)))
	r.add("oven", t0, bad("temp"))
	r.add("oven", t0.Add(time.Second), bad("temp"))
	r.buf.AppendAlert(ferry.Alert{ID: "a1", Rule: "hot", Severity: ferry.SeverityWarning, State: ferry.AlertRaised, Time: t0, Since: t0})
	testutil.WaitFor(t, 10*time.Second, "the live data", func() bool { return r.pending() == 0 && len(r.host.Values("press", "count")) == 2 })
	r.host.State(false)
	testutil.WaitFor(t, 10*time.Second, "NDEATH", func() bool { return len(r.host.Messages("NDEATH")) == 1 })
	r.add("press", t0.Add(2*time.Second), good("count", ferry.IntValue(9)))
	r.host.State(true)
	r.waitBorn(1)
	testutil.WaitFor(t, 10*time.Second, "the historical value", func() bool { return len(r.host.Values("press", "count")) == 3 })
	r.noViolations()

	msgs := r.host.Messages()
	var in bytes.Buffer
	for _, m := range msgs {
		b, _ := json.Marshal(map[string]string{"topic": m.Topic, "hex": hex.EncodeToString(m.Raw)})
		in.Write(append(b, '\n'))
	}
	cmd := exec.Command("node", filepath.Join(dir, "decode.js"))
	cmd.Dir = dir
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node decode.js: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	i := 0
	kinds := map[string]int{}
	for sc.Scan() {
		var got tahuOut
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("decode.js output %q: %v", sc.Text(), err)
		}
		if i >= len(msgs) {
			t.Fatalf("more outputs than messages")
		}
		compareTahu(t, msgs[i].Topic, msgs[i].Payload, &got)
		kinds[msgs[i].Type]++
		i++
	}
	if i != len(msgs) {
		t.Fatalf("decode.js decoded %d of %d payloads", i, len(msgs))
	}
	for _, k := range []string{"NBIRTH", "DBIRTH", "DDATA", "NDATA", "DDEATH", "NDEATH"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among the payloads checked: %v", k, kinds)
		}
	}
	t.Logf("Tahu JS decoded %d payloads like ferry's host: %v", len(msgs), kinds)
}

func compareTahu(t *testing.T, topic string, want *sproto.Payload, got *tahuOut) {
	t.Helper()
	if got.Error != "" {
		t.Errorf("%s: Tahu cannot decode: %s", topic, got.Error)
		return
	}
	if (want.Seq == nil) != (got.Payload.Seq == nil) || (want.Seq != nil && *got.Payload.Seq != strconv.FormatUint(want.GetSeq(), 10)) {
		t.Errorf("%s: Tahu seq %v, want %v", topic, got.Payload.Seq, want.Seq)
	}
	if len(got.Payload.Metrics) != len(want.Metrics) {
		t.Errorf("%s: Tahu sees %d metrics, want %d", topic, len(got.Payload.Metrics), len(want.Metrics))
		return
	}
	for j, w := range want.Metrics {
		g := got.Payload.Metrics[j]
		where := fmt.Sprintf("%s metric %d (%s/%d)", topic, j, w.GetName(), w.GetAlias())
		if w.Name != nil && (g.Name == nil || *g.Name != w.GetName()) {
			t.Errorf("%s: Tahu name %v", where, g.Name)
		}
		if w.Alias != nil && (g.Alias == nil || *g.Alias != strconv.FormatUint(w.GetAlias(), 10)) {
			t.Errorf("%s: Tahu alias %v", where, g.Alias)
		}
		if want := tahuTypes[w.GetDatatype()]; g.Type != want {
			t.Errorf("%s: Tahu type %q, want %q", where, g.Type, want)
		}
		if g.IsHistorical != w.GetIsHistorical() {
			t.Errorf("%s: Tahu isHistorical %v", where, g.IsHistorical)
		}
		if w.GetIsNull() {
			// Tahu reports is_null as a null value.
			if string(g.Value) != "null" {
				t.Errorf("%s: Tahu value %s, want null (is_null)", where, g.Value)
			}
			continue
		}
		var wantV string
		switch v := w.Value.(type) {
		case *sproto.Payload_Metric_LongValue:
			if w.GetDatatype() == TypeInt64 {
				wantV = strconv.Quote(strconv.FormatInt(int64(v.LongValue), 10))
			} else {
				wantV = strconv.Quote(strconv.FormatUint(v.LongValue, 10))
			}
		case *sproto.Payload_Metric_DoubleValue:
			wantV = strconv.FormatFloat(v.DoubleValue, 'g', -1, 64)
		case *sproto.Payload_Metric_BooleanValue:
			wantV = strconv.FormatBool(v.BooleanValue)
		case *sproto.Payload_Metric_StringValue:
			b, _ := json.Marshal(v.StringValue)
			wantV = string(b)
		}
		if string(g.Value) != wantV {
			t.Errorf("%s: Tahu value %s, want %s", where, g.Value, wantV)
		}
		if w.Properties != nil && len(g.Properties) != len(w.Properties.Keys) {
			t.Errorf("%s: Tahu sees %d properties, want %d", where, len(g.Properties), len(w.Properties.Keys))
		}
	}
}
