// The flannel-np console: a minimal SockJS raw-websocket client of the Vert.x event-bus bridge
// (frames {"type":"register","address":A} out, {"type":"rec","address":A,"body":B} in, a ping every
// 5 s), rendering in batches on requestAnimationFrame so 1,000 messages/s never freeze the page:
// at most MAX_ROWS rows live in the DOM, and a backlog beyond MAX_QUEUE is dropped and counted.
(function () {
  'use strict';
  const ADDRESSES = ['console.docker.events', 'console.etcd.changes', 'console.reconcile.report',
    'console.kernel.batch', 'console.etcd.status', 'console.docker.status'];
  const MAX_ROWS = 500, MAX_QUEUE = 2000, PER_FRAME = 200;
  const $ = (id) => document.getElementById(id);
  const tbody = $('rows').tBodies[0];
  // the server answered ?token=T with an HttpOnly cookie that the websocket carries: the token
  // leaves the address bar and the history entry at once, and never goes into another URL
  if (new URLSearchParams(location.search).has('token')) history.replaceState(null, '', location.pathname);
  const state = { paused: false, queue: [], total: 0, dropped: 0, shown: 0, counts: {}, address: '', filter: '',
    scheduled: false, selected: null };
  window.fnpConsole = state; // for tests and the curious: counters live here

  for (const a of ADDRESSES) {
    const o = document.createElement('option'); o.value = a; o.textContent = a.replace('console.', '');
    $('address').appendChild(o);
    state.counts[a] = 0;
    const c = document.createElement('span'); c.id = 'count-' + a.replace(/\./g, '-'); c.dataset.address = a;
    c.textContent = a.replace('console.', '') + ': 0';
    c.onclick = () => { $('address').value = state.address === a ? '' : a; applyFilter(); };
    $('counts').appendChild(c);
  }

  function summary(address, b) {
    switch (address) {
      case 'console.kernel.batch': {
        const lines = (b.text || '').split('\n').filter((l) => l);
        return `${b.plane} ${b.tool} rev ${b.revision} ${b.ok ? 'ok' : 'FAILED ' + b.error} ${lines.length} lines: ${lines[0] || ''}`;
      }
      case 'console.reconcile.report': return `${b.plane} rev ${b.revision} ${b.ok ? '' : 'FAILED '}${b.summary} (${b.micros} µs)`;
      case 'console.etcd.changes': return `rev ${b.revision}${b.resync ? ' listing' : ''}: ` +
        (b.events || []).slice(0, 8).map((e) => e.type + ' ' + e.key).join(', ') + ((b.events || []).length > 8 ? ` … (${b.events.length})` : '');
      case 'console.docker.events': return `${b.type} ${b.action} ${(b.id || '').slice(0, 12)} ${(b.attributes || {}).name || ''}`;
      case 'console.etcd.status': return `etcd ${b.reachable ? 'reachable' : 'UNREACHABLE ' + b.error} rev ${b.revision}`;
      case 'console.docker.status': return `docker ${b.reachable ? 'reachable' : 'UNREACHABLE ' + b.error} ${b.apiVersion || ''}`;
      default: return JSON.stringify(b).slice(0, 200);
    }
  }

  function matches(m) {
    if (state.address && m.address !== state.address) return false;
    if (!state.filter) return true;
    if (m.text === undefined) m.text = (m.summary + ' ' + JSON.stringify(m.body)).toLowerCase();
    return state.filter.split(/\s+/).every((w) => m.text.includes(w));
  }

  function receive(address, body) {
    state.total++;
    state.counts[address] = (state.counts[address] || 0) + 1;
    if (state.queue.length >= MAX_QUEUE) { state.queue.shift(); state.dropped++; }
    state.queue.push({ address, body, at: new Date() });
    schedule();
  }

  // A frame renders the next batch; a timer does when no frame comes (a hidden tab, or a headless
  // browser on a busy machine, runs no animation frames), so a backlog never waits for the next message.
  function schedule() {
    if (!state.scheduled) {
      state.scheduled = true;
      requestAnimationFrame(render);
      state.timer = setTimeout(render, 250);
    }
  }

  function render() {
    if (!state.scheduled) return; // the other trigger rendered it
    state.scheduled = false;
    clearTimeout(state.timer);
    for (const a of ADDRESSES) {
      const c = $('count-' + a.replace(/\./g, '-')); c.textContent = a.replace('console.', '') + ': ' + state.counts[a];
      c.className = state.address === a ? 'sel' : '';
    }
    $('total').textContent = state.total;
    $('dropped').textContent = state.dropped;
    if (state.paused) return; // the queue keeps filling (and dropping) until resumed
    if (state.queue.length > MAX_ROWS) {
      // rows older than the newest MAX_ROWS would leave the DOM as soon as they entered it
      state.dropped += state.queue.length - MAX_ROWS;
      state.queue.splice(0, state.queue.length - MAX_ROWS);
      $('dropped').textContent = state.dropped;
    }
    const batch = state.queue.splice(0, PER_FRAME);
    const frag = document.createDocumentFragment();
    for (const m of batch) {
      m.summary = summary(m.address, m.body);
      const tr = document.createElement('tr');
      tr.msg = m;
      if (m.body && m.body.ok === false) tr.className = 'bad';
      tr.innerHTML = '<td></td><td></td><td></td>';
      tr.cells[0].textContent = m.at.toISOString().slice(11, 23);
      tr.cells[1].textContent = m.address.replace('console.', '');
      tr.cells[2].textContent = m.summary;
      if (!matches(m)) tr.style.display = 'none';
      frag.appendChild(tr);
    }
    tbody.insertBefore(frag, tbody.firstChild); // newest first
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
    countShown();
    if (state.queue.length) schedule();
  }

  function countShown() {
    let n = 0;
    for (const tr of tbody.rows) if (tr.style.display !== 'none') n++;
    state.shown = n; $('shown').textContent = n;
  }

  function applyFilter() {
    state.address = $('address').value;
    state.filter = $('filter').value.trim().toLowerCase();
    for (const tr of tbody.rows) tr.style.display = matches(tr.msg) ? '' : 'none';
    countShown();
    schedule();
  }

  $('filter').addEventListener('input', applyFilter);
  $('address').addEventListener('change', applyFilter);
  $('pause').onclick = () => {
    state.paused = !state.paused;
    $('pause').textContent = state.paused ? 'Resume' : 'Pause';
    schedule();
  };
  tbody.addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr');
    if (!tr || !tr.msg) return;
    if (state.selected) state.selected.classList.remove('sel');
    tr.classList.add('sel'); state.selected = tr;
    $('json').textContent = tr.msg.address + '\n' + JSON.stringify(tr.msg.body, null, 2);
  });

  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = proto + '//' + location.host + '/console/eventbus/websocket';
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer'; // the bridge sends its JSON frames as binary messages
    const utf8 = new TextDecoder();
    let ping;
    ws.onopen = () => {
      $('status').textContent = 'connected'; $('status').className = 'on';
      for (const a of ADDRESSES) ws.send(JSON.stringify({ type: 'register', address: a, headers: {} }));
      ping = setInterval(() => ws.send(JSON.stringify({ type: 'ping' })), 5000);
    };
    ws.onmessage = (ev) => {
      const f = JSON.parse(typeof ev.data === 'string' ? ev.data : utf8.decode(ev.data));
      if (f.type === 'rec') receive(f.address, f.body);
      else if (f.type === 'err') { $('status').textContent = 'bridge error: ' + f.message; }
    };
    ws.onclose = () => {
      clearInterval(ping);
      $('status').textContent = 'disconnected, retrying…'; $('status').className = 'off';
      setTimeout(connect, 2000);
    };
  }
  connect();
})();
