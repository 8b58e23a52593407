// Decodes Sparkplug B payloads with Eclipse Tahu's JavaScript library
// (sparkplug-payload), for ferry's interop test: one JSON line in on
// stdin per payload ({"topic": ..., "hex": ...}), one JSON line out with
// the decoded payload (64-bit numbers as decimal strings).
'use strict';
const readline = require('readline');
const sparkplug = require('sparkplug-payload').get('spBv1.0');

function plain(v) {
  if (v === null || v === undefined) return v;
  if (typeof v === 'object' && typeof v.toString === 'function' && v.low !== undefined && v.high !== undefined) {
    return v.toString(); // a Long
  }
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'object') {
    const out = {};
    for (const k of Object.keys(v)) out[k] = plain(v[k]);
    return out;
  }
  return v;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const m = JSON.parse(line);
  let out;
  try {
    out = { topic: m.topic, payload: plain(sparkplug.decodePayload(Buffer.from(m.hex, 'hex'))) };
  } catch (e) {
    out = { topic: m.topic, error: String(e) };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
});
