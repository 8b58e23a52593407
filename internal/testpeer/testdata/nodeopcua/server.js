// A node-opcua server for ferry's tests and soak (internal/testpeer
// NodeOPCUA). It reads a JSON description of its variables from the file
// named by its first argument, listens on 127.0.0.1 (port 0 = any free
// port), and prints one JSON line on stdout once it listens:
//   {"port": 4840, "endpoint": "opc.tcp://127.0.0.1:4840", "namespace_uri": "...", "namespace": 2}
// Then it reads commands from stdin, one JSON object a line:
//   {"set": "Name", "value": 12}   set a variable's value (answers {"ok": "Name"})
//   {"user": "op", "password": "pw"}  add a user or change its password (answers {"ok": "op"}; needs "users")
// It exits when stdin closes, on SIGTERM, or on SIGINT.
//
// The description:
//   {
//     "port": 0,                        // 0: any free port
//     "namespace_uri": "urn:ferry:test", // the variables' namespace
//     "security": ["None", "Basic256Sha256"], // policies offered (Sign and SignAndEncrypt for the secure ones)
//     "pki": "/abs/dir",                // server PKI folder (own certificate, trusted clients); default: a temp dir
//     "trust_all": true,                // accept any client certificate (default true)
//     "users": [{"username": "op", "password": "pw"}], // user name logins accepted (absent or null: node-opcua's default user manager)
//     "no_anonymous": true,             // refuse anonymous logins (default false: accepted)
//     "nodes": [
//       {"name": "Quiet", "type": "Double", "value": 1},
//       {"name": "Fast", "type": "Double", "value": 0, "every_ms": 100, "step": 1},
//       {"name": "Recipe", "type": "String", "value": "R-17"}
//     ]
//   }
// Node ids are ns=<namespace>;s=<name>. A node with every_ms changes by
// step (default 1) that often; without it the value never changes unless
// set. Types: Double, Float, Int32, UInt32, Int16, UInt16, Int64, Boolean, String.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const readline = require("readline");
const opcua = require("node-opcua");

const desc = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

const policies = {
  None: opcua.SecurityPolicy.None,
  Basic256Sha256: opcua.SecurityPolicy.Basic256Sha256,
  Aes128_Sha256_RsaOaep: opcua.SecurityPolicy.Aes128_Sha256_RsaOaep,
  Aes256_Sha256_RsaPss: opcua.SecurityPolicy.Aes256_Sha256_RsaPss,
};

function fail(msg) {
  process.stderr.write("nodeopcua: " + msg + "\n");
  process.exit(2);
}

function variant(type, v) {
  const dt = opcua.DataType[type];
  if (dt === undefined) fail("unknown type " + type);
  if (type === "Int64" || type === "UInt64") {
    return new opcua.Variant({ dataType: dt, value: [0, Number(v)] });
  }
  return new opcua.Variant({ dataType: dt, value: v });
}

async function main() {
  const security = desc.security || ["None"];
  const securityPolicies = [];
  const securityModes = new Set();
  for (const p of security) {
    if (!(p in policies)) fail("unknown security policy " + p);
    securityPolicies.push(policies[p]);
    if (p === "None") {
      securityModes.add(opcua.MessageSecurityMode.None);
    } else {
      securityModes.add(opcua.MessageSecurityMode.Sign);
      securityModes.add(opcua.MessageSecurityMode.SignAndEncrypt);
    }
  }
  const pkiDir = desc.pki || fs.mkdtempSync(path.join(os.tmpdir(), "nodeopcua-pki-"));
  const serverCertificateManager = new opcua.OPCUACertificateManager({
    rootFolder: path.join(pkiDir, "server"),
    automaticallyAcceptUnknownCertificate: desc.trust_all !== false,
  });
  await serverCertificateManager.initialize();
  const userCertificateManager = new opcua.OPCUACertificateManager({
    rootFolder: path.join(pkiDir, "user"),
    automaticallyAcceptUnknownCertificate: desc.trust_all !== false,
  });
  await userCertificateManager.initialize();

  // User name logins: a wrong password or an unknown user is refused
  // with BadUserAccessDenied. The map changes with the "user" command.
  const users = new Map();
  for (const u of desc.users || []) users.set(u.username, u.password);

  const server = new opcua.OPCUAServer({
    port: desc.port || 0,
    hostname: "127.0.0.1",
    alternateHostname: ["127.0.0.1"],
    securityPolicies,
    securityModes: [...securityModes],
    allowAnonymous: desc.no_anonymous !== true,
    // Without "users", node-opcua's own default (as before).
    userManager: desc.users == null ? undefined : {
      isValidUser: (username, password) => users.has(username) && users.get(username) === password,
    },
    serverCertificateManager,
    userCertificateManager,
    buildInfo: { productName: "ferry-nodeopcua-testpeer" },
  });
  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  const nsURI = desc.namespace_uri || "urn:ferry:test";
  const ns = addressSpace.registerNamespace(nsURI);
  const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Ferry" });
  const vars = new Map();
  const timers = [];
  for (const n of desc.nodes || []) {
    const type = n.type || "Double";
    const state = { type, value: n.value === undefined ? 0 : n.value };
    const v = ns.addVariable({
      componentOf: folder,
      browseName: n.name,
      nodeId: "s=" + n.name,
      dataType: type,
      accessLevel: "CurrentRead | CurrentWrite",
      userAccessLevel: "CurrentRead | CurrentWrite",
    });
    v.setValueFromSource(variant(type, state.value), opcua.StatusCodes.Good);
    vars.set(n.name, { v, state });
    if (n.every_ms) {
      const step = n.step === undefined ? 1 : n.step;
      timers.push(setInterval(() => {
        state.value = type === "Boolean" ? !state.value : state.value + step;
        v.setValueFromSource(variant(type, state.value), opcua.StatusCodes.Good);
      }, n.every_ms));
    }
  }

  await server.start();
  const port = server.endpoints[0].port;
  process.stdout.write(JSON.stringify({
    port,
    endpoint: "opc.tcp://127.0.0.1:" + port,
    namespace_uri: nsURI,
    namespace: ns.index,
  }) + "\n");

  let stopping = false;
  async function stop() {
    if (stopping) return;
    stopping = true;
    timers.forEach(clearInterval);
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
      process.stdout.write(JSON.stringify({ error: "bad command: " + e.message }) + "\n");
      return;
    }
    if (cmd.set !== undefined) {
      const e = vars.get(cmd.set);
      if (!e) {
        process.stdout.write(JSON.stringify({ error: "no node " + cmd.set }) + "\n");
        return;
      }
      e.state.value = cmd.value;
      e.v.setValueFromSource(variant(e.state.type, cmd.value), opcua.StatusCodes.Good);
      process.stdout.write(JSON.stringify({ ok: cmd.set }) + "\n");
      return;
    }
    if (cmd.user !== undefined) {
      if (desc.users == null) {
        process.stdout.write(JSON.stringify({ error: "no users: start the server with \"users\"" }) + "\n");
        return;
      }
      users.set(cmd.user, cmd.password);
      process.stdout.write(JSON.stringify({ ok: cmd.user }) + "\n");
      return;
    }
    process.stdout.write(JSON.stringify({ error: "unknown command" }) + "\n");
  });
  rl.on("close", stop);
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
