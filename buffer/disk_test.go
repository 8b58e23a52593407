package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-edge/ferry"
	"github.com/ferry-edge/ferry/internal/testpeer"
	"github.com/ferry-edge/ferry/internal/testutil"
)

// The disk error test runs in a child process (TestMain sees diskChildEnv)
// because it limits the size of the files the process may write
// (RLIMIT_FSIZE): past the limit every write fails with EFBIG, as writes
// fail on a full disk, without needing a small filesystem or root.

const diskChildEnv = "FERRY_BUFFER_DISK_CHILD"

func TestDiskErrorAndRecovery(t *testing.T) {
	child := testpeer.NewChild(t, os.Args[0], "-test.run=^$")
	child.Env = []string{diskChildEnv + "=" + t.TempDir()}
	child.Start()
	err := child.Wait(5 * time.Minute)
	out := child.RunLog()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "PASS disk") {
		t.Fatalf("child did not pass:\n%s", out)
	}
	t.Logf("child:\n%s", out)
}

func diskChild(dir string) int {
	if err := diskScenario(dir); err != nil {
		fmt.Println("FAIL disk:", err)
		return 1
	}
	fmt.Println("PASS disk")
	return 0
}

func diskScenario(dir string) error {
	signal.Ignore(syscall.SIGXFSZ)
	var alerts alertLog
	b, err := Open(dir, testConfig(), Options{Gateway: "gw1", Alert: alerts.add})
	if err != nil {
		return err
	}
	defer b.Close()
	tb := &fakeTB{}
	for i := 0; i < 10; i++ {
		if err := appendWait(tb, b, scan("d", t0, 10)); err != nil {
			return fmt.Errorf("before the limit: %w", err)
		}
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		return err
	}
	// No file may grow from here.
	size := b.fileSize()
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: uint64(size), Max: lim.Max}); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	var failErr error
	for i := 0; i < 2000 && failErr == nil; i++ {
		failErr = appendWait(tb, b, scan("d", t0, 200))
	}
	if failErr == nil {
		return errors.New("appends kept working past the file size limit")
	}
	fmt.Println("scan refused:", failErr)
	// bbolt flattens some errors to text ("file resize error: …").
	if !errors.Is(failErr, syscall.EFBIG) && !strings.Contains(failErr.Error(), syscall.EFBIG.Error()) {
		return fmt.Errorf("Done(%v), want EFBIG", failErr)
	}
	if err := b.Err(); err == nil {
		return errors.New("Err() is nil while commits fail")
	}
	if !slices.Contains(alerts.rules(), RuleDiskError+":raised") {
		return fmt.Errorf("alerts %v: no %s raised", alerts.rules(), RuleDiskError)
	}
	// An alert while the disk fails is kept and stored later.
	b.AppendAlert(ferry.Alert{ID: "during-failure", Rule: "oil_hot"})
	// Scans are refused quickly while the disk fails.
	if err := appendWait(tb, b, scan("d", t0, 1)); err == nil {
		return errors.New("a scan was accepted while the disk fails")
	}

	// The disk works again.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		return err
	}
	if err := testutil.Poll(30*time.Second, func() error { return appendWait(tb, b, scan("d", t0, 1)) }); err != nil {
		return fmt.Errorf("no recovery after the limit was lifted: %v", err)
	}
	if err := b.Err(); err != nil {
		return fmt.Errorf("Err() = %v after recovery", err)
	}
	if !slices.Contains(alerts.rules(), RuleDiskError+":cleared") {
		return fmt.Errorf("alerts %v: %s not cleared", alerts.rules(), RuleDiskError)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		return err
	}
	var ids []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		recs, err := b.Next(ctx, 100, 1<<20)
		cancel()
		if err != nil {
			break
		}
		for _, r := range recs {
			if r.Lane == ferry.LaneAlerts {
				a := decodeAlert(tb, r)
				ids = append(ids, a.Rule+":"+a.State.String()+":"+a.ID)
			}
		}
	}
	joined := strings.Join(ids, " ")
	for _, want := range []string{RuleDiskError + ":raised", RuleDiskError + ":cleared", "oil_hot:raised:during-failure"} {
		if !strings.Contains(joined, want) {
			return fmt.Errorf("alerts lane %v lacks %s", ids, want)
		}
	}
	if tb.failed != "" {
		return errors.New(tb.failed)
	}
	return nil
}

// fakeTB lets the test helpers run in the child, outside a test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.failed = fmt.Sprint(args...)
	panic(f.failed)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f.failed)
}
