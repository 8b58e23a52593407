package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-edge/ferry/internal/gateway"
	"github.com/ferry-edge/ferry/uplink"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// cmdTail prints what arrives in ferry's streams: the upstream view of a
// gateway, for the demo and for users checking their cloud side.
func cmdTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tail", stderr)
	cfgPath := fs.String("config", "", "ferry configuration to take the servers, credentials, streams and subjects from")
	url := fs.String("url", "", "NATS server URL(s), comma-separated (instead of, or overriding, -config)")
	creds := fs.String("creds", "", "NATS credentials file (overrides -config)")
	stream := fs.String("stream", "", "stream to read (default: the configured stream, or FERRY)")
	var subjects stringList
	fs.Var(&subjects, "subject", "subject filter, repeatable (default: the gateway's subjects with -config, else ferry.>)")
	all := fs.Bool("all", false, "start from the first message in the stream instead of new ones")
	since := fs.Duration("since", 0, "start from messages stored this long ago (e.g. 10m)")
	count := fs.Int("n", 0, "exit after this many messages (0: run until interrupted)")
	compact := fs.Bool("compact", false, "print a readable line per scan, alert or catalog instead of JSON")
	var points stringList
	fs.Var(&points, "point", "with -compact, print only this device.point (repeatable; alerts and catalogs are always printed)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferry tail [-config FILE | -url URL] [flags]\n\nPrints the messages ferry publishes as they arrive in the stream(s): one JSON\nobject per line (subject, id, kind, versions, and the message as data), or with\n-compact one readable line per scan, alert or catalog.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected argument %q", fs.Arg(0))
	}
	if *all && *since > 0 {
		return usageError("-all and -since exclude each other")
	}
	if *count < 0 {
		return usageError("-n %d: give a number of messages, or 0 to run until interrupted", *count)
	}

	var nc uplink.NATSConfig
	streams := []string{}
	switch {
	case *cfgPath != "":
		c, err := gateway.LoadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return &exitError{code: 1, err: fmt.Errorf("%s is not valid", *cfgPath)}
		}
		ctl := c.Uplink.Control() // the first NATS upstream
		if ctl == nil {
			return &exitError{code: 1, err: fmt.Errorf("%s has no NATS uplink", *cfgPath)}
		}
		nc = *ctl
		if len(subjects) == 0 {
			s, err := nc.SubjectsFor(c.Gateway.Site, c.Gateway.ID)
			if err != nil {
				return err
			}
			subjects = s.Filters()
		}
		cat := nc.CatalogStream
		if cat == "" {
			cat = nc.Stream + "_CATALOG"
		}
		streams = append(streams, nc.Stream, cat)
	case *url != "":
		nc = uplink.DefaultNATSConfig()
		streams = append(streams, uplink.DefaultStream, uplink.DefaultStream+"_CATALOG")
	default:
		return usageError("give -config FILE or -url URL")
	}
	if *url != "" {
		nc.URLs = strings.Split(*url, ",")
	}
	if *creds != "" {
		nc.Creds, nc.NKey, nc.Token, nc.User, nc.Password = *creds, "", "", "", ""
	}
	if *stream != "" {
		streams = []string{*stream}
	}
	if len(subjects) == 0 {
		subjects = []string{"ferry.>"}
	}

	conn, err := uplink.Connect(nc, "ferry tail")
	if err != nil {
		return err
	}
	defer conn.Close()
	js, err := uplink.NewJetStream(conn, nc) // the uplink's domain or api_prefix too
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	msgs := make(chan jetstream.Msg, 256)
	var cctxs []jetstream.ConsumeContext
	defer func() {
		for _, c := range cctxs {
			c.Stop()
		}
	}()
	opened := 0
	for i, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) && i > 0 && *stream == "" {
				continue // no separate catalog stream
			}
			return fmt.Errorf("stream %s: %w", name, err)
		}
		var filters []string
		for _, f := range subjects {
			if slices.ContainsFunc(s.CachedInfo().Config.Subjects, func(ss string) bool { return subjectsOverlap(f, ss) }) {
				filters = append(filters, f)
			}
		}
		if len(filters) == 0 {
			continue
		}
		occ := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverNewPolicy}
		switch {
		case *all:
			occ.DeliverPolicy = jetstream.DeliverAllPolicy
		case *since > 0:
			t := time.Now().Add(-*since)
			occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		}
		cons, err := s.OrderedConsumer(ctx, occ)
		if err != nil {
			return fmt.Errorf("consumer on %s for %v: %w", name, filters, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case msgs <- m:
			case <-ctx.Done():
			}
		})
		if err != nil {
			return fmt.Errorf("consume %s: %w", name, err)
		}
		cctxs = append(cctxs, cc)
		opened++
	}
	if opened == 0 {
		return fmt.Errorf("no stream of %v captures %v", streams, subjects)
	}

	for n := 0; *count == 0 || n < *count; n++ {
		var m jetstream.Msg
		select {
		case <-ctx.Done():
			return nil
		case m = <-msgs:
		}
		if err := printMsg(stdout, m, *compact, points); err != nil {
			return err
		}
	}
	return nil
}

// subjectsOverlap reports whether some subject matches both a and b.
func subjectsOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != "*" && bt[i] != "*" && at[i] != bt[i] {
			return false
		}
	}
	return len(at) == len(bt)
}

// keepPoints keeps, in a telemetry message, only the samples of the
// device.point names given; it reports whether anything is left to print.
func keepPoints(m *uplink.Message, points []string) bool {
	t := m.Telemetry
	if t == nil {
		return true
	}
	scans := t.Scans[:0]
	for _, sc := range t.Scans {
		kept := sc.Points[:0]
		for _, p := range sc.Points {
			if slices.Contains(points, t.Device+"."+p.Name) {
				kept = append(kept, p)
			}
		}
		if len(kept) > 0 {
			sc.Points = kept
			scans = append(scans, sc)
		}
	}
	t.Scans = scans
	return len(scans) > 0
}

// tailLine is what tail prints per message without -compact (per record
// of a batch, with the batch's id in batch).
type tailLine struct {
	Stream        string          `json:"stream"`
	Seq           uint64          `json:"seq"`
	Stored        time.Time       `json:"stored"`
	Subject       string          `json:"subject"`
	ID            string          `json:"id,omitempty"`
	Kind          string          `json:"kind,omitempty"`
	FerryVersion  string          `json:"ferry_version,omitempty"`
	ConfigVersion string          `json:"config_version,omitempty"`
	Batch         string          `json:"batch,omitempty"`
	Data          json.RawMessage `json:"data"`
	Error         string          `json:"error,omitempty"`
}

func printMsg(w io.Writer, m jetstream.Msg, compact bool, points []string) error {
	if m.Headers().Get(uplink.HeaderKind) == uplink.KindBatch {
		if all, err := uplink.DecodeAll(m.Subject(), m.Headers(), m.Data()); err == nil {
			return printBatch(w, m, all, compact, points)
		}
		// else printed below, with the error
	}
	dm, err := uplink.Decode(m.Subject(), m.Headers(), m.Data())
	if compact {
		if err != nil {
			_, werr := fmt.Fprintf(w, "%s %s: %v\n", m.Subject(), m.Headers().Get(nats.MsgIdHdr), err)
			return werr
		}
		if len(points) > 0 && !keepPoints(dm, points) {
			return nil
		}
		_, werr := io.WriteString(w, dm.Compact())
		return werr
	}
	l := tailLine{Subject: m.Subject(), ID: m.Headers().Get(nats.MsgIdHdr), Kind: m.Headers().Get(uplink.HeaderKind),
		FerryVersion: m.Headers().Get(uplink.HeaderVersion), ConfigVersion: m.Headers().Get(uplink.HeaderConfigVersion)}
	if md, err := m.Metadata(); err == nil {
		l.Stream, l.Seq, l.Stored = md.Stream, md.Sequence.Stream, md.Timestamp.UTC()
	}
	if json.Valid(m.Data()) {
		l.Data = m.Data()
	} else {
		l.Data, _ = json.Marshal(string(m.Data()))
	}
	if err != nil {
		l.Error = err.Error()
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// printBatch prints each record of a batch as if it had come alone.
func printBatch(w io.Writer, m jetstream.Msg, all []*uplink.Message, compact bool, points []string) error {
	for _, dm := range all {
		if len(points) > 0 && !keepPoints(dm, points) {
			continue
		}
		if compact {
			if _, err := io.WriteString(w, dm.Compact()); err != nil {
				return err
			}
			continue
		}
		l := tailLine{Subject: m.Subject(), ID: dm.ID, Kind: dm.Kind, FerryVersion: dm.FerryVersion, ConfigVersion: dm.ConfigVersion, Batch: dm.BatchID}
		if md, err := m.Metadata(); err == nil {
			l.Stream, l.Seq, l.Stored = md.Stream, md.Sequence.Stream, md.Timestamp.UTC()
		}
		data, err := json.Marshal(dm.Telemetry)
		if err != nil {
			return err
		}
		l.Data = data
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}
