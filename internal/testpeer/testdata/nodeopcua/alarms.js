// A node-opcua server with Alarms & Conditions for ferry's event tests
// (internal/testpeer NodeOPCUAAlarms). Like server.js it reads a JSON
// description from the file named by its first argument, listens on
// 127.0.0.1 (port 0 = any free port) and prints one JSON line once it
// listens:
//   {"port": 4840, "endpoint": "opc.tcp://127.0.0.1:4840", "namespace_uri": "...", "namespace": 2}
// Then it reads commands from stdin, one JSON object a line, and answers
// each with one JSON line:
//   {"set": "Name", "value": true}   set a variable (an alarm's input): {"ok": "Name"}
//   {"state": "Alarm"}               an alarm's current branch:
//                                    {"ok": "Alarm", "active": true, "acked": false, "retain": true,
//                                     "comment": "...", "acks": 1}
//   {"event": {"message": "...", "severity": 300}}
//                                    raise a plain BaseEventType event on the Server object: {"ok": "event"}
// It exits when stdin closes, on SIGTERM, or on SIGINT.
//
// The description:
//   {
//     "port": 0,
//     "namespace_uri": "urn:ferry:test",
//     "nodes": [{"name": "Overheat", "type": "Boolean", "value": false}],
//     "alarms": [
//       {"name": "OverheatAlarm", "input": "Overheat", "severity": 800, "message": "oven over temperature"}
//     ]
//   }
// Every alarm is an OffNormalAlarm on a Boolean input variable (normal:
// false), node id ns=<namespace>;s=<name> (its ConditionId), condition
// source the folder "Machine", whose events reach the Server object (the
// default notifier). The alarm is active while its input is true. The
// Alarms & Conditions services (ConditionRefresh, Acknowledge) are
// installed. A restart keeps nothing: the server starts with the values
// of the description.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const readline = require("readline");
const opcua = require("node-opcua");

const desc = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

function fail(msg) {
  process.stderr.write("nodeopcua alarms: " + msg + "\n");
  process.exit(2);
}

function variant(type, v) {
  const dt = opcua.DataType[type];
  if (dt === undefined) fail("unknown type " + type);
  return new opcua.Variant({ dataType: dt, value: v });
}

function answer(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function main() {
  const pkiDir = desc.pki || fs.mkdtempSync(path.join(os.tmpdir(), "nodeopcua-pki-"));
  const serverCertificateManager = new opcua.OPCUACertificateManager({
    rootFolder: path.join(pkiDir, "server"),
    automaticallyAcceptUnknownCertificate: true,
  });
  await serverCertificateManager.initialize();

  const server = new opcua.OPCUAServer({
    port: desc.port || 0,
    hostname: "127.0.0.1",
    alternateHostname: ["127.0.0.1"],
    securityPolicies: [opcua.SecurityPolicy.None],
    securityModes: [opcua.MessageSecurityMode.None],
    allowAnonymous: true,
    serverCertificateManager,
    buildInfo: { productName: "ferry-nodeopcua-alarms-testpeer" },
  });
  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  addressSpace.installAlarmsAndConditionsService();
  const serverObject = addressSpace.rootFolder.objects.server;
  const nsURI = desc.namespace_uri || "urn:ferry:test";
  const ns = addressSpace.registerNamespace(nsURI);
  const machine = ns.addObject({
    browseName: "Machine",
    nodeId: "s=Machine",
    organizedBy: addressSpace.rootFolder.objects,
    eventSourceOf: serverObject,
    eventNotifier: 1, // SubscribeToEvents
  });
  const vars = new Map();
  for (const n of desc.nodes || []) {
    const type = n.type || "Double";
    const v = ns.addVariable({
      componentOf: machine,
      browseName: n.name,
      nodeId: "s=" + n.name,
      dataType: type,
      accessLevel: "CurrentRead | CurrentWrite",
      userAccessLevel: "CurrentRead | CurrentWrite",
      eventSourceOf: machine,
    });
    v.setValueFromSource(variant(type, n.value === undefined ? (type === "Boolean" ? false : 0) : n.value), opcua.StatusCodes.Good);
    vars.set(n.name, { v, type });
  }

  const alarms = new Map();
  for (const a of desc.alarms || []) {
    const input = vars.get(a.input);
    if (!input || input.type !== "Boolean") fail("alarm " + a.name + ": input " + a.input + " is not a Boolean node");
    const normal = ns.addVariable({
      componentOf: machine,
      browseName: a.name + "Normal",
      nodeId: "s=" + a.name + "Normal",
      dataType: "Boolean",
      value: { dataType: opcua.DataType.Boolean, value: false },
    });
    const alarm = ns.instantiateOffNormalAlarm({
      browseName: a.name,
      nodeId: "s=" + a.name,
      componentOf: machine,
      conditionSource: machine,
      conditionName: a.name,
      inputNode: input.v,
      normalState: normal,
    });
    const severity = a.severity || 500;
    const message = a.message || a.name;
    alarm.calculateConditionInfo = (stateName, isActive) => new opcua.ConditionInfo({
      message: isActive ? message : message + ": back to normal",
      quality: opcua.StatusCodes.Good,
      retain: true,
      severity: isActive ? severity : 0,
    });
    const st = { alarm, acks: 0, comment: "" };
    alarm.on("acknowledged", (eventId, comment) => {
      st.acks++;
      st.comment = comment && comment.text ? comment.text : String(comment || "");
    });
    alarms.set(a.name, st);
    // An input that starts true (a restart in the middle of an alarm):
    // the alarm is active from the start.
    alarm.onInputDataValueChange(input.v.readValue());
  }

  await server.start();
  const port = server.endpoints[0].port;
  answer({ port, endpoint: "opc.tcp://127.0.0.1:" + port, namespace_uri: nsURI, namespace: ns.index });

  let stopping = false;
  async function stop() {
    if (stopping) return;
    stopping = true;
    await server.shutdown(0);
    process.exit(0);
  }
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);

  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      answer({ error: "bad command: " + e.message });
      return;
    }
    try {
      if (cmd.set !== undefined) {
        const e = vars.get(cmd.set);
        if (!e) return answer({ error: "no node " + cmd.set });
        e.v.setValueFromSource(variant(e.type, cmd.value), opcua.StatusCodes.Good);
        return answer({ ok: cmd.set });
      }
      if (cmd.state !== undefined) {
        const st = alarms.get(cmd.state);
        if (!st) return answer({ error: "no alarm " + cmd.state });
        const b = st.alarm.currentBranch();
        return answer({
          ok: cmd.state,
          active: b.getActiveState(),
          acked: b.getAckedState(),
          retain: b.getRetain(),
          comment: st.comment,
          acks: st.acks,
        });
      }
      if (cmd.event !== undefined) {
        const ev = cmd.event;
        serverObject.raiseEvent("BaseEventType", {
          message: { dataType: opcua.DataType.LocalizedText, value: { text: ev.message || "" } },
          severity: { dataType: opcua.DataType.UInt16, value: ev.severity || 100 },
          sourceName: { dataType: opcua.DataType.String, value: ev.source || "Machine" },
          sourceNode: { dataType: opcua.DataType.NodeId, value: machine.nodeId },
        });
        return answer({ ok: "event" });
      }
      answer({ error: "unknown command" });
    } catch (e) {
      answer({ error: String(e && e.message ? e.message : e) });
    }
  });
  rl.on("close", stop);
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
