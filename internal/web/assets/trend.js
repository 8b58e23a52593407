// ferry console: search, trends, alert history and the device page. Plain
// JavaScript loaded before app.js (which routes and polls); it uses
// app.js's helpers (h, $, table, cell, pill, getJSON, fmt…) only once the
// page has started. Every value goes in with textContent, never as HTML.
'use strict';

// ---- search -------------------------------------------------------------

// The search runs on the server (GET /api/search): the box sends what was
// typed at most every SEARCH_MS and shows the best SEARCH_LIMIT points.
const SEARCH_MS = 120;
const SEARCH_LIMIT = 20;

const search = {timer: 0, seq: 0, items: [], active: -1};

function setupSearch() {
  const box = $('search');
  box.addEventListener('input', () => {
    clearTimeout(search.timer);
    search.timer = setTimeout(runSearch, SEARCH_MS);
  });
  box.addEventListener('keydown', (e) => {
    const n = search.items.length;
    if (e.key === 'ArrowDown' && n) { e.preventDefault(); markResult((search.active + 1) % n); }
    else if (e.key === 'ArrowUp' && n) { e.preventDefault(); markResult((search.active - 1 + n) % n); }
    else if (e.key === 'Enter') {
      e.preventDefault();
      const it = search.items[Math.max(0, search.active)];
      if (it) it.go();
    } else if (e.key === 'Escape') closeSearch();
  });
  box.addEventListener('focus', () => { if (search.items.length) $('search-results').hidden = false; });
  document.addEventListener('click', (e) => { if (!e.target.closest('.search')) closeSearch(); });
}

function closeSearch() { $('search-results').hidden = true; search.active = -1; }

function markResult(i) {
  search.active = i;
  search.items.forEach((it, k) => it.el.classList.toggle('active', k === i));
  if (search.items[i]) search.items[i].el.scrollIntoView({block: 'nearest'});
}

async function runSearch() {
  const q = $('search').value.trim();
  const seq = ++search.seq;
  if (!q) { search.items = []; $('search-results').replaceChildren(); closeSearch(); return; }
  let res;
  try {
    res = await getJSON(`/api/search?limit=${SEARCH_LIMIT}&q=${encodeURIComponent(q)}`);
  } catch (e) {
    res = {devices: [], points: [], total: 0, error: e.message};
  }
  if (seq !== search.seq) return; // a newer search is under way
  renderSearch(res);
}

function renderSearch(res) {
  const list = $('search-results');
  const items = [];
  const kids = [];
  if (res.devices.length) kids.push(h('li', {class: 'group', role: 'presentation'}, 'Devices'));
  for (const d of res.devices) {
    const go = () => { closeSearch(); location.hash = '#device/' + encodeURIComponent(d.device); };
    const el = h('li', {class: 'hit', role: 'option', 'data-device': d.device, onclick: go},
      h('span', {class: 'name'}, d.device), h('span', {class: 'sub'}, d.protocol || '', d.description ? ' · ' + d.description : ''));
    items.push({el, go}); kids.push(el);
  }
  if (res.points.length) kids.push(h('li', {class: 'group', role: 'presentation'}, 'Points — pick to trend'));
  for (const p of res.points) {
    const go = () => { closeSearch(); addToTrend(p.device, p.point); };
    const el = h('li', {class: 'hit', role: 'option', 'data-device': p.device, 'data-point': p.point, onclick: go},
      h('span', {class: 'name'}, p.device, '.', p.point, p.unit ? h('span', {class: 'unit'}, ' ', p.unit) : null),
      h('span', {class: 'sub'}, [p.description, p.source].filter(Boolean).join(' · ')));
    items.push({el, go}); kids.push(el);
  }
  if (!items.length) kids.push(h('li', {class: 'none'}, res.error || 'Nothing matches.'));
  else if (res.total > res.points.length) kids.push(h('li', {class: 'none'}, `${res.points.length} of ${res.total} points: type more to narrow`));
  list.replaceChildren(...kids);
  list.dataset.q = res.q;
  search.items = items;
  search.active = -1;
  list.hidden = false;
}

// ---- trends -------------------------------------------------------------

const RANGES = {'1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3};
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22'];
const MAX_TREND = 10;

const trend = {
  series: [],     // [{device, point}]
  range: '24h',
  zoom: null,     // {from, to} in ms, or null
  data: [],       // the answers, in the order of series
  loadedAt: 0,
  key: '',        // what data is for
  drag: null,
};

// The hash is #trend/RANGE/dev:point+dev:point (each part URI-encoded).
function trendHash() {
  return '#trend/' + trend.range + '/' + trend.series.map((s) => encodeURIComponent(s.device) + ':' + encodeURIComponent(s.point)).join('+');
}

function parseTrendHash(hash) {
  const parts = hash.replace(/^#/, '').split('/');
  if (RANGES[parts[1]]) trend.range = parts[1];
  const list = [];
  for (const item of (parts[2] || '').split('+')) {
    const i = item.indexOf(':');
    if (i <= 0) continue;
    list.push({device: decodeURIComponent(item.slice(0, i)), point: decodeURIComponent(item.slice(i + 1))});
  }
  if (parts.length > 2) trend.series = list.slice(0, MAX_TREND);
}

function addToTrend(device, point) {
  if (state.view !== 'trend') trend.series = [];
  if (!trend.series.some((s) => s.device === device && s.point === point)) {
    trend.series.push({device, point});
    trend.series = trend.series.slice(-MAX_TREND);
  }
  trend.zoom = null;
  location.hash = trendHash();
}

function trendWindow() {
  if (trend.zoom) return trend.zoom;
  const to = Date.now();
  return {from: to - RANGES[trend.range], to};
}

function renderTrendControls() {
  for (const b of document.querySelectorAll('#trend-ranges button[data-range]')) {
    b.setAttribute('aria-pressed', !trend.zoom && b.dataset.range === trend.range ? 'true' : 'false');
  }
  $('trend-reset').hidden = !trend.zoom;
  const legend = trend.series.map((s, i) => {
    const d = trend.data[i];
    const unit = d && d.unit ? ` (${d.unit})` : '';
    const remove = () => { trend.series.splice(i, 1); location.hash = trendHash(); };
    const q = `device=${encodeURIComponent(s.device)}&point=${encodeURIComponent(s.point)}`;
    const w = trendWindow();
    return h('li', {'data-series': `${s.device}.${s.point}`},
      h('span', {class: 'swatch', 'data-color': i % COLORS.length}),
      h('span', {class: 'name'}, `${s.device}.${s.point}`), unit,
      d ? h('span', {class: 'muted small'}, ` · ${d.resolution === 'raw' ? 'raw samples' : d.resolution + ' buckets'}`) : null,
      ' ', h('a', {class: 'small', href: `/api/history?${q}&from=${new Date(w.from).toISOString()}&to=${new Date(w.to).toISOString()}&format=csv`}, 'CSV'),
      ' ', h('button', {type: 'button', class: 'remove', title: 'remove from the chart', onclick: remove}, '×'));
  });
  $('trend-legend').replaceChildren(...legend);
}

// loadTrend fetches the series (one request per device) when what is on
// screen changed or the data is older than a refresh interval that
// grows with the range.
async function loadTrend(force) {
  const w = trendWindow();
  const key = trendHash() + '|' + (trend.zoom ? `${w.from}-${w.to}` : '');
  const every = trend.zoom ? Infinity : Math.max(5000, RANGES[trend.range] / 1500);
  if (!force && key === trend.key && Date.now() - trend.loadedAt < every) return;
  renderTrendControls();
  if (!trend.series.length) {
    trend.data = []; trend.key = key;
    replace('trend-chart', h('p', {class: 'empty'}, 'Search for a point above and pick it to draw its trend; pick more to add them to the chart.'));
    $('trend-info').textContent = '';
    return;
  }
  const byDevice = new Map();
  trend.series.forEach((s, i) => {
    if (!byDevice.has(s.device)) byDevice.set(s.device, []);
    byDevice.get(s.device).push(i);
  });
  const from = new Date(w.from).toISOString(), to = new Date(w.to).toISOString();
  const data = new Array(trend.series.length);
  const units = await pointUnits();
  await Promise.all([...byDevice].map(async ([dev, idx]) => {
    const q = idx.map((i) => 'point=' + encodeURIComponent(trend.series[i].point)).join('&');
    const res = await getJSON(`/api/history?device=${encodeURIComponent(dev)}&${q}&from=${from}&to=${to}`);
    idx.forEach((i, k) => { data[i] = Object.assign(res[k], {unit: units.get(`${dev}\u0000${trend.series[i].point}`) || ''}); });
  }));
  trend.data = data; trend.key = key; trend.loadedAt = Date.now();
  renderTrendControls();
  drawTrend(w);
}

// pointUnits maps device\0point to its unit, from the search index (one
// request per series, cached).
const unitCache = new Map();
async function pointUnits() {
  for (const s of trend.series) {
    const k = `${s.device}\u0000${s.point}`;
    if (unitCache.has(k)) continue;
    try {
      const res = await getJSON(`/api/search?limit=5&q=${encodeURIComponent(s.device + '.' + s.point)}`);
      const hit = res.points.find((p) => p.device === s.device && p.point === s.point);
      unitCache.set(k, hit ? hit.unit || '' : '');
    } catch (e) { unitCache.set(k, ''); }
  }
  return unitCache;
}

const W = 1000, H = 340, ML = 64, MR = 14, MT = 12, MB = 30;

// niceTicks returns about n round values from lo to hi.
function niceTicks(lo, hi, n) {
  const span = hi - lo;
  const raw = span / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

const TIME_STEPS = [60e3, 300e3, 900e3, 1800e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3, 7 * 86400e3];

function timeTicks(from, to) {
  const step = TIME_STEPS.find((s) => (to - from) / s <= 8) || TIME_STEPS[TIME_STEPS.length - 1];
  // Whole steps in local time.
  const off = new Date(from).getTimezoneOffset() * 60e3;
  const out = [];
  for (let t = Math.ceil((from - off) / step) * step + off; t <= to; t += step) out.push(t);
  return {ticks: out, step};
}

function fmtTick(t, step) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, '0');
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (step >= 86400e3) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  if (d.getHours() === 0 && d.getMinutes() === 0) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return hm;
}

// segments splits a series into runs of points with a value: a point
// with no value (only Bad samples in its bucket) or a hole in time longer
// than the series' spacing ends a run, so that a gap is drawn as a gap.
function segments(d) {
  const pts = d.points;
  let limit;
  if (d.step_seconds > 0) limit = d.step_seconds * 1000 * 1.5;
  else {
    // Raw samples: three times the typical spacing.
    const gaps = [];
    for (let i = 1; i < pts.length && gaps.length < 200; i++) gaps.push(Date.parse(pts[i].t) - Date.parse(pts[i - 1].t));
    gaps.sort((a, b) => a - b);
    limit = Math.max(1000, 3 * (gaps.length ? gaps[gaps.length >> 1] : 1000));
  }
  const segs = [];
  let cur = [], prev = -Infinity, bad = [];
  for (const p of pts) {
    const t = Date.parse(p.t);
    const v = p.mean;
    if (v === null || v === undefined) {
      bad.push(t);
      if (cur.length) segs.push(cur);
      cur = []; prev = -Infinity;
      continue;
    }
    if (t - prev > limit && cur.length) { segs.push(cur); cur = []; }
    cur.push({t, v, lo: p.min, hi: p.max});
    prev = t;
  }
  if (cur.length) segs.push(cur);
  return {segs, bad, limit};
}

function drawTrend(w) {
  const all = trend.data.map(segments);
  let lo = Infinity, hi = -Infinity;
  for (const s of all) for (const seg of s.segs) for (const p of seg) { lo = Math.min(lo, p.lo ?? p.v); hi = Math.max(hi, p.hi ?? p.v); }
  const total = trend.data.reduce((n, d) => n + d.points.length, 0);
  const el = svg('svg', {class: 'trend', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'trend chart',
    'data-from': new Date(w.from).toISOString(), 'data-to': new Date(w.to).toISOString(), 'data-points': total});
  if (!isFinite(lo)) {
    replace('trend-chart', h('p', {class: 'empty', 'data-empty': 'true'}, 'No history for these points in this range.'));
    $('trend-info').textContent = '';
    return;
  }
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const x = (t) => ML + (W - ML - MR) * (t - w.from) / (w.to - w.from);
  const y = (v) => MT + (H - MT - MB) * (1 - (v - lo) / (hi - lo));
  const fx = (t) => x(t).toFixed(1), fy = (v) => y(v).toFixed(1);
  // Grid and axes.
  const grid = svg('g', {class: 'grid'});
  for (const v of niceTicks(lo, hi, 5)) {
    grid.append(svg('line', {x1: ML, x2: W - MR, y1: fy(v), y2: fy(v)}));
    const t = svg('text', {x: ML - 6, y: fy(v), 'text-anchor': 'end', 'dominant-baseline': 'middle'});
    t.textContent = fmtValue(Number(v.toPrecision(6)));
    grid.append(t);
  }
  const tt = timeTicks(w.from, w.to);
  for (const t of tt.ticks) {
    grid.append(svg('line', {x1: fx(t), x2: fx(t), y1: MT, y2: H - MB}));
    const lab = svg('text', {x: fx(t), y: H - MB + 18, 'text-anchor': 'middle'});
    lab.textContent = fmtTick(t, tt.step);
    grid.append(lab);
  }
  el.append(grid, svg('rect', {class: 'frame', x: ML, y: MT, width: W - ML - MR, height: H - MT - MB}));
  // Series: the min..max band of each bucket, the mean as a line, and a
  // mark under the axis where a bucket had no value.
  all.forEach((s, i) => {
    const d = trend.data[i];
    const color = COLORS[i % COLORS.length];
    const g = svg('g', {class: 'series', 'data-series': `${d.device}.${d.point}`});
    let line = '', band = '', n = 0;
    for (const seg of s.segs) {
      line += seg.map((p, k) => (k ? 'L' : 'M') + fx(p.t) + ',' + fy(p.v)).join('');
      n += seg.length;
      if (d.resolution !== 'raw' && seg.length > 1) {
        band += seg.map((p, k) => (k ? 'L' : 'M') + fx(p.t) + ',' + fy(p.hi ?? p.v)).join('') +
          seg.slice().reverse().map((p) => 'L' + fx(p.t) + ',' + fy(p.lo ?? p.v)).join('') + 'Z';
      }
      if (seg.length === 1) line += `M${fx(seg[0].t) - 1.5},${fy(seg[0].v)}h3`;
    }
    if (band) g.append(svg('path', {class: 'band', d: band, fill: color}));
    g.append(svg('path', {class: 'line', d: line || 'M0,0', stroke: color,
      'data-series': `${d.device}.${d.point}`, 'data-vertices': n, 'data-segments': s.segs.length, 'data-gaps': s.bad.length,
      'data-resolution': d.resolution}));
    for (const t of s.bad) g.append(svg('rect', {class: 'badq', x: fx(t), y: H - MB + 1, width: 2, height: 5}));
    el.append(g);
  });
  const sel = svg('rect', {class: 'sel', x: 0, y: MT, width: 0, height: H - MT - MB, visibility: 'hidden'});
  const cursor = svg('line', {class: 'cursor', x1: 0, x2: 0, y1: MT, y2: H - MB, visibility: 'hidden'});
  el.append(sel, cursor);
  zoomable(el, w, sel, cursor);
  replace('trend-chart', el);
  const res = trend.data.map((d) => d.resolution);
  $('trend-info').textContent = `${new Date(w.from).toLocaleString()} – ${new Date(w.to).toLocaleString()} · ` +
    `${total} ${res.every((r) => r === 'raw') ? 'samples' : 'buckets'} · drag across the chart to zoom`;
}

// zoomable lets a drag across the chart choose a new time window (the
// server answers it at the resolution it calls for) and shows the values
// under the pointer.
function zoomable(el, w, sel, cursor) {
  const toX = (ev) => {
    const r = el.getBoundingClientRect();
    return Math.min(W - MR, Math.max(ML, (ev.clientX - r.left) / r.width * W));
  };
  const toT = (px) => w.from + (px - ML) / (W - ML - MR) * (w.to - w.from);
  el.addEventListener('pointerdown', (ev) => {
    trend.drag = {x0: toX(ev)};
    el.setPointerCapture(ev.pointerId);
  });
  el.addEventListener('pointermove', (ev) => {
    const px = toX(ev);
    cursor.setAttribute('x1', px); cursor.setAttribute('x2', px); cursor.setAttribute('visibility', 'visible');
    showReadout(toT(px));
    if (!trend.drag) return;
    const a = Math.min(trend.drag.x0, px), b = Math.max(trend.drag.x0, px);
    sel.setAttribute('x', a); sel.setAttribute('width', b - a); sel.setAttribute('visibility', 'visible');
  });
  el.addEventListener('pointerleave', () => { cursor.setAttribute('visibility', 'hidden'); });
  el.addEventListener('pointerup', (ev) => {
    if (!trend.drag) return;
    const px = toX(ev);
    const a = Math.min(trend.drag.x0, px), b = Math.max(trend.drag.x0, px);
    trend.drag = null;
    sel.setAttribute('visibility', 'hidden');
    if (b - a < 6) return;
    const from = toT(a), to = toT(b);
    if (to - from < 60e3) return; // below a minute there is nothing more to see
    trend.zoom = {from: Math.round(from), to: Math.round(to)};
    loadTrend(true).catch((e) => setOnline(false, e));
  });
}

function showReadout(t) {
  const parts = [];
  trend.data.forEach((d) => {
    let best = null, bd = Infinity;
    for (const p of d.points) {
      const dt = Math.abs(Date.parse(p.t) - t);
      if (dt < bd) { bd = dt; best = p; }
    }
    if (best) parts.push(`${d.point} ${best.mean === null ? 'no value (' + best.quality + ')' : fmtValue(best.mean)}`);
  });
  $('trend-readout').textContent = `${fmtTime(new Date(t).toISOString())}  ${parts.join(' · ')}`;
}

function setupTrend() {
  for (const b of document.querySelectorAll('#trend-ranges button[data-range]')) {
    b.addEventListener('click', () => {
      trend.range = b.dataset.range; trend.zoom = null;
      if (location.hash === trendHash()) loadTrend(true).catch((e) => setOnline(false, e));
      else location.hash = trendHash();
    });
  }
  $('trend-reset').addEventListener('click', () => { trend.zoom = null; loadTrend(true).catch((e) => setOnline(false, e)); });
}

// ---- alert history --------------------------------------------------------

const ahRanges = {'1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3};
const alertHist = {key: '', loadedAt: 0};

function setupAlertHistory() {
  const form = $('ah-form');
  form.addEventListener('submit', (e) => { e.preventDefault(); loadAlertHistory(true).catch((err) => setOnline(false, err)); });
  for (const el of form.querySelectorAll('select')) el.addEventListener('change', () => loadAlertHistory(true).catch((err) => setOnline(false, err)));
  for (const el of form.querySelectorAll('input')) {
    let t = 0;
    el.addEventListener('input', () => { clearTimeout(t); t = setTimeout(() => loadAlertHistory(true).catch((err) => setOnline(false, err)), 250); });
  }
}

function alertHistoryURL() {
  const p = new URLSearchParams();
  const dev = $('ah-device').value, rule = $('ah-rule').value.trim(), st = $('ah-state').value, text = $('ah-text').value.trim();
  const range = $('ah-range').value;
  if (dev) p.set('device', dev);
  if (rule) p.set('rule', rule);
  if (st) p.set('state', st);
  if (text) p.set('q', text);
  if (ahRanges[range]) p.set('from', new Date(Date.now() - ahRanges[range]).toISOString());
  p.set('limit', '500');
  return '/api/alerts/history?' + p.toString();
}

function fillDeviceSelect() {
  const sel = $('ah-device');
  const have = new Set([...sel.options].map((o) => o.value));
  for (const d of state.devices) if (!have.has(d.device)) sel.append(h('option', {value: d.device}, d.device));
}

async function loadAlertHistory(force) {
  fillDeviceSelect();
  const url = alertHistoryURL();
  const key = url.replace(/from=[^&]*/, '');
  if (!force && key === alertHist.key && Date.now() - alertHist.loadedAt < 10000) return;
  let list = await getJSON(url);
  // Without a persisted history the API answers the last transitions
  // since start, unfiltered: filter them here the same way.
  const dev = $('ah-device').value, rule = $('ah-rule').value.trim(), st = $('ah-state').value;
  list = list.filter((a) => (!dev || a.device === dev) && (!rule || a.rule === rule) && (!st || a.state === st));
  alertHist.key = key; alertHist.loadedAt = Date.now();
  renderAlertHistory(list);
}

function renderAlertHistory(list) {
  const rules = $('ah-rules');
  const known = new Set([...rules.options].map((o) => o.value));
  for (const a of list) if (!known.has(a.rule)) { known.add(a.rule); rules.append(h('option', {value: a.rule})); }
  if (!list.length) { replace('ah-list', h('p', {class: 'empty'}, 'No alert transitions match.')); return; }
  const rows = list.map((a) => {
    const by = a.labels && a.labels.acknowledged_by;
    return h('tr', {class: 'sev-' + a.severity, 'data-rule': a.rule, 'data-state': a.state, 'data-id': a.id},
      cell('Time', {class: 'num nowrap'}, fmtTime(a.time)),
      cell('State', {class: 'state'}, pill(a.state, a.state), by ? h('span', {class: 'reason'}, 'by ', by) : null),
      cell('Severity', {}, pill(a.severity, a.severity)),
      cell('Rule', {class: 'head'}, h('span', {class: 'name'}, a.rule)),
      cell('Point', {}, a.device ? h('a', {href: '#device/' + encodeURIComponent(a.device)}, a.point ? `${a.device}.${a.point}` : a.device) : '—'),
      cell('Value', {class: 'num'}, fmtValue(a.value)),
      cell('Message', {}, a.message || ''));
  });
  replace('ah-list', h('div', {}, h('p', {class: 'sub', id: 'ah-count'}, `${list.length} transition${list.length === 1 ? '' : 's'}${list.length >= 500 ? ' (the newest 500: narrow the filters)' : ''}`),
    table('rows', ['Time', 'State', 'Severity', 'Rule', 'Point', 'Value', 'Message'], rows)));
}

// ---- device page ----------------------------------------------------------

const devPage = {name: ''};

async function loadDevice() {
  const name = devPage.name;
  const enc = encodeURIComponent(name);
  const [d, points, alerts] = await Promise.all([
    getJSON('/api/devices/' + enc),
    getJSON('/api/points?spark=0&device=' + enc),
    getJSON('/api/alerts/history?limit=10&device=' + enc).catch(() => []),
  ]);
  if (name !== devPage.name) return;
  renderDevice(d, points, alerts.filter((a) => a.device === name).slice(0, 10));
}

function renderDevice(d, points, alerts) {
  $('device-title').textContent = d.device;
  const errs = Object.entries(d.errors || {}).sort((a, b) => b[1] - a[1]);
  const status = h('div', {class: 'card', id: 'device-status'}, h('h2', {}, 'Status', pill(d.state, d.state)),
    kv([
      ['Protocol', d.protocol || '—'],
      ['Endpoint', h('span', {class: 'mono'}, d.endpoint || '—')],
      d.description ? ['Description', d.description] : null,
      ['Since', zero(d.since) ? '—' : `${fmtTime(d.since)} (${ago(d.since)})`],
      ['Last error', h('span', {id: 'device-last-error', class: d.last_error ? 'problem' : 'muted'}, d.last_error || 'none')],
      ['Last poll', zero(d.last_poll) ? '—' : `${fmtTime(d.last_poll)} (${ago(d.last_poll)})`],
      ['Poll latency', h('span', {id: 'device-poll-ms'}, d.poll_ms ? fmtMS(d.poll_ms) : '—')],
      ['Scans', String(d.scans)],
      ['Points', `${d.points} · ${(d.quality || {}).good || 0} good${(d.quality || {}).bad ? ' · ' + d.quality.bad + ' bad' : ''}`],
      ['Errors', errs.length ? h('ul', {class: 'errors'}, errs.map(([r, n]) => h('li', {}, h('span', {class: 'num'}, n), ' ', r))) : h('span', {class: 'muted'}, 'none')],
    ]));
  const plan = d.plan;
  const planCard = h('div', {class: 'card', id: 'device-plan'}, h('h2', {}, 'Request plan'),
    plan ? [
      h('p', {class: 'sub'}, `every ${fmtMS(plan.interval_ms)}, timeout ${fmtMS(plan.timeout_ms)}, ${plan.requests.length} request${plan.requests.length === 1 ? '' : 's'} per poll`),
      h('ol', {class: 'plan mono small'}, plan.requests.map((r) => h('li', {}, r))),
      plan.bad && plan.bad.length ? h('p', {class: 'problem'}, 'Unreadable ranges (skipped):') : null,
      plan.bad && plan.bad.length ? h('ul', {class: 'plan bad mono small'}, plan.bad.map((b) => h('li', {}, b))) : null,
    ] : h('p', {class: 'muted'}, `No request plan: ${d.protocol === 'opcua' ? 'OPC UA points are read by subscription' : d.protocol === 'mqtt' ? 'MQTT points arrive as messages' : 'the driver does not poll it'}.`));
  const rows = points.map((p) => h('tr', {'data-point': `${p.device}.${p.point}`},
    cell('Point', {class: 'head'}, h('a', {class: 'name', href: '#trend/24h/' + encodeURIComponent(p.device) + ':' + encodeURIComponent(p.point)}, p.point),
      p.description ? h('span', {class: 'sub'}, p.description) : null),
    cell('Value', {class: 'num'}, p.seen ? fmtValue(p.value) : '—', p.unit ? ' ' + p.unit : ''),
    cell('Quality', {}, pill(p.quality || 'none', p.seen ? p.quality : 'no data yet')),
    cell('Source', {class: 'mono small'}, p.source || '')));
  const alertRows = alerts.map((a) => h('tr', {'data-rule': a.rule, 'data-state': a.state},
    cell('Time', {class: 'num nowrap'}, fmtTime(a.time)), cell('State', {}, pill(a.state, a.state)),
    cell('Rule', {class: 'head'}, a.rule), cell('Message', {}, a.message || '')));
  $('device-body').replaceChildren(
    h('div', {class: 'cards'}, status, planCard),
    h('h2', {}, 'Points ', h('small', {}, 'pick one for its 24 h trend')),
    rows.length ? table('rows', ['Point', 'Value', 'Quality', 'Source'], rows) : h('p', {class: 'empty'}, 'No points.'),
    h('h2', {}, 'Recent alerts ', h('a', {class: 'small', href: '#history/' + encodeURIComponent(d.device)}, 'all')),
    alertRows.length ? table('rows', ['Time', 'State', 'Rule', 'Message'], alertRows) : h('p', {class: 'empty'}, 'No alerts.'));
}

// setupConsole is called by app.js's start.
function setupConsole() {
  setupSearch();
  setupTrend();
  setupAlertHistory();
}
