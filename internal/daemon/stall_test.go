package daemon

import (
	"testing"
	"time"
)

func TestStallDetector(t *testing.T) {
	now := time.Unix(1000, 0)
	s := StallDetector{Now: func() time.Time { return now }}
	if err := s.Check(time.Second); err != nil {
		t.Fatalf("idle: %v", err)
	}
	s.Begin()
	now = now.Add(time.Second)
	if err := s.Check(time.Second); err != nil {
		t.Fatalf("a step of exactly the limit: %v", err)
	}
	now = now.Add(44 * time.Second)
	err := s.Check(30 * time.Second)
	if err == nil || err.Error() != "one step has been running for 45s (limit 30s)" {
		t.Fatalf("stuck step: %v", err)
	}
	s.End()
	now = now.Add(time.Hour) // idle for an hour: healthy
	if err := s.Check(30 * time.Second); err != nil {
		t.Fatalf("after End: %v", err)
	}
}

func TestStallDetectorNoAlloc(t *testing.T) {
	var s StallDetector
	if n := testing.AllocsPerRun(100, func() { s.Begin(); s.End() }); n != 0 {
		t.Fatalf("Begin+End allocate %v times", n)
	}
}

func BenchmarkStallDetector(b *testing.B) {
	var s StallDetector
	for b.Loop() {
		s.Begin()
		s.End()
	}
}

func TestStallDetectorRealClock(t *testing.T) {
	var s StallDetector
	s.Begin()
	time.Sleep(20 * time.Millisecond) // the slow step under test: not a wait
	if err := s.Check(time.Millisecond); err == nil {
		t.Fatal("a 20ms step passed a 1ms limit")
	}
	if err := s.Check(time.Hour); err != nil {
		t.Fatal(err)
	}
	s.End()
	if err := s.Check(time.Millisecond); err != nil {
		t.Fatal(err)
	}
}
