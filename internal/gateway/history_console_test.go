package gateway

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-edge/ferry/internal/testutil"
)

// TestDevicePageAndSearch: the console's device page gets the running
// Modbus driver's request plan for a press (and none for the OPC UA
// boiler), and its search box finds the configured points.
func TestDevicePageAndSearch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a plant and a daemon")
	}
	p := startPlant(t, 1)
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	testutil.WriteFile(t, path, plantConfig{DataDir: filepath.Join(dir, "data"), Boiler: true}.yaml(p))
	h := startDaemon(t, path)

	type device struct {
		Device    string  `json:"device"`
		State     string  `json:"state"`
		PollMS    float64 `json:"poll_ms"`
		LastError string  `json:"last_error"`
		Plan      *struct {
			IntervalMS float64  `json:"interval_ms"`
			Requests   []string `json:"requests"`
		} `json:"plan"`
	}
	var press device
	waitFor(t, 20*time.Second, "press1 connected, with a poll latency", func() bool {
		code, b := h.get("/api/devices/press1")
		return code == http.StatusOK && json.Unmarshal([]byte(b), &press) == nil && press.State == "connected" && press.PollMS > 0
	})
	// oil_temp, speed and cycles are holding registers next to each
	// other; running is a coil: two requests.
	if press.Plan == nil || press.Plan.IntervalMS != 100 || len(press.Plan.Requests) != 2 ||
		!strings.Contains(strings.Join(press.Plan.Requests, "\n"), "unit 1 holding") || !strings.Contains(strings.Join(press.Plan.Requests, "\n"), "unit 1 coil") {
		t.Errorf("press1's plan: %+v", press.Plan)
	}
	code, b := h.get("/api/devices/boiler")
	var boiler device
	if code != http.StatusOK || json.Unmarshal([]byte(b), &boiler) != nil || boiler.Plan != nil {
		t.Errorf("boiler: %d %s (want no plan)", code, b)
	}
	if code, _ := h.get("/api/devices/nope"); code != http.StatusNotFound {
		t.Errorf("unknown device: %d", code)
	}

	var res struct {
		Points []struct{ Device, Point string } `json:"points"`
		Total  int                              `json:"total"`
	}
	code, b = h.get("/api/search?q=press1+temp")
	if code != http.StatusOK || json.Unmarshal([]byte(b), &res) != nil || res.Total != 1 || res.Points[0].Point != "oil_temp" {
		t.Errorf("search press1 temp: %d %s", code, b)
	}
}
