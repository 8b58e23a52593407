package plantsim

import (
	"bytes"
	"fmt"
	"text/template"
)

// ConfigOptions shape the ferry configuration WriteConfig produces.
type ConfigOptions struct {
	GatewayID string // default "demo"
	DataDir   string // required
	HTTP      string // listen address; default 127.0.0.1:9440
	Interval  string // Modbus poll interval; default 1s
}

// Config returns a ferry configuration that reads every device of the
// plant, with the rules that its faults trip, forwarding to its NATS.
func (p *Plant) Config(o ConfigOptions) ([]byte, error) {
	if o.GatewayID == "" {
		o.GatewayID = "demo"
	}
	if o.HTTP == "" {
		o.HTTP = "127.0.0.1:9440"
	}
	if o.Interval == "" {
		o.Interval = "1s"
	}
	if o.DataDir == "" {
		return nil, fmt.Errorf("plantsim config: DataDir is required")
	}
	var b bytes.Buffer
	err := configTmpl.Execute(&b, struct {
		ConfigOptions
		P *Plant
	}{o, p})
	return b.Bytes(), err
}

var configTmpl = template.Must(template.New("cfg").Parse(`# ferry configuration for the plantsim demo plant (written by plantsim -write-config).
gateway: {id: {{.GatewayID}}, site: plantsim}
data_dir: {{.DataDir}}
log: {level: info, format: text}
devices:
{{- range .P.Presses}}
  - name: {{.Name}}
    description: simulated hydraulic press {{.N}}
    modbus: {url: "tcp://{{.Addr}}", unit: 1, interval: {{$.Interval}}, timeout: 500ms}
    points:
      - {name: oil_temp, table: holding, address: 0, type: float32, unit: degC}
      - {name: oil_temp_cdab, table: holding, address: 2, type: float32, order: CDAB, unit: degC}
      - {name: pressure, table: holding, address: 4, type: int16, scale: 0.1, unit: bar}
      - {name: speed, table: holding, address: 5, type: uint16, unit: 1/min}
      - {name: cycles, table: holding, address: 6, type: uint32}
      - {name: vibration, table: holding, address: 8, type: float32, unit: mm/s}
      - {name: overheating, table: holding, address: 10, type: bool, bit: 1}
      - {name: spare, table: holding, address: 25, type: uint16, description: inside the unmapped hole 20..29; stays Bad}
      - {name: energy, table: holding, address: 30, type: float64, unit: kWh}
      - {name: label, table: holding, address: 34, type: string, length: 8}
      - {name: motor_current, table: input, address: 0, type: uint16, scale: 0.01, unit: A}
      - {name: running, table: coil, address: 0}
      - {name: door_open, table: discrete, address: 0}
{{- range .ExtraPoints}}
      - {name: {{.Name}}, table: holding, address: {{.Address}}, type: float32}
{{- end}}
{{- end}}
  - name: boiler
    opcua: {endpoint: "{{.P.Boiler.Endpoint}}", security_policy: None, allow_insecure: true, mode: subscribe, interval: 500ms}
    points:
      - {name: pressure, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Pressure", unit: bar}
      - {name: temperature, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Temperature", unit: degC}
      - {name: running, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Running"}
      - {name: count, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Count"}
      - {name: name, node: "nsu=urn:ferry:plantsim:boiler;s=Boiler.Name"}
  - name: env
    mqtt: {broker: "tcp://{{.P.MQTT.Addr}}", topic: "sensors/hall1/env", qos: 1, format: json}
    points:
      - {name: temperature, path: temp, unit: degC}
      - {name: humidity, path: hum, unit: "%"}
rules:
  # press1 overheats once per fault cycle: raised after 3 s above 80 degC,
  # cleared below 75 (hysteresis).
  - name: oil_hot
    when: press1.oil_temp > 80
    clear: press1.oil_temp < 75
    for: 3s
    severity: critical
    message: '{{"{{"}}.Device{{"}}"}} oil temperature {{"{{"}}printf "%.1f" .Value.Float64{{"}}"}} degC ({{"{{"}}.State{{"}}"}})'
{{- if gt (len .P.Presses) 1}}
  # press2 goes off the network once per fault cycle.
  - {name: press2_silent, point: press2.oil_temp, stale: 10s, severity: warning}
{{- end}}
  # the hall sensor's humidity freezes once per fault cycle.
  - {name: humidity_stuck, point: env.humidity, flatline: {duration: 15s, epsilon: 0.001}, severity: warning}
  - {name: vibration_anomaly, point: press1.vibration, anomaly: {method: zscore, window: 2m, threshold: 6}, severity: info}
  - {name: boiler_silent, point: boiler.pressure, stale: 15s}
alerts:
  log: {enabled: true}
  mqtt: {broker: "tcp://{{.P.MQTT.Addr}}", topic: ferry/alerts}
buffer: {max_size: 256MiB, max_age: 24h}
{{- if .P.NATS}}
uplink:
  nats: {urls: ["{{.P.NATS.URL}}"], stream: FERRY}
{{- end}}
http: {listen: "{{.HTTP}}"}
`))

// EnvDevice is the `devices:` entry of the plant's MQTT sensor (JSON
// {"temp", "hum"} on sensors/hall1/env, QoS 1), for tests that write their
// own ferry configuration around the plant.
func (p *Plant) EnvDevice() string {
	return fmt.Sprintf(`  - name: env
    mqtt: {broker: "tcp://%s", topic: "sensors/hall1/env", qos: 1, format: json}
    points:
      - {name: temperature, path: temp}
      - {name: humidity, path: hum}
`, p.MQTT.Addr)
}
