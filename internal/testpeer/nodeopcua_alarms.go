package testpeer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// NodeOPCUAAlarm is one alarm condition of the alarms server
// (testdata/nodeopcua/alarms.js): an OffNormalAlarm, node id
// ns=<namespace>;s=<Name> (its ConditionId), active while the Boolean
// variable Input is true. Its events reach the Server object.
type NodeOPCUAAlarm struct {
	Name  string `json:"name"`
	Input string `json:"input"`
	// Severity is the condition's severity while active (1..1000,
	// default 500); Message its message (default Name).
	Severity int    `json:"severity,omitempty"`
	Message  string `json:"message,omitempty"`
}

// AlarmState is an alarm's current branch as the server holds it.
type AlarmState struct {
	Active  bool   `json:"active"`
	Acked   bool   `json:"acked"`
	Retain  bool   `json:"retain"`
	Comment string `json:"comment"` // of the last Acknowledge
	Acks    int    `json:"acks"`    // Acknowledge calls accepted since the start
}

// StartNodeOPCUAAlarms starts the alarms server (alarms.js) with cfg's
// variables and alarms, security None only. It skips the test when node
// is absent; it is stopped when the test ends.
func StartNodeOPCUAAlarms(t testing.TB, cfg NodeOPCUAConfig) *NodeOPCUA {
	t.Helper()
	cfg.Script = "alarms.js"
	cfg.Security = []string{"None"}
	return StartNodeOPCUA(t, cfg)
}

// command sends one command line and returns the server's answer.
func (s *NodeOPCUA) command(cmd any) (string, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	in, lines, done := s.stdin, s.lines, s.done
	s.mu.Unlock()
	if in == nil {
		return "", errors.New("node-opcua server is stopped")
	}
	if _, err := in.Write(append(b, '\n')); err != nil {
		return "", err
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	select {
	case l := <-lines:
		if !strings.HasPrefix(l, `{"ok"`) {
			return "", fmt.Errorf("node-opcua server: %s", l)
		}
		return l, nil
	case <-done:
		return "", errors.New("node-opcua server exited")
	case <-timeout.C:
		return "", errors.New("node-opcua server did not answer within 10s")
	}
}

// Alarm returns the current branch of the alarm name as the server holds
// it: the AckedState an acknowledge from ferry must have set.
func (s *NodeOPCUA) Alarm(name string) (AlarmState, error) {
	l, err := s.command(map[string]string{"state": name})
	if err != nil {
		return AlarmState{}, err
	}
	var st AlarmState
	if err := json.Unmarshal([]byte(l), &st); err != nil {
		return AlarmState{}, fmt.Errorf("node-opcua server said %q: %w", l, err)
	}
	return st, nil
}

// RaiseEvent raises a plain BaseEventType event on the Server object.
func (s *NodeOPCUA) RaiseEvent(message string, severity int) error {
	_, err := s.command(map[string]any{"event": map[string]any{"message": message, "severity": severity}})
	return err
}

// SetStart changes the value variable name starts with at the next
// (re)start, as a machine whose state changed while it was off.
func (s *NodeOPCUA) SetStart(name string, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.cfg.Nodes {
		if s.cfg.Nodes[i].Name == name {
			s.cfg.Nodes[i].Value = v
			return
		}
	}
	s.t.Fatalf("node-opcua: no variable %s", name)
}

// Start starts a stopped server again on the same port (Restart without
// the stop), retrying for a while if the port is still held.
func (s *NodeOPCUA) Start() error {
	var err error
	for range 20 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond) // retry pacing while the old socket goes
	}
	return err
}
