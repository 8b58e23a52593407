package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/plantsim"
	"github.com/ferry-edge/ferry/uplink"
)

// startPlant starts a simulated plant (Modbus presses, OPC UA boiler, MQTT
// broker, NATS JetStream with stream FERRY) in the test process.
func startPlant(t *testing.T, opts plantsim.Options) *plantsim.Plant {
	t.Helper()
	if opts.NATSDir == "" {
		opts.NATSDir = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := plantsim.Start(ctx, opts)
	if err != nil {
		cancel()
		t.Fatalf("plantsim: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		p.Close()
	})
	return p
}

// natsUp starts the plant's NATS server again if it is down.
func natsUp(t *testing.T, p *plantsim.Plant) {
	t.Helper()
	if p.NATS.Running() {
		return
	}
	if err := p.NATS.Start(); err != nil {
		t.Fatalf("restart nats: %v", err)
	}
}

// cfgOpts shape a ferry configuration for a plant.
type cfgOpts struct {
	Gateway    string
	DataDir    string
	HTTP       string
	Plant      *plantsim.Plant
	Interval   string // Modbus poll interval (default 1s)
	Extra      int    // extra float32 points per press, as in plantsim.Options.ExtraPoints
	NoOPCUA    bool
	NoMQTT     bool
	SeqTopic   string // adds MQTT device "seq" with point n (JSON {"n": N}) on this topic
	MaxSize    string // buffer.max_size (default 256MiB)
	LogLevel   string
	Devices    string // raw YAML appended to devices:
	Rules      string // raw YAML replacing the default rules
	Uplink     string // raw YAML replacing the uplink section ("" = the plant's NATS)
	AlertsMQTT bool   // also publish alerts to the plant's broker on ferry/alerts
}

// writeConfig writes ferry.yaml into dir and returns its path.
func writeConfig(t *testing.T, dir string, o cfgOpts) string {
	t.Helper()
	if o.Gateway == "" {
		o.Gateway = "rel"
	}
	if o.Interval == "" {
		o.Interval = "1s"
	}
	if o.MaxSize == "" {
		o.MaxSize = "256MiB"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: %s, site: rel}\ndata_dir: %s\nlog: {level: %s, format: text}\ndevices:\n", o.Gateway, o.DataDir, o.LogLevel)
	p := o.Plant
	if p != nil {
		for _, pr := range p.Presses {
			fmt.Fprintf(&b, `  - name: %s
    modbus: {url: "tcp://%s", unit: 1, interval: %s, timeout: 500ms}
    points:
      - {name: oil_temp, table: holding, address: 0, type: float32}
      - {name: pressure, table: holding, address: 4, type: int16, scale: 0.1}
      - {name: speed, table: holding, address: 5, type: uint16}
      - {name: cycles, table: holding, address: 6, type: uint32}
      - {name: vibration, table: holding, address: 8, type: float32}
      - {name: overheating, table: holding, address: 10, type: bool, bit: 1}
      - {name: energy, table: holding, address: 30, type: float64}
      - {name: label, table: holding, address: 34, type: string, length: 8}
      - {name: motor_current, table: input, address: 0, type: uint16, scale: 0.01}
      - {name: running, table: coil, address: 0}
      - {name: door_open, table: discrete, address: 0}
`, pr.Name, pr.Addr, o.Interval)
			for k := 0; k < o.Extra; k++ {
				fmt.Fprintf(&b, "      - {name: x%d, table: holding, address: %d, type: float32}\n", k, plantsim.HRExtraStart+2*k)
			}
		}
		if !o.NoOPCUA {
			fmt.Fprintf(&b, `  - name: boiler
    opcua: {endpoint: "%s", security_policy: None, allow_insecure: true, mode: subscribe, interval: 500ms}
    points:
      - {name: pressure, node: "nsu=%[2]s;s=Boiler.Pressure"}
      - {name: temperature, node: "nsu=%[2]s;s=Boiler.Temperature"}
      - {name: count, node: "nsu=%[2]s;s=Boiler.Count"}
`, p.Boiler.Endpoint, plantsim.BoilerNamespace)
		}
		if !o.NoMQTT {
			b.WriteString(p.EnvDevice())
		}
		if o.SeqTopic != "" {
			fmt.Fprintf(&b, `  - name: seq
    mqtt: {broker: "tcp://%s", topic: "%s", qos: 1, format: json}
    points:
      - {name: n, path: n, type: int}
`, p.MQTT.Addr, o.SeqTopic)
		}
	}
	b.WriteString(o.Devices)
	switch {
	case o.Rules != "":
		b.WriteString("rules:\n" + o.Rules)
	case p != nil:
		b.WriteString("rules:\n  - {name: oil_hot, when: press1.oil_temp > 80, clear: press1.oil_temp < 75, for: 1s, severity: critical}\n")
		if len(p.Presses) > 1 {
			b.WriteString("  - {name: press2_silent, point: press2.oil_temp, stale: 3s, severity: warning}\n")
		}
	}
	b.WriteString("alerts:\n  log: {enabled: true}\n")
	if o.AlertsMQTT && p != nil {
		fmt.Fprintf(&b, "  mqtt: {broker: \"tcp://%s\", topic: ferry/alerts}\n", p.MQTT.Addr)
	}
	fmt.Fprintf(&b, "buffer: {max_size: %s, max_age: 24h}\n", o.MaxSize)
	switch {
	case o.Uplink != "":
		b.WriteString(o.Uplink)
	case p != nil && p.NATS != nil:
		fmt.Fprintf(&b, "uplink:\n  nats: {urls: [\"%s\"], stream: FERRY, duplicate_window: 10m}\n", p.NATS.URL)
	}
	if o.HTTP == "" {
		o.HTTP = "127.0.0.1:0" // the run's log says where it listens
	}
	fmt.Fprintf(&b, "http: {listen: \"%s\"}\n", o.HTTP)
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// upMsg is one message of the stream.
type upMsg struct {
	StreamSeq uint64
	Subject   string
	ID        string // Nats-Msg-Id
	Kind      string // Ferry-Kind
	Msg       *uplink.Message
}

// subjectMatch reports whether subject matches filter (NATS wildcards).
func subjectMatch(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, ft := range f {
		if ft == ">" {
			return len(s) > i
		}
		if i >= len(s) || ft != "*" && ft != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}

// readStream reads every message of stream FERRY. Telemetry and alerts are
// decoded with uplink.Decode when decode(subject) says so.
func readStream(t *testing.T, url string, decode func(subject string) bool) []upMsg {
	t.Helper()
	return readSubject(t, url, "", decode)
}

// readSubject reads the messages of stream FERRY on subject filter (""
// for all).
func readSubject(t *testing.T, url, filter string, decode func(subject string) bool) []upMsg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("upstream: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, plantsim.StreamName)
	if err != nil {
		t.Fatalf("upstream: stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := info.State.Msgs
	occ := jetstream.OrderedConsumerConfig{}
	if filter != "" {
		// Batches carry the records of every device on the telemetry
		// subject with _batch for the device: read them too, and keep
		// the records whose own subject the filter takes.
		occ.FilterSubjects = []string{filter}
		if toks := strings.Split(filter, "."); len(toks) > 1 && toks[len(toks)-2] == "telemetry" && toks[len(toks)-1] != ">" {
			toks[len(toks)-1] = uplink.BatchDeviceToken
			occ.FilterSubjects = append(occ.FilterSubjects, strings.Join(toks, "."))
		}
		want = 0
		for _, f := range occ.FilterSubjects {
			si, err := s.Info(ctx, jetstream.WithSubjectFilter(f))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range si.State.Subjects {
				want += n
			}
		}
	}
	c, err := s.OrderedConsumer(ctx, occ)
	if err != nil {
		t.Fatal(err)
	}
	if want == 0 {
		return nil
	}
	var out []upMsg
	got := map[uint64]bool{} // stream sequences read (an ordered consumer may deliver one again after a reset)
	empty := 0
	for empty < 3 {
		batch, err := c.Fetch(2000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("upstream: fetch: %v", err)
		}
		n, pending := 0, uint64(1)
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			pending = meta.NumPending
			if got[meta.Sequence.Stream] {
				continue
			}
			got[meta.Sequence.Stream] = true
			h := m.Headers()
			u := upMsg{StreamSeq: meta.Sequence.Stream, Subject: m.Subject(), ID: h.Get(nats.MsgIdHdr), Kind: h.Get(uplink.HeaderKind)}
			if u.Kind == uplink.KindBatch {
				// One upMsg per record, with the record's id and the
				// subject it would have had alone.
				all, err := uplink.DecodeAll(m.Subject(), h, m.Data())
				if err != nil {
					t.Errorf("upstream: message %d (%s): %v", u.StreamSeq, u.ID, err)
					continue
				}
				for _, dm := range all {
					r := upMsg{StreamSeq: u.StreamSeq, Subject: strings.TrimSuffix(m.Subject(), uplink.BatchDeviceToken) + dm.Telemetry.Device, ID: dm.ID, Kind: dm.Kind}
					if filter != "" && !subjectMatch(filter, r.Subject) {
						continue
					}
					if decode != nil && decode(r.Subject) {
						r.Msg = dm
					}
					out = append(out, r)
				}
				continue
			}
			if decode != nil && u.Kind != uplink.KindCatalog && decode(u.Subject) {
				u.Msg, err = uplink.Decode(m.Subject(), h, m.Data())
				if err != nil {
					t.Errorf("upstream: message %d (%s): %v", u.StreamSeq, u.ID, err)
				}
			}
			out = append(out, u)
		}
		if n == 0 {
			empty++
			continue
		}
		if pending == 0 {
			break
		}
	}
	if uint64(len(got)) < want {
		t.Errorf("upstream: read %d messages, the stream holds %d", len(got), want)
	}
	return out
}

// seqRange is the sequences [From, To] a run of ferry committed in a lane.
type seqRange struct {
	Lane     string
	From, To uint64
}

var nextSeqRe = regexp.MustCompile(`msg="buffer opened".* next_alert_seq=(\d+) next_telemetry_seq=(\d+)`)

// runRanges returns the sequences the last run of a stopped ferry
// committed: from the "buffer opened" line of its log (where the run's ids
// start) to the lanes' last sequences in the file (ferry buffer stats). A
// run killed before its buffer opened committed nothing.
func runRanges(t *testing.T, p *proc, dataDir string) []seqRange {
	t.Helper()
	last := lastSeqs(t, dataDir)
	m := nextSeqRe.FindStringSubmatch(p.RunLog())
	if m == nil {
		return nil
	}
	var out []seqRange
	for i, lane := range []string{"alerts", "telemetry"} {
		next, _ := strconv.ParseUint(m[i+1], 10, 64)
		if last[lane] >= next {
			if last[lane]-next > 100_000_000 {
				t.Fatalf("%s: run committed %d..%d: implausible", lane, next, last[lane])
			}
			out = append(out, seqRange{Lane: lane, From: next, To: last[lane]})
		}
	}
	return out
}

// lastSeqs reads each lane's last sequence from a stopped ferry's buffer.
func lastSeqs(t *testing.T, dataDir string) map[string]uint64 {
	t.Helper()
	out, err := runFerry(t, time.Minute, "buffer", "stats", "-json", "-data-dir", dataDir)
	if err != nil {
		t.Fatalf("ferry buffer stats: %v\n%s", err, out)
	}
	var st struct {
		Lanes []struct {
			Lane    string `json:"lane"`
			LastSeq uint64 `json:"last_seq"`
		} `json:"lanes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ferry buffer stats -json: %v\n%s", err, out)
	}
	m := map[string]uint64{}
	for _, l := range st.Lanes {
		m[l.Lane] = l.LastSeq
	}
	return m
}

// laneCount is the accounting of one lane's record ids.
type laneCount struct {
	Msgs       int      // messages with an id of this lane
	Unique     int      // distinct ids
	Dups       []string // ids stored more than once
	Expected   int      // sequences the runs committed
	Missing    []uint64 // committed, and neither upstream nor buffered
	Unexpected []uint64 // upstream, but no run committed them
	Both       []uint64 // upstream and still in the buffer (will be re-sent)
}

func (c *laneCount) String() string {
	return fmt.Sprintf("%d messages, %d ids, %d duplicated, %d committed, %d missing, %d unexpected", c.Msgs, c.Unique, len(c.Dups), c.Expected, len(c.Missing), len(c.Unexpected))
}

// account checks the ids of the gateway's messages against what the runs
// committed: every committed sequence must be upstream or still in the
// buffer (pending, from a dump of the stopped ferry), no id may be stored
// twice, and nothing may be upstream that no run committed.
func account(t *testing.T, gateway string, msgs []upMsg, pending []dumpRec, runs []seqRange) map[string]*laneCount {
	t.Helper()
	out := map[string]*laneCount{"alerts": {}, "telemetry": {}}
	seen := map[string]map[uint64]int{"alerts": {}, "telemetry": {}}
	for _, m := range msgs {
		if m.Kind == uplink.KindCatalog {
			continue
		}
		lane, seq, ok := parseID(gateway, m.ID)
		if !ok {
			t.Errorf("upstream message %d on %s has id %q, not %s-<lane>-<seq>", m.StreamSeq, m.Subject, m.ID, gateway)
			continue
		}
		seen[lane][seq]++
		out[lane].Msgs++
	}
	inBuf := map[string]map[uint64]bool{"alerts": {}, "telemetry": {}}
	for _, r := range pending {
		if _, ok := inBuf[r.Lane]; ok {
			inBuf[r.Lane][r.Seq] = true
		}
	}
	committed := func(lane string, s uint64) bool {
		for _, r := range runs {
			if r.Lane == lane && s >= r.From && s <= r.To {
				return true
			}
		}
		return false
	}
	for lane, c := range out {
		for s, n := range seen[lane] {
			c.Unique++
			if n > 1 {
				c.Dups = append(c.Dups, fmt.Sprintf("%s-%s-%d×%d", gateway, lane, s, n))
			}
			if inBuf[lane][s] {
				c.Both = append(c.Both, s)
			}
			if !committed(lane, s) {
				c.Unexpected = append(c.Unexpected, s)
			}
		}
		for s := range inBuf[lane] {
			if !committed(lane, s) {
				c.Unexpected = append(c.Unexpected, s)
			}
		}
		for _, r := range runs {
			if r.Lane != lane {
				continue
			}
			for s := r.From; s <= r.To; s++ {
				c.Expected++
				if seen[lane][s] == 0 && !inBuf[lane][s] {
					c.Missing = append(c.Missing, s)
				}
			}
		}
		sort.Strings(c.Dups)
	}
	return out
}

// parseID splits "<gateway>-<lane>-<seq>".
func parseID(gateway, id string) (lane string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(id, gateway+"-")
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return "", 0, false
	}
	lane = rest[:i]
	if lane != "alerts" && lane != "telemetry" {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(rest[i+1:], 10, 64)
	return lane, seq, err == nil
}

// ranges prints sorted sequences as ranges: "5-9 12".
func ranges(seqs []uint64) string {
	if len(seqs) == 0 {
		return "none"
	}
	s := append([]uint64(nil), seqs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", s[i], s[j])
		} else {
			fmt.Fprintf(&b, "%d", s[i])
		}
		if b.Len() > 400 {
			b.WriteString(" …")
			break
		}
		i = j + 1
	}
	return b.String()
}

// countRuns returns how many contiguous runs seqs form.
func countRuns(seqs []uint64) int {
	s := append([]uint64(nil), seqs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := 0
	for i := range s {
		if i == 0 || s[i] != s[i-1]+1 {
			n++
		}
	}
	return n
}

// dumpRec is one record of `ferry buffer dump`.
type dumpRec struct {
	ID     string `json:"id"`
	Lane   string `json:"lane"`
	Seq    uint64 `json:"seq"`
	Device string `json:"device"`
	Scans  []struct {
		Samples []struct {
			Point string          `json:"point"`
			Value json.RawMessage `json:"value"`
		} `json:"samples"`
	} `json:"scans"`
}

// dumpBuffer lists the records a stopped ferry's buffer holds.
func dumpBuffer(t *testing.T, dataDir string) []dumpRec {
	t.Helper()
	out, err := runFerry(t, 2*time.Minute, "buffer", "dump", "-data-dir", dataDir)
	if err != nil {
		t.Fatalf("ferry buffer dump: %v\n%s", err, tail(out, 20))
	}
	var recs []dumpRec
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 16<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r dumpRec
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("buffer dump line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// seqNumbers collects the values of point n of device "seq": upstream and
// in pending buffer records. It returns how often each number was seen.
func seqNumbers(t *testing.T, msgs []upMsg, pending []dumpRec) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for _, m := range msgs {
		if m.Msg == nil || m.Msg.Telemetry == nil || m.Msg.Telemetry.Device != "seq" {
			continue
		}
		for _, sc := range m.Msg.Telemetry.Scans {
			for _, pt := range sc.Points {
				if pt.Name == "n" && pt.Quality == ferry.Good {
					got[pt.Value.Int64()]++
				}
			}
		}
	}
	for _, r := range pending {
		if r.Device != "seq" {
			continue
		}
		for _, sc := range r.Scans {
			for _, s := range sc.Samples {
				if s.Point != "n" {
					continue
				}
				n, err := strconv.ParseInt(string(s.Value), 10, 64)
				if err == nil {
					got[n]++
				}
			}
		}
	}
	return got
}
