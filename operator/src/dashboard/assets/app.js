'use strict';
// The SRE-Space dashboard. Every string from the server is cluster data and
// goes into the page as text (textContent, text nodes), never as markup;
// links are set as properties, and only when they are http(s).
(function () {
  const errors = [];
  // Read by the browser test: the page must run without a script error.
  window.dashboardErrors = errors;
  // Capture phase: a resource that fails to load reports here too.
  window.addEventListener('error', (e) => errors.push(String(e.message || (e.target && e.target.src) || 'error')), true);
  window.addEventListener('unhandledrejection', (e) => errors.push(String(e.reason)));
  document.addEventListener('securitypolicyviolation', (e) => errors.push('CSP: ' + e.violatedDirective));

  const SVG = 'http://www.w3.org/2000/svg';
  const params = new URLSearchParams(location.search);
  // Kept for the event stream and the links between pages: a browser's
  // EventSource cannot send an Authorization header.
  const token = params.get('token') || '';
  const app = document.getElementById('app');
  const live = document.getElementById('live');
  const where = document.getElementById('where');

  const route = (function () {
    const m = location.pathname.match(/^\/incidents\/([^/]+)\/([^/]+)$/);
    if (!m) return { page: 'overview' };
    return { page: 'incident', namespace: decodeURIComponent(m[1]), name: decodeURIComponent(m[2]) };
  })();

  function url(path, extra) {
    const u = new URL(path, location.origin);
    if (token) u.searchParams.set('token', token);
    for (const [k, v] of Object.entries(extra || {})) u.searchParams.set(k, v);
    return u.pathname + u.search;
  }

  function incidentPath(ns, name) {
    return url('/incidents/' + encodeURIComponent(ns) + '/' + encodeURIComponent(name));
  }

  function el(tag, props, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') n.className = v;
      else if (k.startsWith('data-')) n.setAttribute(k, String(v));
      else n[k] = v;
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      n.append(c instanceof Node ? c : String(c));
    }
    return n;
  }

  function svg(tag, attrs, ...children) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    for (const c of children) n.append(c instanceof Node ? c : String(c));
    return n;
  }

  function badge(value, field) {
    const v = value === undefined || value === null ? 'None' : String(value);
    return el('span', { class: 'badge b-' + v.replace(/[^A-Za-z]/g, ''), 'data-field': field }, v);
  }

  // Only http(s) links from the server become hrefs.
  function link(l) {
    if (!l || typeof l.url !== 'string' || !/^https?:\/\//i.test(l.url)) return null;
    return el('a', { href: l.url, target: '_blank', rel: 'noopener noreferrer' }, l.label);
  }

  // A cited runbook (source configmap/<name>/<key>) opens as plain text on
  // this server.
  function runbookLink(ns, source) {
    const m = /^configmap\/([^/]+)\/([^/]+)$/.exec(source || '');
    if (!m) return null;
    const path = '/runbooks/' + [ns, m[1], m[2]].map(encodeURIComponent).join('/');
    return el('a', { href: url(path), target: '_blank', rel: 'noopener noreferrer' }, 'runbook');
  }

  function age(since) {
    if (!since) return '';
    const s = Math.max(0, Math.floor((Date.now() - Date.parse(since)) / 1000));
    if (s < 120) return s + 's';
    if (s < 7200) return Math.floor(s / 60) + 'm';
    if (s < 172800) return Math.floor(s / 3600) + 'h';
    return Math.floor(s / 86400) + 'd';
  }

  function ageCell(since) {
    return el('span', { 'data-since': since || '' }, age(since));
  }

  function clock(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }

  function pct(x) {
    return typeof x === 'number' ? Math.round(x * 100) + '%' : '';
  }

  function table(headers, rows, empty) {
    if (!rows.length) return el('p', { class: 'empty' }, empty);
    return el('table', {},
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows));
  }

  function section(title, ...children) {
    return el('section', {}, el('h2', {}, title), children);
  }

  // The conversion ratio over time against its minimum: an inline SVG.
  function chart(series) {
    const W = 960, H = 240, L = 44, R = 12, T = 12, B = 26;
    const pts = series.points || [];
    const root = svg('svg', {
      viewBox: `0 0 ${W} ${H}`, role: 'img',
      'data-series': `${series.namespace}/${series.policy}/${series.workload}`,
      'data-points': pts.length,
    });
    root.append(svg('title', {}, `Conversion rate of ${series.workload}`));
    const t0 = pts.length ? pts[0].t : 0;
    const t1 = pts.length ? pts[pts.length - 1].t : 1;
    let top = 0;
    for (const p of pts) top = Math.max(top, p.value, p.threshold || 0);
    if (typeof series.threshold === 'number') top = Math.max(top, series.threshold);
    top = top > 0 ? top * 1.15 : 1;
    const x = (t) => L + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - L - R) : (W - L - R) / 2);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    root.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
    root.append(svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
    root.append(svg('text', { x: 4, y: y(0) + 4 }, '0'));
    root.append(svg('text', { x: 4, y: y(top / 1.15) + 4 }, (top / 1.15).toFixed(2)));
    if (!pts.length) {
      root.append(svg('text', { x: W / 2 - 70, y: H / 2 }, 'no measurement yet'));
      return root;
    }
    root.append(svg('text', { x: L, y: H - 6 }, new Date(t0).toLocaleTimeString()));
    root.append(svg('text', { x: W - R - 60, y: H - 6 }, new Date(t1).toLocaleTimeString()));
    const th = pts.filter((p) => typeof p.threshold === 'number');
    if (th.length) {
      root.append(svg('polyline', {
        class: 'threshold', 'data-role': 'threshold',
        points: th.map((p) => `${x(p.t).toFixed(1)},${y(p.threshold).toFixed(1)}`).join(' '),
      }));
    }
    root.append(svg('polyline', {
      class: 'value', 'data-role': 'value',
      points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`).join(' '),
    }));
    const last = pts[pts.length - 1];
    root.append(svg('circle', { class: 'dot', cx: x(last.t), cy: y(last.value), r: 3.5 }));
    return root;
  }

  function conversionSection(snap) {
    const cards = (snap.conversion || []).map((s) => el('div', { class: 'chart' },
      el('h3', {}, `${s.namespace}/${s.workload} `, badge(s.verdict, 'verdict'),
        el('span', { class: 'muted' }, ` policy ${s.policy}`)),
      el('div', { class: 'summary' }, s.summary),
      chart(s)));
    return section('Conversion rate',
      cards.length ? el('div', { class: 'grid' }, cards)
        : el('p', { class: 'empty' }, 'No ConversionRate trigger is being measured.'));
  }

  function servicesSection(snap) {
    const rows = (snap.services || []).map((s) => el('tr', { 'data-service': `${s.namespace}/${s.workload}` },
      el('td', {}, s.workload), el('td', { class: 'muted' }, s.namespace),
      el('td', {}, badge(s.status, 'status')),
      el('td', {}, `${s.readyPods}/${s.pods}`),
      el('td', {}, s.checks.map((c) => el('div', {}, badge(c.verdict), ' ', c.summary)))));
    return section('Service health',
      table(['Workload', 'Namespace', 'Status', 'Ready pods', 'Health checks'], rows,
        'No workload covered by a policy yet.'));
  }

  function incidentsSection(snap) {
    const rows = (snap.incidents || []).map((i) => el('tr', { 'data-incident': `${i.namespace}/${i.name}` },
      el('td', {}, el('a', { href: incidentPath(i.namespace, i.name) }, i.name)),
      el('td', { class: 'muted' }, i.namespace),
      el('td', {}, badge(i.phase, 'phase')),
      el('td', {}, i.target),
      el('td', {}, i.signal),
      el('td', {}, i.category || ''),
      el('td', {}, ageCell(i.detectedAt)),
      el('td', { class: 'muted' }, i.lastAction || '')));
    return section('Incidents',
      table(['Incident', 'Namespace', 'Phase', 'Target', 'Signal', 'Category', 'Age', 'Last action'],
        rows, 'No incidents.'));
  }

  function renderOverview(snap) {
    where.textContent = 'overview';
    app.replaceChildren(conversionSection(snap), servicesSection(snap), incidentsSection(snap));
  }

  let memory = null;
  let memoryFor = null;

  // The memory is written when an episode ends, a moment after the phase
  // changes: read again on each change of the incident's course, and on a
  // heartbeat while an ended incident has no history yet.
  function loadMemory(key) {
    if (memoryFor === key) return;
    memoryFor = key;
    const path = `/api/incidents/${encodeURIComponent(route.namespace)}/${encodeURIComponent(route.name)}/memory`;
    fetch(url(path)).then(async (res) => {
      memory = res.ok ? await res.json() : { error: `${res.status}: ${await res.text()}` };
      if (lastSnapshot) render(lastSnapshot);
    }).catch((e) => { memory = { error: String(e) }; });
  }

  function memorySection() {
    if (!memory) return section('Memory', el('p', { class: 'muted' }, 'Loading…'));
    if (memory.error) return section('Memory', el('p', { class: 'empty' }, memory.error));
    const own = memory.own;
    const parts = [];
    if (own) {
      parts.push(el('p', {}, `${own.totalOccurrences} occurrence(s) of this problem; best action: `,
        own.bestAction || 'none yet'));
      parts.push(table(['Incident', 'Detected', 'Category', 'Actions', 'Outcome', 'Time to mitigate'],
        own.occurrences.map((o) => el('tr', {}, el('td', {}, o.incident), el('td', {}, clock(o.detectedAt)),
          el('td', {}, o.category || ''), el('td', {}, o.actions.join(', ')),
          el('td', {}, o.outcome ? badge(o.outcome) : ''),
          el('td', {}, o.timeToMitigateSeconds != null ? o.timeToMitigateSeconds + ' s' : ''))), ''));
      parts.push(el('p', { class: 'muted' }, own.actions.map((t) =>
        `${t.type}: ${t.effective} effective, ${t.ineffective} ineffective`).join(' · ')));
    } else {
      parts.push(el('p', { class: 'empty' }, 'No history of this problem yet (written when an episode ends).'));
    }
    parts.push(el('h3', {}, 'Similar past incidents'));
    parts.push(table(['Memory', 'Target', 'Signal', 'Similarity', 'Shared terms', 'Best action', 'Occurrences'],
      memory.similar.map((s) => el('tr', {}, el('td', {}, s.name), el('td', {}, s.target),
        el('td', {}, s.signal), el('td', {}, pct(s.score)), el('td', { class: 'mono' }, s.shared.join(', ')),
        el('td', {}, s.bestAction || ''), el('td', {}, s.totalOccurrences))),
      'None found in this namespace.'));
    return section('Memory', parts);
  }

  function renderIncident(snap) {
    where.textContent = `${route.namespace}/${route.name}`;
    const i = snap.incident;
    if (!i) {
      app.replaceChildren(section('Incident',
        el('p', { class: 'empty' }, `No incident ${route.namespace}/${route.name} in the operator's store.`),
        el('a', { href: url('/') }, 'Back to the overview')));
      return;
    }
    loadMemory([i.phase, i.actions.length, i.resolvedAt, Boolean(i.postMortem)].join('|'));
    const d = i.diagnosis;
    const head = el('section', { 'data-incident': `${i.namespace}/${i.name}` },
      el('h1', {}, i.name, badge(i.phase, 'phase')),
      el('dl', { class: 'kv' },
        el('dt', {}, 'Target'), el('dd', {}, i.target),
        el('dt', {}, 'Signal'), el('dd', {}, i.signal),
        el('dt', {}, 'Policy'), el('dd', {}, i.policy),
        el('dt', {}, 'Detected'), el('dd', {}, clock(i.detectedAt), ' (', ageCell(i.detectedAt), ' ago)'),
        el('dt', {}, 'Occurrences'), el('dd', {}, i.occurrences),
        i.resolvedAt ? [el('dt', {}, 'Resolved'), el('dd', {}, clock(i.resolvedAt))] : null,
        i.escalationReason ? [el('dt', {}, 'Escalated'), el('dd', {}, i.escalationReason)] : null,
        el('dt', {}, 'Last signal'), el('dd', {}, i.lastSignal || ''),
        el('dt', {}, 'GitHub'), el('dd', { class: 'links' },
          i.issue ? link(i.issue) : el('span', { class: 'muted' }, 'no issue'),
          i.pullRequests.map(link))));
    const timeline = section('Timeline', el('ol', { class: 'timeline' }, i.timeline.map((t) =>
      el('li', {}, el('span', { class: 'when' }, clock(t.at)), el('strong', {}, t.title),
        t.detail ? el('div', { class: 'muted' }, t.detail) : null))));
    const diagnosis = d ? section('Diagnosis',
      el('p', {}, el('strong', {}, d.category), ` (${pct(d.confidence)}, ${d.analyzer}): `, d.rootCause),
      d.proposedAction ? el('p', { class: 'muted' }, `Proposed action: ${d.proposedAction}`) : null,
      el('h3', {}, 'Hypotheses'),
      table(['Category', 'Statement', 'Confidence', 'Evidence', 'Action'], d.hypotheses.map((h) =>
        el('tr', {}, el('td', {}, h.category), el('td', {}, h.statement), el('td', {}, pct(h.confidence)),
          el('td', { class: 'mono' }, h.evidence.join(', ')), el('td', {}, h.proposedAction || ''))), 'None.'),
      el('h3', {}, 'Evidence'),
      table(['Id', 'Kind', 'Source', 'Fact', 'Traces'], d.evidence.map((e) =>
        el('tr', {}, el('td', { class: 'mono' }, e.id), el('td', {}, e.kind), el('td', { class: 'mono' }, e.source),
          el('td', {}, e.summary), el('td', { class: 'links' }, e.traces.map(link),
            e.kind === 'Runbook' ? runbookLink(i.namespace, e.source) : null))), 'None.'))
      : section('Diagnosis', el('p', { class: 'empty' }, 'Not diagnosed yet.'));
    const actions = section('Actions', table(
      ['Action', 'State', 'Outcome', 'Target', 'Change', 'Recorded', 'Finished', 'Detail'],
      i.actions.map((a) => el('tr', { 'data-action': a.id },
        el('td', {}, a.type), el('td', {}, badge(a.state, 'state')),
        el('td', {}, a.outcome ? badge(a.outcome, 'outcome') : ''),
        el('td', { class: 'mono' }, a.target || ''),
        el('td', {}, a.from || a.to ? `${a.from || '?'} → ${a.to || '?'}` : ''),
        el('td', {}, clock(a.recordedAt)), el('td', {}, clock(a.finishedAt)),
        el('td', {}, a.detail, a.pullRequest ? [' ', link(a.pullRequest)] : null))),
      'No action yet.'));
    const conditions = section('Conditions', table(['Type', 'Status', 'Reason', 'Message', 'Since'],
      i.conditions.map((c) => el('tr', {}, el('td', {}, c.type), el('td', {}, badge(c.status)),
        el('td', {}, c.reason), el('td', {}, c.message), el('td', {}, clock(c.at)))), 'None.'));
    const extra = [];
    if (i.postMortem) extra.push(section('Post-mortem', el('pre', { 'data-field': 'postMortem' }, i.postMortem)));
    if (i.issuePreview) extra.push(section('GitHub issue (preview: no credentials configured)', el('pre', {}, i.issuePreview)));
    app.replaceChildren(head, timeline, diagnosis, actions, conditions, ...extra, memorySection(),
      el('p', {}, el('a', { href: url('/') }, '← All incidents')));
  }

  let lastSnapshot = null;

  function render(snap) {
    lastSnapshot = snap;
    if (route.page === 'incident') renderIncident(snap);
    else renderOverview(snap);
  }

  document.getElementById('home').href = url('/');
  setInterval(() => {
    for (const n of document.querySelectorAll('[data-since]')) n.textContent = age(n.getAttribute('data-since'));
  }, 1000);

  const extra = route.page === 'incident' ? { incident: `${route.namespace}/${route.name}` } : {};
  const source = new EventSource(url('/events', extra));
  source.addEventListener('open', () => { live.dataset.state = 'live'; live.textContent = 'live'; });
  source.addEventListener('error', () => {
    // A refused stream (a wrong token, too many dashboards open) is not
    // retried by the browser; a dropped one is.
    const closed = source.readyState === EventSource.CLOSED;
    live.dataset.state = closed ? 'closed' : 'reconnecting';
    live.textContent = closed ? 'disconnected: reload the page' : 'reconnecting…';
  });
  source.addEventListener('snapshot', (e) => {
    live.dataset.state = 'live';
    live.textContent = 'live · updated ' + new Date().toLocaleTimeString();
    render(JSON.parse(e.data));
  });
  source.addEventListener('heartbeat', () => {
    const i = lastSnapshot && lastSnapshot.incident;
    if (i && !i.open && memory && !memory.own) { memoryFor = null; render(lastSnapshot); }
    live.dataset.state = 'live';
    live.textContent = 'live · heartbeat ' + new Date().toLocaleTimeString();
  });
})();
