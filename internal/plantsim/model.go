package plantsim

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Model computes every simulated signal from the time since start, so
// that a value is reproducible and a test can tell what a device served.
type Model struct {
	Start  time.Time
	Cycle  time.Duration
	Faults bool
	Now    func() time.Time
}

// The fault windows, as fractions of the fault cycle.
const (
	overheatRamp  = 0.08 // press1 oil temperature starts to climb
	overheatTop   = 0.20 // … reaches its top
	overheatCool  = 0.40 // … starts to cool
	overheatEnd   = 0.50 // … is back to normal
	stuckStart    = 0.30 // hall1 humidity freezes
	stuckEnd      = 0.70
	silentStart   = 0.55 // press2 stops answering
	silentEnd     = 0.75
	overheatDelta = 30.0 // °C added at the top of the ramp
)

func (m *Model) elapsed() time.Duration { return m.Now().Sub(m.Start) }

// phase returns where in the fault cycle t is, from 0 to 1.
func (m *Model) phase(t time.Duration) float64 {
	c := m.Cycle
	if c <= 0 {
		c = 2 * time.Minute
	}
	return float64(t%c) / float64(c)
}

// noise returns a deterministic pseudo-random number in [-1, 1] for a
// channel and a 100 ms time bucket.
func noise(channel uint64, t time.Duration) float64 {
	x := uint64(t/(100*time.Millisecond)) ^ channel*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x%2_000_001)/1_000_000 - 1
}

func wave(t time.Duration, period time.Duration, phase float64) float64 {
	return math.Sin(2*math.Pi*t.Seconds()/period.Seconds() + phase)
}

// OilTemp is press n's oil temperature in °C. Press 1 overheats during the
// fault cycle's overheating window.
func (m *Model) OilTemp(n int, t time.Duration) float64 {
	v := 62 + 3*wave(t, time.Minute, float64(n)) + 0.3*noise(uint64(n)*100+1, t)
	if n == 1 {
		v += m.overheat(t)
	}
	return v
}

// overheat returns the °C the overheating fault adds at t.
func (m *Model) overheat(t time.Duration) float64 {
	if !m.Faults {
		return 0
	}
	ph := m.phase(t)
	switch {
	case ph < overheatRamp || ph >= overheatEnd:
		return 0
	case ph < overheatTop:
		return overheatDelta * (ph - overheatRamp) / (overheatTop - overheatRamp)
	case ph < overheatCool:
		return overheatDelta
	default:
		return overheatDelta * (overheatEnd - ph) / (overheatEnd - overheatCool)
	}
}

// Overheating reports whether press1 is in the hot part of its cycle now.
func (m *Model) Overheating() bool {
	ph := m.phase(m.elapsed())
	return m.Faults && ph >= overheatTop && ph < overheatCool
}

// Pressure is press n's hydraulic pressure in bar.
func (m *Model) Pressure(n int, t time.Duration) float64 {
	return 150 + 10*wave(t, 45*time.Second, float64(n)) + noise(uint64(n)*100+2, t)
}

// Vibration is press n's vibration velocity in mm/s.
func (m *Model) Vibration(n int, t time.Duration) float64 {
	return 2 + 0.2*noise(uint64(n)*100+3, t)
}

// Cycles is press n's stroke counter.
func (m *Model) Cycles(n int, t time.Duration) uint32 {
	return uint32(t.Seconds() * 0.5 * float64(n))
}

// MotorCurrent is press n's motor current in A.
func (m *Model) MotorCurrent(n int, t time.Duration) float64 {
	return 12.5 + 0.5*noise(uint64(n)*100+4, t)
}

// Extra is press n's k-th load-test signal.
func (m *Model) Extra(n, k int, t time.Duration) float64 {
	return 50 + 10*wave(t, 30*time.Second, float64(n*1000+k))
}

// Press2Silent reports whether press2 is in its silent window now.
func (m *Model) Press2Silent() bool {
	ph := m.phase(m.elapsed())
	return m.Faults && ph >= silentStart && ph < silentEnd
}

// BoilerPressure is the boiler's steam pressure in bar.
func (m *Model) BoilerPressure(t time.Duration) float64 {
	return 8.5 + 0.3*wave(t, 40*time.Second, 0) + 0.05*noise(900, t)
}

// BoilerTemperature is the boiler's water temperature in °C.
func (m *Model) BoilerTemperature(t time.Duration) float32 {
	return float32(175 + 2*wave(t, 90*time.Second, 1))
}

// EnvTemp and EnvHumidity are hall sensor i's readings. Sensor 1's
// humidity freezes during the stuck-sensor window.
func (m *Model) EnvTemp(i int, t time.Duration) float64 {
	return round(21+1.5*wave(t, 5*time.Minute, float64(i))+0.2*noise(uint64(i)*100+50, t), 2)
}

// EnvHumidity is hall sensor i's relative humidity in %.
func (m *Model) EnvHumidity(i int, t time.Duration) float64 {
	if i == 1 && m.Faults {
		c := m.Cycle
		if ph := m.phase(t); ph >= stuckStart && ph < stuckEnd {
			// Frozen at the value it had when it got stuck.
			t = t - t%c + time.Duration(stuckStart*float64(c))
		}
	}
	return round(45+5*wave(t, 3*time.Minute, float64(i))+0.5*noise(uint64(i)*100+51, t), 2)
}

// EnvTopic is sensor i's topic.
func EnvTopic(i int) string { return fmt.Sprintf("sensors/hall%d/env", i) }

// EnvPayload returns sensor i's topic and JSON payload now.
func (m *Model) EnvPayload(i int) (string, []byte) {
	now := m.Now()
	t := now.Sub(m.Start)
	b, _ := json.Marshal(struct {
		Temp float64 `json:"temp"`
		Hum  float64 `json:"hum"`
		TS   string  `json:"ts"`
	}{m.EnvTemp(i, t), m.EnvHumidity(i, t), now.UTC().Format(time.RFC3339Nano)})
	return EnvTopic(i), b
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
