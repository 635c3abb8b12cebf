// mqlink dashboard. Vanilla JS, no libraries, no external requests.
//
// Data: GET /v1/status once at start (and to detect a token requirement), then the
// server-sent events of GET /v1/stream: `status` every second (the same JSON as
// /v1/status) and `topics` every 500 ms (topics that changed since the last tick).
// Rates are computed here from counter deltas; about five minutes of history is kept
// in memory. With tokens configured, fetch sends `Authorization: Bearer` and the
// EventSource, which cannot send headers, passes `?token=`.
'use strict';
(() => {
  const HISTORY_MS = 5 * 60 * 1000;
  const SPARK_SLOTS = 60;
  const TOPIC_RATE_WINDOW_MS = 10 * 1000;
  const STALE_MS = 5000;
  const TOKEN_KEY = 'mqlink.token';
  const THEME_KEY = 'mqlink.theme';

  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat();

  const st = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    status: null,
    prev: null, // {t, c: counters, conn: Map name -> records_in}
    history: [], // {t, accepted, published, acked, spool}
    connRates: new Map(),
    sinkErrors: new Map(), // name -> {n, at}
    topics: new Map(), // topic -> {topic, count, last_payload, last_at, dir, recent: [[t, n]], seenAt}
    firstTopicsTick: true,
    collapsed: new Set(),
    selected: null,
    filter: '',
    es: null,
    stream: 'connecting',
    lastEventAt: 0,
    retryMs: 1000,
    retryTimer: 0,
    treeDirty: true,
    rowEls: new Map(),
    hoverX: null,
  };

  // ---------- formatting ----------
  const fmtInt = (n) => (n == null ? '—' : nf.format(n));
  function fmtRate(r) {
    if (r == null || !isFinite(r)) return '—';
    if (r === 0) return '0';
    if (r < 10) return r.toFixed(1);
    return nf.format(Math.round(r));
  }
  function fmtBytes(b) {
    if (b == null) return '—';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : b.toFixed(b < 10 ? 1 : 0)) + ' ' + u[i];
  }
  function fmtAgo(ms) {
    if (ms == null || !isFinite(ms)) return '';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 1) return 'now';
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm';
    if (s < 86400) return Math.floor(s / 3600) + 'h';
    return Math.floor(s / 86400) + 'd';
  }
  function fmtUptime(s) {
    if (s == null) return '';
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `up ${d}d ${h}h`;
    if (h) return `up ${h}h ${m}m`;
    if (m) return `up ${m}m ${s % 60}s`;
    return `up ${s}s`;
  }
  const plural = (n, one, many) => `${fmtInt(n)} ${n === 1 ? one : many || one + 's'}`;
  const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);
  const escapeHtml = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function setText(e, t) { if (e.textContent !== t) e.textContent = t; }

  // ---------- theme ----------
  function applyTheme(t) {
    if (t) document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
    drawChart();
  }
  applyTheme(localStorage.getItem(THEME_KEY));
  $('theme').addEventListener('click', () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === 'dark'
      : matchMedia('(prefers-color-scheme: dark)').matches;
    const next = dark ? 'light' : 'dark';
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });

  // ---------- connection to mqlink ----------
  function authHeaders(extra) {
    const h = Object.assign({}, extra);
    if (st.token) h.Authorization = 'Bearer ' + st.token;
    return h;
  }

  function setStream(state, why) {
    st.stream = state;
    document.body.dataset.stream = state;
    const s = $('stream');
    s.dataset.state = state;
    setText($('stream-text'), state === 'live' ? 'live' : state === 'connecting' ? 'connecting…' : 'disconnected');
    const banner = $('banner');
    if (state === 'down') {
      banner.textContent = 'disconnected from mqlink' + (why ? ' — ' + why : ' — retrying…');
      banner.hidden = false;
    } else if (state === 'live') {
      banner.hidden = true;
      st.retryMs = 1000;
    }
    renderHealth();
  }

  function showToken(show, msg) {
    const f = $('token-form');
    f.hidden = !show;
    if (show) {
      const l = f.querySelector('label');
      l.textContent = msg || 'This mqlink requires an API token.';
      $('token-input').focus();
    }
  }
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    st.token = $('token-input').value.trim();
    if (st.token) sessionStorage.setItem(TOKEN_KEY, st.token);
    else sessionStorage.removeItem(TOKEN_KEY);
    start();
  });

  function closeStream() {
    if (st.es) { st.es.close(); st.es = null; }
  }
  function scheduleRetry() {
    clearTimeout(st.retryTimer);
    st.retryTimer = setTimeout(start, st.retryMs);
    st.retryMs = Math.min(st.retryMs * 2, 5000);
  }

  async function start() {
    clearTimeout(st.retryTimer);
    closeStream();
    if (st.stream !== 'down') setStream('connecting');
    let r;
    try {
      r = await fetch('/v1/status', { headers: authHeaders(), cache: 'no-store' });
    } catch (e) {
      setStream('down');
      scheduleRetry();
      return;
    }
    if (r.status === 401) {
      showToken(true, st.token ? 'The token was refused. Enter a valid API token.' : 'This mqlink requires an API token.');
      setStream('down', 'an API token is required');
      return;
    }
    if (!r.ok) {
      setStream('down', `GET /v1/status answered ${r.status}`);
      scheduleRetry();
      return;
    }
    showToken(false);
    try { onStatus(await r.json()); } catch (e) { /* the stream will bring the next one */ }
    openStream();
  }

  function openStream() {
    const url = '/v1/stream' + (st.token ? '?token=' + encodeURIComponent(st.token) : '');
    const es = new EventSource(url);
    st.es = es;
    st.firstTopicsTick = true;
    st.lastEventAt = Date.now();
    const alive = () => { st.lastEventAt = Date.now(); if (st.stream !== 'live') setStream('live'); };
    es.addEventListener('open', alive);
    es.addEventListener('status', (e) => {
      alive();
      try { onStatus(JSON.parse(e.data)); } catch (err) { console.error('bad status event', err); }
    });
    es.addEventListener('topics', (e) => {
      alive();
      try { onTopics(JSON.parse(e.data)); } catch (err) { console.error('bad topics event', err); }
    });
    es.addEventListener('error', () => {
      if (st.es !== es) return;
      setStream('down');
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. 401 or not an event stream): start over, which re-checks the token.
        closeStream();
        scheduleRetry();
      }
      // Otherwise the browser reconnects by itself; `open` marks us live again.
    });
  }

  // A stream that stays silent (half-open connection, stalled server) counts as down.
  setInterval(() => {
    if (st.es && st.stream === 'live' && Date.now() - st.lastEventAt > STALE_MS) {
      setStream('down', 'no update for ' + Math.round((Date.now() - st.lastEventAt) / 1000) + ' s, reconnecting…');
      closeStream();
      scheduleRetry();
    }
  }, 1000);

  // ---------- status ----------
  function onStatus(s) {
    const now = Date.now();
    const c = s.counters || {};
    const conns = s.connectors || [];
    if (!st.prev) {
      st.prev = { t: now, c, conn: new Map(conns.map((k) => [k.name, k.records_in || 0])) };
    } else {
      const dt = (now - st.prev.t) / 1000;
      if (dt >= 0.5) {
        const rate = (k) => Math.max(0, ((c[k] || 0) - (st.prev.c[k] || 0)) / dt);
        st.history.push({
          t: now,
          accepted: rate('accepted'),
          published: rate('published'),
          acked: rate('acknowledged'),
          spool: (s.spool && s.spool.records) || 0,
        });
        for (const k of conns) {
          const before = st.prev.conn.get(k.name);
          st.connRates.set(k.name, before == null ? 0 : Math.max(0, ((k.records_in || 0) - before) / dt));
        }
        st.prev = { t: now, c, conn: new Map(conns.map((k) => [k.name, k.records_in || 0])) };
      }
    }
    for (const k of conns) {
      const seen = st.sinkErrors.get(k.name);
      const n = k.sink_errors || 0;
      if (!seen) st.sinkErrors.set(k.name, { n, at: 0 });
      else if (n > seen.n) st.sinkErrors.set(k.name, { n, at: now });
    }
    while (st.history.length && st.history[0].t < now - HISTORY_MS) st.history.shift();
    st.status = s;
    renderStatus();
  }

  const RECENT_ERRORS_MS = 60 * 1000;
  function connectorLevel(k) {
    const e = st.sinkErrors.get(k.name);
    if (e && e.at && Date.now() - e.at < RECENT_ERRORS_MS) return 'bad';
    if (!k.subscribed) return 'warn';
    return 'ok';
  }

  function assess() {
    if (st.stream === 'down' || !st.status) {
      return { level: st.stream === 'down' ? 'bad' : 'unknown', text: st.stream === 'down' ? 'disconnected from mqlink' : 'connecting…' };
    }
    const s = st.status;
    const bad = [], warn = [];
    const b = s.broker || {};
    if (b.state === 'down') bad.push('broker down');
    else if (b.state === 'stopped') bad.push('broker stopped');
    else if (b.state === 'connecting') warn.push('connecting to broker');
    if (s.accepting === false) bad.push('not accepting events');
    const sp = s.spool || {};
    const fill = sp.max_bytes ? sp.bytes / sp.max_bytes : 0;
    if (fill >= 0.9) bad.push(`spool ${Math.round(fill * 100)}% full`);
    else if (fill >= 0.5) warn.push(`spool ${Math.round(fill * 100)}% full`);
    for (const k of s.connectors || []) {
      const l = connectorLevel(k);
      if (l === 'bad') warn.push(`${k.name}: sink errors`);
      else if (l === 'warn' && b.state === 'connected') warn.push(`${k.name}: not subscribed`);
    }
    if (bad.length) return { level: 'bad', text: bad.concat(warn).join(' · ') };
    if (warn.length) return { level: 'warn', text: warn.join(' · ') };
    return { level: 'ok', text: 'Healthy' };
  }

  function renderHealth() {
    const h = assess();
    const box = $('health');
    box.dataset.level = h.level;
    setText($('health-text'), h.text);
    document.title = (h.level === 'ok' ? '● ' : h.level === 'unknown' ? '' : '▲ ') + 'mqlink · ' + h.text;
  }

  function avgRate(key, n) {
    const h = st.history.slice(-n);
    if (!h.length) return null;
    return h.reduce((a, x) => a + x[key], 0) / h.length;
  }

  function renderStatus() {
    const s = st.status;
    if (!s) return;
    setText($('version'), s.version ? 'v' + s.version : '');
    setText($('uptime'), fmtUptime(s.uptime_s));

    const b = s.broker || {};
    const bl = b.state === 'connected' ? 'ok' : b.state === 'connecting' ? 'warn' : 'bad';
    $('card-broker').dataset.level = bl;
    setText($('broker-state'), cap(b.state || 'unknown'));
    setText($('broker-url'), b.url || '—');
    setText($('broker-detail'), b.detail || '');
    $('broker-url').title = b.url || '';
    $('broker-detail').title = b.detail || '';

    const sp = s.spool || {};
    const fill = sp.max_bytes ? Math.min(1, sp.bytes / sp.max_bytes) : 0;
    const sl = fill >= 0.9 || s.accepting === false ? 'bad' : fill >= 0.5 ? 'warn' : 'ok';
    $('card-spool').dataset.level = sl;
    setText($('spool-records'), fmtInt(sp.records));
    setText($('spool-unit'), sp.records === 1 ? 'record' : 'records');
    setText($('spool-bytes'), fmtBytes(sp.bytes));
    setText($('spool-max'), fmtBytes(sp.max_bytes));
    setText($('accepting'), s.accepting === false ? 'NOT accepting' : 'accepting');
    const f = $('spool-fill');
    f.style.width = Math.max(fill > 0 ? 1 : 0, fill * 100).toFixed(1) + '%';
    f.dataset.level = sl;
    setText($('spool-dir'), sp.dir ? 'spool ' + sp.dir : '');

    const c = s.counters || {};
    setText($('rate-accepted'), fmtRate(avgRate('accepted', 5)));
    setText($('rate-published'), fmtRate(avgRate('published', 5)));
    setText($('total-accepted'), fmtInt(c.accepted));
    setText($('total-rejected'), fmtInt(c.rejected));
    setText($('total-published'), fmtInt(c.published));
    setText($('total-acked'), fmtInt(c.acknowledged));
    setText($('total-dead'), fmtInt(c.dead_lettered));
    spark($('spark-accepted'), 'accepted');
    spark($('spark-published'), 'published');

    renderConnectors(s.connectors || []);
    renderRoutes(s.routes || []);
    renderHealth();
    drawChart();
  }

  function spark(svg, key) {
    const pts = st.history.slice(-SPARK_SLOTS).map((h) => h[key]);
    const max = Math.max(1, ...pts);
    const off = SPARK_SLOTS - pts.length;
    const xy = pts.map((v, i) => [((off + i) / (SPARK_SLOTS - 1)) * 100, 23 - (v / max) * 21]);
    if (xy.length < 2) { svg.innerHTML = ''; return; }
    const line = xy.map(([x, y]) => x.toFixed(2) + ',' + y.toFixed(2)).join(' ');
    const area = `${xy[0][0].toFixed(2)},24 ${line} ${xy[xy.length - 1][0].toFixed(2)},24`;
    svg.innerHTML = `<polygon points="${area}"></polygon><polyline points="${line}"></polyline>`;
  }

  function renderConnectors(list) {
    const body = $('connectors').tBodies[0];
    body.textContent = '';
    const bad = list.filter((k) => connectorLevel(k) !== 'ok').length;
    setText($('conn-summary'), list.length ? `${list.length} configured${bad ? ` · ${bad} need attention` : ''}` : '');
    if (!list.length) {
      const tr = el('tr', 'empty-row');
      const td = el('td', null, 'No connectors configured.');
      td.colSpan = 10;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const k of list) {
      const tr = el('tr');
      const level = connectorLevel(k);
      tr.dataset.level = level;
      tr.dataset.connector = k.name;
      const dot = el('td'); dot.append(el('span', 'dot'));
      const sink = el('td', 'mono', k.sink || '');
      sink.title = k.sink || '';
      const recentErr = level === 'bad';
      tr.append(
        dot,
        el('td', null, k.name),
        sink,
        el('td', k.subscribed ? null : 'warn', k.subscribed ? 'yes' : 'no'),
        el('td', 'num', fmtInt(k.records_in)),
        el('td', 'num', fmtRate(st.connRates.get(k.name))),
        el('td', 'num', fmtInt(k.records_out)),
        el('td', 'num', fmtInt(k.filtered)),
        el('td', 'num' + (k.dead_lettered ? ' warn' : ''), fmtInt(k.dead_lettered)),
        el('td', 'num' + (recentErr ? ' bad' : k.sink_errors ? ' warn' : ''), fmtInt(k.sink_errors)),
      );
      body.append(tr);
    }
  }

  let routesKey = '';
  function renderRoutes(list) {
    const key = JSON.stringify(list);
    if (key === routesKey) return;
    routesKey = key;
    const body = $('routes').tBodies[0];
    body.textContent = '';
    const on = list.filter((r) => r.enabled !== false).length;
    setText($('route-summary'), list.length ? `${on} of ${list.length} enabled` : '');
    if (!list.length) {
      const tr = el('tr', 'empty-row');
      const td = el('td', null, 'No routes configured.');
      td.colSpan = 6;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const r of list) {
      const tr = el('tr', r.enabled === false ? 'off' : null);
      tr.dataset.level = r.enabled === false ? 'off' : 'ok';
      const dot = el('td'); dot.append(el('span', 'dot'));
      tr.append(
        dot,
        el('td', null, r.name || ''),
        el('td', 'mono', (r.match || []).join(', ')),
        el('td', 'mono', r.topic || ''),
        el('td', 'num', r.qos == null ? '' : String(r.qos)),
        el('td', null, r.retain ? 'yes' : 'no'),
      );
      body.append(tr);
    }
  }

  // ---------- chart ----------
  // A "nice" step (1, 2 or 5 times a power of ten) so that four steps cover v.
  function niceStep(v) {
    const raw = Math.max(v, 1) / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * p) return Math.max(m * p, 0.25);
    return 10 * p;
  }

  function drawChart() {
    const cv = $('chart');
    if (!cv) return;
    const w = cv.clientWidth, h = cv.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
      cv.width = Math.round(w * dpr);
      cv.height = Math.round(h * dpr);
    }
    const g = cv.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const col = (n) => css.getPropertyValue(n).trim();
    const L = 48, R = 8, T = 8, B = 20;
    const pw = w - L - R, ph = h - T - B;
    const now = Date.now();
    const hist = st.history;
    const step = niceStep(Math.max(1, ...hist.map((x) => Math.max(x.accepted, x.published, x.acked))));
    const max = step * 4;
    const X = (t) => L + pw - ((now - t) / HISTORY_MS) * pw;
    const Y = (v) => T + ph - (v / max) * ph;

    g.font = '11px ' + col('--sans');
    g.lineWidth = 1;
    g.strokeStyle = col('--border');
    g.fillStyle = col('--muted');
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const v = step * i;
      const y = Math.round(Y(v)) + 0.5;
      g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
      g.fillText(fmtRate(v) + '/s', L - 6, y);
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (let m = 5; m >= 0; m--) {
      const x = L + pw - (m / 5) * pw;
      g.textAlign = m === 0 ? 'right' : m === 5 ? 'left' : 'center';
      g.fillText(m === 0 ? 'now' : `-${m}m`, x, T + ph + 6);
    }
    if (hist.length < 2) {
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(st.status ? 'collecting…' : 'waiting for mqlink…', L + pw / 2, T + ph / 2);
      return;
    }
    const series = [['acked', '--c-acked', false], ['published', '--c-published', false], ['accepted', '--c-accepted', true]];
    g.save();
    g.beginPath(); g.rect(L, T - 2, pw, ph + 4); g.clip();
    for (const [key, c, fill] of series) {
      const color = col(c);
      g.beginPath();
      hist.forEach((p, i) => (i ? g.lineTo(X(p.t), Y(p[key])) : g.moveTo(X(p.t), Y(p[key]))));
      g.strokeStyle = color;
      g.lineWidth = key === 'acked' ? 1.25 : 1.75;
      g.lineJoin = 'round';
      if (key === 'acked') g.setLineDash([4, 3]); else g.setLineDash([]);
      g.stroke();
      if (fill) {
        g.lineTo(X(hist[hist.length - 1].t), Y(0));
        g.lineTo(X(hist[0].t), Y(0));
        g.closePath();
        g.globalAlpha = 0.12;
        g.fillStyle = color;
        g.fill();
        g.globalAlpha = 1;
      }
    }
    g.setLineDash([]);
    g.restore();

    const tip = $('chart-tip');
    if (st.hoverX != null && st.hoverX >= L && st.hoverX <= L + pw) {
      let best = null;
      for (const p of hist) if (!best || Math.abs(X(p.t) - st.hoverX) < Math.abs(X(best.t) - st.hoverX)) best = p;
      const x = X(best.t);
      g.strokeStyle = col('--muted');
      g.beginPath(); g.moveTo(x + 0.5, T); g.lineTo(x + 0.5, T + ph); g.stroke();
      tip.innerHTML =
        `<b>${fmtAgo(now - best.t) === 'now' ? 'now' : fmtAgo(now - best.t) + ' ago'}</b><br>` +
        `accepted ${fmtRate(best.accepted)}/s<br>published ${fmtRate(best.published)}/s<br>` +
        `acknowledged ${fmtRate(best.acked)}/s<br>spool ${fmtInt(best.spool)} records`;
      tip.hidden = false;
      const left = x + 12 + tip.offsetWidth > w ? x - 12 - tip.offsetWidth : x + 12;
      tip.style.left = left + 'px';
    } else {
      tip.hidden = true;
    }
  }
  $('chart').addEventListener('mousemove', (e) => {
    st.hoverX = e.offsetX;
    drawChart();
  });
  $('chart').addEventListener('mouseleave', () => {
    st.hoverX = null;
    drawChart();
  });
  window.addEventListener('resize', drawChart);

  // ---------- topics ----------
  function onTopics(list) {
    const now = Date.now();
    const snapshot = st.firstTopicsTick;
    st.firstTopicsTick = false;
    for (const u of list) {
      if (!u || typeof u.topic !== 'string') continue;
      let t = st.topics.get(u.topic);
      const isNew = !t;
      if (!t) {
        t = { topic: u.topic, count: 0, recent: [], seenAt: 0 };
        st.topics.set(u.topic, t);
      }
      const delta = (u.count || 0) - t.count;
      // The first tick after (re)connecting may carry totals from before: no rate for those.
      if (delta > 0 && !(snapshot && isNew)) t.recent.push([now, delta]);
      t.count = u.count || 0;
      t.last_payload = u.last_payload == null ? '' : String(u.last_payload);
      t.last_at = u.last_at;
      t.dir = u.dir;
      t.seenAt = now;
    }
    st.treeDirty = true;
    renderTree();
    if (st.selected && st.topics.has(st.selected)) renderDetail();
  }

  function topicRate(t, now) {
    while (t.recent.length && t.recent[0][0] < now - TOPIC_RATE_WINDOW_MS) t.recent.shift();
    let n = 0;
    for (const [, d] of t.recent) n += d;
    return n / (TOPIC_RATE_WINDOW_MS / 1000);
  }

  function buildTree(now) {
    const root = { name: '', path: '', children: new Map(), own: null };
    const filter = st.filter.toLowerCase();
    for (const t of st.topics.values()) {
      if (filter && !t.topic.toLowerCase().includes(filter)) continue;
      const segs = t.topic.split('/');
      let n = root;
      let path = '';
      segs.forEach((seg, i) => {
        path = i ? path + '/' + seg : seg;
        let c = n.children.get(seg);
        if (!c) { c = { name: seg, path, children: new Map(), own: null }; n.children.set(seg, c); }
        n = c;
      });
      n.own = t;
    }
    (function agg(n) {
      n.count = 0; n.rate = 0; n.last = 0; n.seen = 0; n.topics = 0; n.dirs = new Set();
      if (n.own) {
        n.count += n.own.count; n.rate += topicRate(n.own, now); n.last = n.own.last_at || 0;
        n.seen = n.own.seenAt; n.topics = 1; if (n.own.dir) n.dirs.add(n.own.dir);
      }
      for (const c of n.children.values()) {
        agg(c);
        n.count += c.count; n.rate += c.rate; n.last = Math.max(n.last, c.last);
        n.seen = Math.max(n.seen, c.seen); n.topics += c.topics; for (const d of c.dirs) n.dirs.add(d);
      }
    })(root);
    return root;
  }

  const collator = new Intl.Collator(undefined, { numeric: true });
  function visibleRows(root) {
    const out = [];
    const walk = (n, depth) => {
      const kids = [...n.children.values()].sort((a, b) => collator.compare(a.name, b.name));
      for (const c of kids) {
        out.push([c, depth]);
        if (c.children.size && (st.filter || !st.collapsed.has(c.path))) walk(c, depth + 1);
      }
    };
    walk(root, 0);
    return out;
  }

  function preview(p) {
    if (!p) return '';
    const one = p.replace(/\s+/g, ' ').trim();
    return one.length > 90 ? one.slice(0, 90) + '…' : one;
  }

  function makeRow(path) {
    const r = el('div', 'node');
    r.setAttribute('role', 'treeitem');
    r.dataset.path = path;
    const label = el('span', 'label');
    r._twisty = el('span', 'twisty');
    r._seg = el('span', 'seg');
    r._badge = el('span', 'badge');
    r._peek = el('span', 'peek');
    label.append(r._twisty, r._seg, r._badge, r._peek);
    r._rate = el('span', 'num rate');
    r._count = el('span', 'num count');
    r._ago = el('span', 'ago');
    r.append(label, r._rate, r._count, r._ago);
    return r;
  }

  function renderTree() {
    const now = Date.now();
    const root = buildTree(now);
    const rows = visibleRows(root);
    const box = $('topics');
    $('topics-empty').hidden = st.topics.size > 0;
    if (st.topics.size && !rows.length) {
      $('topics-empty').hidden = false;
      $('topics-empty').textContent = 'No topic matches the filter.';
    } else {
      $('topics-empty').textContent = 'No traffic yet. Messages published by mqlink and received by connectors appear here.';
    }
    const total = root.count;
    setText($('topic-summary'), st.topics.size ? `${plural(st.topics.size, 'topic')} · ${plural(total, 'message')} · ${fmtRate(root.rate)}/s` : '');

    const keep = new Set();
    let prev = $('topics-empty');
    for (const [n, depth] of rows) {
      keep.add(n.path);
      let r = st.rowEls.get(n.path);
      if (!r) { r = makeRow(n.path); st.rowEls.set(n.path, r); }
      const branch = n.children.size > 0;
      const collapsed = branch && !st.filter && st.collapsed.has(n.path);
      r.classList.toggle('branch', branch);
      r.classList.toggle('collapsed', collapsed);
      r.classList.toggle('selected', !!n.own && n.own.topic === st.selected);
      if (branch) r.setAttribute('aria-expanded', String(!collapsed)); else r.removeAttribute('aria-expanded');
      if (n.own) r.dataset.topic = n.own.topic; else delete r.dataset.topic;
      r.style.paddingLeft = 8 + depth * 18 + 'px';
      setText(r._twisty, branch ? '▼' : '');
      setText(r._seg, n.name === '' ? '∅' : n.name);
      r._seg.title = n.path;
      const dir = n.own ? n.own.dir : '';
      setText(r._badge, dir || '');
      r._badge.className = 'badge ' + (dir || '');
      r._badge.hidden = !dir;
      r._badge.title = dir === 'in' ? 'received by a connector' : dir === 'out' ? 'published by mqlink' : '';
      setText(r._peek, n.own ? preview(n.own.last_payload) : plural(n.topics, 'topic'));
      setText(r._rate, fmtRate(n.rate));
      r._rate.classList.toggle('hot', n.rate > 0);
      setText(r._count, fmtInt(n.count));
      setText(r._ago, n.last ? fmtAgo(now - n.last) : '');
      if (n.seen && n.seen !== r._seen) {
        if (r._seen) { r.classList.remove('flash'); void r.offsetWidth; r.classList.add('flash'); }
        r._seen = n.seen;
      }
      if (prev.nextSibling !== r) box.insertBefore(r, prev.nextSibling);
      prev = r;
    }
    for (const [path, r] of st.rowEls) {
      if (!keep.has(path)) { r.remove(); st.rowEls.delete(path); }
    }
    st.treeDirty = false;
  }

  $('topics').addEventListener('click', (e) => {
    const r = e.target.closest('.node');
    if (!r) return;
    const path = r.dataset.path;
    const branch = r.classList.contains('branch');
    if (branch && (e.target.classList.contains('twisty') || !r.dataset.topic)) {
      if (st.collapsed.has(path)) st.collapsed.delete(path); else st.collapsed.add(path);
    } else if (r.dataset.topic) {
      st.selected = r.dataset.topic;
      renderDetail();
    }
    renderTree();
  });
  $('topic-filter').addEventListener('input', (e) => { st.filter = e.target.value.trim(); renderTree(); });
  $('expand-all').addEventListener('click', () => { st.collapsed.clear(); renderTree(); });
  $('collapse-all').addEventListener('click', () => {
    for (const t of st.topics.keys()) {
      const segs = t.split('/');
      for (let i = 1; i < segs.length; i++) st.collapsed.add(segs.slice(0, i).join('/'));
    }
    renderTree();
  });

  function highlightJson(text) {
    return escapeHtml(text).replace(
      /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b/g,
      (m, str, colon, lit) => {
        if (str) return colon ? `<span class="k">${str}</span>${colon}` : `<span class="s">${str}</span>`;
        if (lit) return `<span class="l">${m}</span>`;
        return `<span class="n">${m}</span>`;
      },
    );
  }

  function renderDetail() {
    const t = st.topics.get(st.selected);
    const head = $('detail-topic');
    const pre = $('detail-payload');
    if (!t) {
      head.classList.remove('set');
      head.textContent = 'Select a topic to see its last payload.';
      pre.textContent = '';
      setText($('detail-meta'), '');
      return;
    }
    head.classList.add('set');
    setText(head, t.topic);
    const p = t.last_payload || '';
    let pretty = null;
    try {
      const v = JSON.parse(p);
      if (v !== null && typeof v === 'object') pretty = JSON.stringify(v, null, 2);
    } catch (e) { /* not JSON */ }
    if (pretty != null) pre.innerHTML = highlightJson(pretty);
    else pre.textContent = p === '' ? '(empty payload)' : p;
    pre.dataset.topic = t.topic;
    const size = new TextEncoder().encode(p).length;
    const meta = [
      t.dir === 'in' ? 'in (connector)' : t.dir === 'out' ? 'out (published)' : '',
      plural(t.count, 'message'),
      t.last_at ? new Date(t.last_at).toLocaleTimeString() : '',
      size >= 1024 ? 'first 1 KiB' : fmtBytes(size),
    ].filter(Boolean);
    setText($('detail-meta'), meta.join(' · '));
  }

  // ---------- publish form ----------
  $('publish').addEventListener('submit', async (e) => {
    e.preventDefault();
    const out = $('pub-result');
    const body = {
      topic: $('pub-topic').value.trim(),
      payload: $('pub-payload').value,
      qos: Number($('pub-qos').value),
      retain: $('pub-retain').checked,
    };
    const show = (ok, html) => {
      out.className = 'result ' + (ok ? 'ok' : 'err');
      out.innerHTML = html;
      out.hidden = false;
    };
    $('pub-send').disabled = true;
    try {
      const r = await fetch('/v1/publish', {
        method: 'POST',
        headers: authHeaders({ 'Content-Type': 'application/json' }),
        body: JSON.stringify(body),
      });
      const text = await r.text();
      let j = null;
      try { j = JSON.parse(text); } catch (err) { /* not JSON */ }
      if (r.ok) {
        show(true, `${r.status} accepted · <code>${escapeHtml(JSON.stringify(j != null ? j : text))}</code>`);
        st.selected = body.topic;
      } else if (j && j.error) {
        show(false, `${r.status} <b>${escapeHtml(String(j.error.code))}</b>: ${escapeHtml(String(j.error.message))}`);
        if (r.status === 401) showToken(true, 'The API needs a token to publish.');
      } else {
        show(false, `${r.status} <code>${escapeHtml(text.slice(0, 300))}</code>`);
      }
    } catch (err) {
      show(false, 'request failed: ' + escapeHtml(String(err.message || err)));
    } finally {
      $('pub-send').disabled = false;
    }
  });

  // Relative times and decaying rates move even when nothing arrives.
  setInterval(() => { if (st.topics.size) renderTree(); }, 1000);

  start();
})();
