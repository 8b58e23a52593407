// ferry console: plain JavaScript, no framework, no build step. It reads
// the JSON API of the gateway (see internal/web/README.md), polls the
// page on screen every two seconds and follows alerts live over
// Server-Sent Events. Every value is put in the page with textContent,
// never as HTML.
'use strict';

const POLL_MS = 2000;
const HEALTH_MS = 5000;
const VIEWS = ['devices', 'points', 'trend', 'alerts', 'history', 'device', 'health'];

const state = {
  view: 'devices',
  device: '',          // the points page's device ('' = all)
  devices: [],
  active: new Map(),   // alert id -> alert
  history: [],
  health: null,
  stream: null,
  streamOpen: false,
  lastHealth: 0,
  alertsDrawn: 0,
  writing: null,       // the point the write dialog is for
};

const $ = (id) => document.getElementById(id);

// h builds an element: h('td', {class: 'x', 'data-label': 'Y'}, child, 'text', …).
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function table(cls, headers, rows) {
  return h('table', {class: cls},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, rows));
}

// td with the label shown on narrow screens. Several children are wrapped
// in one span, so that a narrow screen shows the label left and the
// content right.
function cell(label, attrs, ...kids) {
  kids = kids.flat().filter((k) => k !== null && k !== undefined && k !== false);
  const content = kids.length > 1 ? [h('span', {class: 'cell'}, ...kids)] : kids;
  return h('td', Object.assign({'data-label': label}, attrs), ...content);
}

function replace(id, node) {
  const el = $(id);
  el.replaceChildren(node);
}

// ---- formatting -------------------------------------------------------

const zero = (iso) => !iso || iso.startsWith('0001-');

function fmtTime(iso) {
  if (zero(iso)) return '—';
  const d = new Date(iso);
  const now = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60 ? (s % 60) + ' s' : ''}`.trim();
  const hh = Math.floor(m / 60);
  if (hh < 48) return `${hh} h ${m % 60} min`;
  return `${Math.floor(hh / 24)} d ${hh % 24} h`;
}

function ago(iso) {
  if (zero(iso)) return '';
  return fmtAge((Date.now() - new Date(iso).getTime()) / 1000) + ' ago';
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
}

const nf = new Intl.NumberFormat(undefined, {maximumFractionDigits: 3});
const nf1 = new Intl.NumberFormat(undefined, {maximumFractionDigits: 1});

function fmtValue(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return Math.abs(v) >= 1e15 ? v.toExponential(4) : nf.format(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return String(v);
}

function fmtRate(r, unit) {
  return r === null || r === undefined ? '…' : `${nf1.format(r)} ${unit}`;
}

function fmtMS(ms) {
  if (ms === null || ms === undefined) return '…';
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${nf1.format(ms)} ms`;
}

const pill = (cls, text) => h('span', {class: 'pill ' + cls.replace(/\s+/g, '-')}, text);

function toast(msg) {
  const t = h('div', {class: 'toast', role: 'status'}, msg);
  document.body.append(t);
  setTimeout(() => t.remove(), 5000);
}

// ---- data -------------------------------------------------------------

async function getJSON(url) {
  const r = await fetch(url, {cache: 'no-store', credentials: 'same-origin'});
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(`${url}: ${msg}`);
  }
  return r.json();
}

function setOnline(ok, err) {
  const b = $('banner');
  if (ok) { b.hidden = true; return; }
  b.textContent = `ferry is not answering (${err && err.message ? err.message : err}); retrying…`;
  b.hidden = false;
}

// ---- devices ----------------------------------------------------------

function stateCell(d) {
  const p = pill(d.state, d.state);
  const since = d.state !== 'not running' && !zero(d.since);
  return cell('State', {class: 'state'}, p,
    since ? h('span', {class: 'reason'}, 'since ', fmtTime(d.since), ' (', ago(d.since), ')') : null,
    d.reason ? h('span', {class: 'reason', 'data-reason': d.reason}, 'reason: ', d.reason) : null,
    d.last_error ? h('span', {class: 'reason', title: d.last_error}, d.last_error) : null);
}

function renderDevices() {
  if (!state.devices.length) { replace('devices-list', h('p', {class: 'empty'}, 'No devices configured.')); return; }
  const rows = state.devices.map((d) => {
    const errs = Object.entries(d.errors || {}).sort((a, b) => b[1] - a[1]);
    const q = d.quality || {};
    const go = () => { location.hash = '#points/' + encodeURIComponent(d.device); };
    return h('tr', {class: 'link', tabindex: 0, 'data-device': d.device, onclick: go,
      onkeydown: (e) => { if (e.key === 'Enter') go(); }},
      cell('Device', {class: 'head'}, h('a', {class: 'name', href: '#points/' + encodeURIComponent(d.device)}, d.device),
        h('a', {class: 'details', href: '#device/' + encodeURIComponent(d.device), onclick: (e) => e.stopPropagation()}, 'details'),
        d.description ? h('span', {class: 'sub'}, d.description) : null),
      cell('Protocol', {}, d.protocol || '—'),
      cell('Endpoint', {class: 'mono small'}, d.endpoint || '—'),
      stateCell(d),
      cell('Last poll', {class: 'num'}, zero(d.last_poll) ? '—' : h('span', {}, fmtTime(d.last_poll),
        h('span', {class: 'reason'}, d.poll_ms ? `took ${nf.format(d.poll_ms)} ms · ` : '', ago(d.last_poll)))),
      cell('Points', {class: 'num'}, h('span', {}, `${d.points}`,
        h('span', {class: 'reason'}, `${q.good || 0} good`, q.uncertain ? ` · ${q.uncertain} uncertain` : '', q.bad ? ` · ${q.bad} bad` : ''))),
      cell('Errors', {}, errs.length ? h('ul', {class: 'errors'}, errs.map(([r, n]) => h('li', {}, h('span', {class: 'num'}, n), ' ', r))) : h('span', {class: 'muted'}, 'none')),
      cell('Alerts', {class: 'num'}, d.alerts ? h('span', {class: 'pill raised'}, d.alerts) : h('span', {class: 'muted'}, '0')));
  });
  replace('devices-list', table('rows', ['Device', 'Protocol', 'Endpoint', 'State', 'Last poll', 'Points', 'Errors', 'Alerts'], rows));
}

async function loadDevices() {
  state.devices = await getJSON('/api/devices');
}

// ---- points -----------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// sparkline draws the min..max band and the last value of each bucket.
function sparkline(sp) {
  if (!sp) return h('span', {class: 'muted small'}, '—');
  const n = sp.last.length;
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < n; i++) {
    if (sp.min[i] !== null) lo = Math.min(lo, sp.min[i]);
    if (sp.max[i] !== null) hi = Math.max(hi, sp.max[i]);
  }
  if (!isFinite(lo)) return h('span', {class: 'muted small'}, 'no recent data');
  const range = hi === lo ? fmtValue(lo) : `${fmtValue(lo)} … ${fmtValue(hi)}`;
  if (hi === lo) { hi += 1; lo -= 1; }
  const W = 140, H = 32, pad = 2;
  const x = (i) => (i / (n - 1)) * W;
  const y = (v) => pad + (H - 2 * pad) * (1 - (v - lo) / (hi - lo));
  const el = svg('svg', {class: 'spark', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img'});
  // Band and line, broken where buckets are empty.
  let top = [], bottom = [], line = [], last = null;
  const flush = () => {
    if (top.length) {
      const pts = top.concat(bottom.reverse()).map((p) => p.join(',')).join(' ');
      el.append(svg('polygon', {class: 'band', points: pts}));
    }
    if (line.length > 1) el.append(svg('polyline', {class: 'line', points: line.map((p) => p.join(',')).join(' ')}));
    top = []; bottom = []; line = [];
  };
  for (let i = 0; i < n; i++) {
    if (sp.last[i] === null) { flush(); continue; }
    const xi = x(i).toFixed(1);
    top.push([xi, y(sp.max[i]).toFixed(1)]);
    bottom.push([xi, y(sp.min[i]).toFixed(1)]);
    line.push([xi, y(sp.last[i]).toFixed(1)]);
    last = [xi, y(sp.last[i]).toFixed(1)];
  }
  flush();
  if (last) el.append(svg('circle', {class: 'end', cx: last[0], cy: last[1], r: 2}));
  const minutes = Math.round(n * sp.step_ms / 60000);
  const title = svg('title', {});
  title.textContent = `last ${minutes} min: ${range}`;
  el.append(title);
  return h('span', {class: 'spark-wrap'}, el, h('span', {class: 'spark-range'}, `${range} · last ${minutes} min`));
}

function renderChips() {
  const chips = [h('a', {href: '#points/*', role: 'tab', 'aria-selected': state.device === '' ? 'true' : 'false'}, 'All')];
  for (const d of state.devices) {
    chips.push(h('a', {href: '#points/' + encodeURIComponent(d.device), role: 'tab', 'data-device': d.device,
      'aria-selected': d.device === state.device ? 'true' : 'false'},
      h('span', {class: 'dot ' + d.state.replace(/\s+/g, '-')}), d.device));
  }
  $('device-chips').replaceChildren(...chips);
}

function renderPoints(points) {
  if (!points.length) { replace('points-list', h('p', {class: 'empty'}, 'No points.')); return; }
  const all = state.device === '';
  const rows = points.map((p) => {
    const q = p.quality || 'none';
    const valueCell = cell('Value', {class: 'value'},
      h('span', {class: 'v num'}, p.seen ? fmtValue(p.value) : '—'),
      p.unit ? h('span', {class: 'unit'}, p.unit) : null,
      p.last_good !== undefined ? h('span', {class: 'last'}, 'last good ', fmtValue(p.last_good), ' at ', fmtTime(p.last_good_time)) : null,
      p.write ? h('button', {class: 'write', type: 'button', 'data-write': `${p.device}.${p.point}`, onclick: () => openWrite(p)}, 'Write') : null);
    return h('tr', {'data-point': `${p.device}.${p.point}`, 'data-quality': q},
      cell('Point', {class: 'head'}, h('span', {class: 'name'}, all ? `${p.device}.${p.point}` : p.point),
        h('span', {class: 'sub'}, p.description || '', p.description ? ' · ' : '', h('span', {class: 'mono'}, p.source || ''))),
      valueCell,
      cell('Quality', {class: 'quality'}, pill(q, p.seen ? q : 'no data yet'), p.reason ? h('span', {class: 'reason'}, p.reason) : null),
      cell('Source time', {class: 'num'}, p.seen ? h('span', {}, fmtTime(p.time), h('span', {class: 'reason'}, ago(p.time))) : '—'),
      cell('Last minutes', {}, sparkline(p.spark)));
  });
  replace('points-list', table('rows', ['Point', 'Value', 'Quality', 'Source time', 'Last minutes'], rows));
}

async function loadPoints() {
  if (!state.devices.length) await loadDevices();
  renderChips();
  const q = state.device ? '?device=' + encodeURIComponent(state.device) : '';
  renderPoints(await getJSON('/api/points' + q));
}

// ---- write (commands) ---------------------------------------------------

// openWrite opens the write dialog for a writable point. The command goes
// to POST /api/commands with the operator credential typed here (not the
// browser's read-only one); the password is not kept.
function openWrite(p) {
  const w = p.write || {};
  const limits = [];
  if (w.min !== undefined) limits.push(`min ${w.min}`);
  if (w.max !== undefined) limits.push(`max ${w.max}`);
  if (w.allowed) limits.push(`one of ${w.allowed.join(', ')}`);
  if (w.interlock) limits.push(`only while ${w.interlock}`);
  $('write-point').textContent = `${p.device}.${p.point}`;
  $('write-limits').textContent = limits.join(' · ');
  $('write-value').value = p.seen ? fmtValue(p.value) : '';
  $('write-pass').value = '';
  $('write-result').textContent = '';
  try { $('write-user').value = localStorage.getItem('ferry.operator') || ''; } catch (e) { /* private mode */ }
  state.writing = p;
  $('write-dialog').showModal();
}

// writeValue turns the typed text into JSON: a number, true/false, or text.
function writeValue(text) {
  const t = text.trim();
  if (t === 'true' || t === 'false') return t === 'true';
  if (t !== '' && !isNaN(Number(t))) return Number(t);
  return text;
}

async function submitWrite(ev) {
  ev.preventDefault();
  const p = state.writing;
  if (!p) return;
  const user = $('write-user').value.trim();
  try { localStorage.setItem('ferry.operator', user); } catch (e) { /* private mode */ }
  const id = 'console-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8);
  const body = JSON.stringify({id, device: p.device, point: p.point, value: writeValue($('write-value').value)});
  const btn = $('write-submit');
  btn.disabled = true;
  $('write-result').textContent = 'Writing…';
  try {
    const r = await fetch('/api/commands', {
      method: 'POST', credentials: 'omit',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Basic ' + btoa(user + ':' + $('write-pass').value)},
      body,
    });
    const text = await r.text();
    let reply = null;
    try { reply = JSON.parse(text); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error((reply && reply.error) || text.trim() || `${r.status} ${r.statusText}`);
    let msg = reply.status;
    if (reply.read_back !== undefined) msg += ` · read back ${fmtValue(reply.read_back)}`;
    if (reply.reason) msg += ` · ${reply.reason}`;
    $('write-result').textContent = msg;
    $('write-result').dataset.status = reply.status;
  } catch (e) {
    $('write-result').textContent = 'Write failed: ' + e.message;
    $('write-result').dataset.status = 'error';
  } finally {
    btn.disabled = false;
    $('write-pass').value = '';
  }
}

// ---- alerts -----------------------------------------------------------

const sevRank = {critical: 3, warning: 2, info: 1};

function alertPoint(a) {
  return a.device ? (a.point ? `${a.device}.${a.point}` : a.device) : '—';
}

function renderAlerts() {
  const badge = $('alert-count');
  // What needs someone first: not yet acknowledged, most severe, oldest.
  const list = [...state.active.values()].sort((a, b) =>
    (a.state === 'raised' ? 0 : 1) - (b.state === 'raised' ? 0 : 1) ||
    (sevRank[b.severity] || 0) - (sevRank[a.severity] || 0) || a.since.localeCompare(b.since));
  const raised = list.filter((a) => a.state === 'raised').length;
  badge.hidden = list.length === 0;
  badge.textContent = raised || list.length;
  badge.classList.toggle('acked', raised === 0);
  badge.title = `${list.length} active, ${raised} not acknowledged`;

  const live = $('stream-state');
  live.textContent = state.streamOpen ? 'live' : 'reconnecting';
  live.className = 'live ' + (state.streamOpen ? 'on' : 'off');

  if (state.view !== 'alerts') return;
  state.alertsDrawn = Date.now();
  if (!list.length) {
    replace('alerts-active', h('p', {class: 'empty', id: 'no-alerts'}, 'No active alerts.'));
  } else {
    const rows = list.map((a) => {
      const acked = a.state === 'acknowledged';
      const by = a.labels && a.labels.acknowledged_by;
      return h('tr', {class: 'sev-' + a.severity, 'data-alert-id': a.id, 'data-rule': a.rule, 'data-state': a.state},
        cell('Alert', {class: 'head'}, h('span', {class: 'name'}, a.rule), a.message ? h('span', {class: 'sub'}, a.message) : null),
        cell('Severity', {}, pill(a.severity, a.severity)),
        cell('Point', {class: 'mono small'}, alertPoint(a)),
        cell('Value', {class: 'num'}, fmtValue(a.value)),
        cell('Since', {class: 'num'}, h('span', {}, fmtTime(a.since), h('span', {class: 'reason'}, ago(a.since)))),
        cell('State', {class: 'state'}, pill(a.state, a.state),
          acked ? h('span', {class: 'reason'}, by ? `by ${by} ` : '', 'at ', fmtTime(a.time)) : null),
        cell('', {class: 'action'}, acked ? null :
          h('button', {class: 'ack', type: 'button', onclick: (e) => ack(a.id, e.currentTarget)}, 'Acknowledge')));
    });
    replace('alerts-active', table('rows', ['Alert', 'Severity', 'Point', 'Value', 'Since', 'State', ''], rows));
  }
  if (!state.history.length) {
    replace('alerts-history', h('p', {class: 'empty'}, 'No transitions since ferry started.'));
    return;
  }
  const rows = state.history.map((a) => h('tr', {class: 'sev-' + a.severity},
    cell('Time', {class: 'num head'}, fmtTime(a.time)),
    cell('State', {}, pill(a.state, a.state)),
    cell('Severity', {}, pill(a.severity, a.severity)),
    cell('Rule', {}, h('span', {class: 'name'}, a.rule)),
    cell('Point', {class: 'mono small'}, alertPoint(a)),
    cell('Value', {class: 'num'}, fmtValue(a.value)),
    cell('Message', {class: 'small'}, a.message || '')));
  replace('alerts-history', table('rows', ['Time', 'State', 'Severity', 'Rule', 'Point', 'Value', 'Message'], rows));
}

const histKey = (a) => `${a.id}|${a.state}|${a.time}`;

function pushHistory(a) {
  if (state.history.some((x) => histKey(x) === histKey(a))) return;
  state.history.unshift(a);
  if (state.history.length > 100) state.history.length = 100;
}

async function loadAlerts() {
  const [active, history] = await Promise.all([getJSON('/api/alerts'), getJSON('/api/alerts/history')]);
  state.active = new Map(active.map((a) => [a.id, a]));
  state.history = history;
}

async function ack(id, btn) {
  btn.disabled = true;
  btn.textContent = 'Acknowledging…';
  const input = $('ack-by');
  const by = input.value.trim() || 'console';
  try { localStorage.setItem('ferry.ackBy', input.value.trim()); } catch (e) { /* private mode */ }
  try {
    const r = await fetch('/api/alerts/' + encodeURIComponent(id) + '/ack', {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify({by}),
    });
    const text = await r.text();
    let body = null;
    try { body = JSON.parse(text); } catch (e) { /* not JSON: a proxy's or the listener's own answer */ }
    if (!r.ok) throw new Error((body && body.error) || text.trim() || `${r.status} ${r.statusText}`);
    state.active.set(body.id, body);
    renderAlerts();
  } catch (e) {
    toast('Acknowledge failed: ' + e.message);
    btn.disabled = false;
    btn.textContent = 'Acknowledge';
  }
}

// connectStream follows the alert stream. The browser reconnects by
// itself after a network error; when the server refused the stream (too
// many clients, auth) it is retried here.
function connectStream() {
  const es = new EventSource('/api/alerts/stream');
  state.stream = es;
  es.addEventListener('open', () => {
    state.streamOpen = true;
    // The stream starts with every active alert ("active" events); the
    // history is read again so nothing missed while away is lost.
    state.active = new Map();
    getJSON('/api/alerts/history').then((hist) => { state.history = hist; renderAlerts(); }).catch(() => {});
    renderAlerts();
  });
  es.addEventListener('active', (ev) => {
    const a = JSON.parse(ev.data);
    state.active.set(a.id, a);
    renderAlerts();
  });
  es.addEventListener('alert', (ev) => {
    const a = JSON.parse(ev.data);
    if (a.state === 'cleared') state.active.delete(a.id);
    else state.active.set(a.id, a);
    pushHistory(a);
    renderAlerts();
  });
  es.addEventListener('error', () => {
    state.streamOpen = false;
    renderAlerts();
    if (es.readyState === EventSource.CLOSED) setTimeout(connectStream, 5000);
  });
}

// ---- health -----------------------------------------------------------

function kv(pairs) {
  return h('dl', {class: 'kv'}, pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function healthLevel(hl) {
  if (hl.buffer.error) return 'bad';
  if (hl.uplink.configured && !hl.uplink.connected) return 'warn';
  return 'good';
}

function renderHealthDot() {
  const hl = state.health;
  const dot = $('health-dot');
  if (!hl) return;
  const lvl = healthLevel(hl);
  dot.className = 'dot ' + lvl;
  dot.title = lvl === 'good' ? 'healthy' : (hl.buffer.error || hl.uplink.error || 'uplink not connected');
  $('gateway').textContent = hl.site ? `${hl.gateway} · ${hl.site}` : hl.gateway;
  $('footer').textContent = `ferry ${hl.version}${hl.commit ? ' (' + hl.commit + ')' : ''} · gateway ${hl.gateway} · up ${fmtAge(hl.uptime_seconds)}`;
}

// fleetLine shows fleet mode: the key, the bundle revision that runs and
// the last apply result.
function fleetLine(f) {
  const run = f.revision ? `revision ${f.revision}` + (f.site_revision ? ` + site ${f.site_revision}` : '') : 'local file';
  const kind = {applied: 'good', local: 'none', applying: 'warning'}[f.last] || 'bad';
  return h('span', {}, h('span', {class: 'mono'}, f.key), ` · running ${run} · last `, pill(kind, f.last.replace('_', ' ')),
    f.last_time ? ' ' + fmtTime(f.last_time) : '');
}

function renderHealth() {
  const hl = state.health;
  if (!hl) return;
  const up = hl.uplink, tr = hl.traffic, buf = hl.buffer, cfg = hl.config;
  const upState = !up.configured ? pill('none', 'not configured') : up.connected ? pill('connected', 'connected') : pill('lost', 'not connected');
  const upErrs = Object.entries(tr.errors || {});
  const uplink = h('section', {class: 'card', id: 'card-uplink'}, h('h2', {}, 'Uplink', upState),
    kv([
      ['Publish rate', fmtRate(tr.acked_per_second, 'msg/s')],
      ['Samples out', fmtRate(tr.samples_per_second, '/s')],
      ['Bytes out', tr.bytes_per_second === null ? '…' : fmtBytes(tr.bytes_per_second) + '/s'],
      ['Ack latency', `${fmtMS(tr.ack_latency_mean_ms)} mean · ${fmtMS(tr.ack_latency_p95_ms)} p95`],
      ['Lag', fmtAge(tr.lag_seconds)],
      ['In flight', `${tr.in_flight}`],
      ['Acked / published', `${tr.acked} / ${tr.published}`],
      ['Reconnects', `${tr.reconnects}`],
      upErrs.length ? ['Errors', upErrs.map(([r, n]) => `${r}: ${n}`).join(', ')] : null,
      hl.durability ? ['Acked kept', hl.durability.enabled
        ? `${hl.durability.retained_records} records (${fmtBytes(hl.durability.retained_bytes)}) for ${fmtAge(hl.durability.window_seconds)} · ${hl.durability.checks} checks`
        : 'off (retain_acked 0)'] : null,
      hl.durability && hl.durability.lost ? ['Upstream lost', `${hl.durability.lost} messages, ${hl.durability.resent} resent` +
        (hl.durability.unrecoverable ? `, ${hl.durability.unrecoverable} records past the retention` : '')] : null,
    ]),
    hl.durability && hl.durability.last_loss_message ? h('p', {class: 'problem'}, hl.durability.last_loss_message) : null,
    up.error && up.configured ? h('p', {class: 'problem'}, up.error) : null,
    (hl.upstreams || []).length ? table('upstreams', ['Upstream', 'State', 'Pending', 'Oldest'], (hl.upstreams).map((u) => h('tr', {},
      h('th', {scope: 'row'}, `${u.name} (${u.kind})`),
      h('td', {}, u.connected ? pill('connected', 'connected') : pill('lost', u.error || 'not connected')),
      h('td', {class: 'num'}, `${u.pending} (${fmtBytes(u.pending_bytes)})`),
      h('td', {class: 'num'}, u.pending ? fmtAge(u.oldest_age_seconds) : '—')))) : null,
    tr.window_seconds ? h('p', {class: 'muted small'}, `rates over the last ${Math.round(tr.window_seconds)} s`) : h('p', {class: 'muted small'}, 'rates appear after a few seconds'));

  // One column per lane, one row per figure: narrow enough for a phone.
  const ls = buf.lanes || [];
  const laneRow = (name, f) => h('tr', {}, h('th', {scope: 'row'}, name), ls.map((l) => h('td', {class: 'num'}, f(l))));
  const lanes = [
    laneRow('Records', (l) => `${l.records}`),
    laneRow('Bytes', (l) => fmtBytes(l.bytes)),
    laneRow('Oldest', (l) => (l.records ? fmtAge(l.oldest_age_seconds) : '—')),
    laneRow('In flight', (l) => `${l.in_flight}`),
  ];
  const drops = [];
  for (const [lane, reasons] of Object.entries(buf.dropped || {})) {
    for (const [r, n] of Object.entries(reasons)) drops.push(`${lane} ${r}: ${n}`);
  }
  const buffer = h('section', {class: 'card', id: 'card-buffer'},
    h('h2', {}, 'Buffer', buf.error ? pill('bad', 'disk problem') : buf.dropped_total ? pill('warning', `${buf.dropped_total} dropped`) : pill('good', 'ok')),
    table('lanes', ['', ...ls.map((l) => l.lane)], lanes),
    kv([
      ['File', `${fmtBytes(buf.file_bytes)} (${fmtBytes(buf.free_bytes)} free)`],
      ['Write queue', `${buf.queue_length} samples`],
      ['Dropped', drops.length ? drops.join(', ') : 'none'],
      ['Pipeline', `${fmtRate(hl.pipeline.samples_per_second, 'samples/s')} in · ${hl.pipeline.dropped_scans} scans dropped`],
    ]),
    buf.error ? h('p', {class: 'problem'}, buf.error) : null);

  const rl = cfg.reload;
  const reload = !rl ? h('span', {class: 'muted'}, 'none since start')
    : rl.ok ? h('span', {}, pill('good', 'applied'), ' ', fmtTime(rl.time))
      : h('span', {}, pill('bad', 'refused'), ' ', fmtTime(rl.time));
  const config = h('section', {class: 'card', id: 'card-config'}, h('h2', {}, 'Configuration'),
    kv([
      ['File', h('span', {class: 'mono'}, cfg.file || '—')],
      (cfg.files || []).length > 1 ? ['Device files', `${cfg.files.length - 1}`] : null,
      ['Version', h('span', {class: 'mono'}, cfg.version || '—')],
      ['Loaded', `${fmtTime(cfg.loaded)} (${ago(cfg.loaded)})`],
      ['Last reload', reload],
      hl.fleet ? ['Fleet', fleetLine(hl.fleet)] : null,
    ]),
    hl.fleet && hl.fleet.last_reason ? h('p', {class: hl.fleet.last === 'applied' ? 'muted small' : 'problem mono'}, hl.fleet.last_reason) : null,
    rl && !rl.ok && rl.error ? h('p', {class: 'problem mono'}, rl.error) : null,
    rl && !rl.ok ? h('p', {class: 'muted small'}, 'the previous configuration keeps running') : null);

  const gw = h('section', {class: 'card', id: 'card-gateway'}, h('h2', {}, 'Gateway'),
    kv([
      ['Gateway', hl.gateway || '—'],
      hl.site ? ['Site', hl.site] : null,
      ['Version', h('span', {class: 'mono'}, hl.version + (hl.commit ? ` (${hl.commit})` : ''))],
      ['Started', `${fmtTime(hl.started)}`],
      ['Uptime', fmtAge(hl.uptime_seconds)],
    ]));
  $('health-cards').replaceChildren(uplink, buffer, config, gw);
}

async function loadHealth() {
  state.health = await getJSON('/api/health');
  state.lastHealth = Date.now();
  renderHealthDot();
}

// ---- routing and polling ----------------------------------------------

function route() {
  const [view, arg] = location.hash.replace(/^#/, '').split('/');
  state.view = VIEWS.includes(view) ? view : 'devices';
  if (state.view === 'points') {
    if (arg === '*') state.device = '';
    else if (arg) state.device = decodeURIComponent(arg);
    else if (!state.device && state.devices.length) state.device = state.devices[0].device;
  }
  if (state.view === 'trend') parseTrendHash(location.hash);
  if (state.view === 'history' && arg) { fillDeviceSelect(); $('ah-device').value = decodeURIComponent(arg); alertHist.key = ''; }
  if (state.view === 'device') {
    if (arg) devPage.name = decodeURIComponent(arg);
    if (!devPage.name) { location.hash = '#devices'; return; }
  }
  const changed = $('view-' + state.view).hidden;
  for (const v of VIEWS) $('view-' + v).hidden = v !== state.view;
  if (changed) window.scrollTo(0, 0);
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.view === state.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (state.view === 'alerts') renderAlerts();
  tick();
}

let timer = 0;
let busy = false;

async function refresh() {
  switch (state.view) {
    case 'devices': await loadDevices(); renderDevices(); break;
    case 'points': await loadPoints(); break;
    case 'alerts':
      // The stream keeps the alerts current; poll only while it is down.
      // Otherwise redraw now and then for the ages ("12 s ago"), not at
      // every tick, so that a button is not replaced under the pointer.
      if (!state.streamOpen) await loadAlerts();
      if (!state.streamOpen || Date.now() - state.alertsDrawn > 10000) renderAlerts();
      break;
    case 'health': await loadHealth(); renderHealth(); break;
    case 'trend': await loadTrend(false); break;
    case 'history': await loadAlertHistory(false); break;
    case 'device': await loadDevice(); break;
  }
  if (state.view !== 'health' && Date.now() - state.lastHealth > HEALTH_MS) await loadHealth();
}

async function tick() {
  clearTimeout(timer);
  if (busy) { timer = setTimeout(tick, 200); return; }
  if (document.hidden) { timer = setTimeout(tick, POLL_MS); return; }
  busy = true;
  try {
    await refresh();
    setOnline(true);
  } catch (e) {
    setOnline(false, e);
  } finally {
    busy = false;
    timer = setTimeout(tick, POLL_MS);
  }
}

function start() {
  try { $('ack-by').value = localStorage.getItem('ferry.ackBy') || ''; } catch (e) { /* private mode */ }
  window.addEventListener('hashchange', route);
  $('write-form').addEventListener('submit', submitWrite);
  $('write-cancel').addEventListener('click', () => { $('write-pass').value = ''; $('write-dialog').close(); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  setupConsole();
  connectStream();
  loadDevices().catch(() => {}).finally(route);
}

start();
