// The cluster page: what `flannel-np status` prints, live. The admin server publishes the view on
// console.cluster (through the same raw-websocket bridge as the event-bus page) when etcd changes;
// this page only draws it: problems first, then nodes, networks (their blocks as an SVG row,
// each labelled with its node) and services.
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  if (new URLSearchParams(location.search).has('token')) history.replaceState(null, '', location.pathname);
  const state = { view: null, updates: 0 };
  window.fnpCluster = state; // for tests and the curious
  const SVG = 'http://www.w3.org/2000/svg';

  function cell(tr, text) { const td = tr.insertCell(); td.textContent = text; return td; }
  function perNode(m) { return Object.keys(m || {}).sort().map((n) => n + ': ' + m[n]).join(', '); }

  function draw(v) {
    state.view = v; state.updates++;
    $('revision').textContent = v.revision;
    $('problem-count').textContent = v.problems.length;
    $('problems-box').className = v.problems.length ? 'bad' : '';
    const ul = $('problems'); ul.replaceChildren();
    for (const p of v.problems) { const li = document.createElement('li'); li.textContent = p; ul.appendChild(li); }

    $('node-count').textContent = v.nodes.length;
    const nb = $('nodes').tBodies[0]; nb.replaceChildren();
    for (const n of v.nodes) {
      const tr = nb.insertRow(); tr.dataset.node = n.name;
      cell(tr, n.name); cell(tr, n.publicIp); cell(tr, n.manager ? 'manager' : 'worker'); cell(tr, n.version || '-');
    }

    $('network-count').textContent = v.networks.length;
    const nets = $('networks'); nets.replaceChildren();
    for (const net of v.networks) {
      const div = document.createElement('div'); div.className = 'net'; div.dataset.flannelId = net.flannelId;
      const h = document.createElement('div');
      h.textContent = `${net.name || '(not in Docker)'} ${net.subnet} VNI ${net.vni} — ${net.nodeAddresses} addresses on nodes, `
        + `${net.clusterAddresses} cluster-wide${net.freed ? ' (being removed)' : ''}`;
      div.appendChild(h);
      const w = 190, svg = document.createElementNS(SVG, 'svg');
      svg.setAttribute('width', Math.max(1, net.blocks.length) * (w + 8)); svg.setAttribute('height', 44);
      net.blocks.forEach((b, i) => {
        const r = document.createElementNS(SVG, 'rect');
        r.setAttribute('x', i * (w + 8) + 1); r.setAttribute('y', 1); r.setAttribute('width', w); r.setAttribute('height', 40);
        if (!b.node) r.setAttribute('class', 'orphan');
        const t1 = document.createElementNS(SVG, 'text'); t1.setAttribute('x', i * (w + 8) + 6); t1.setAttribute('y', 17);
        t1.textContent = b.block;
        const t2 = document.createElementNS(SVG, 'text'); t2.setAttribute('x', i * (w + 8) + 6); t2.setAttribute('y', 33);
        t2.textContent = (b.node || ('? ' + b.publicIp)) + ` · ${b.used} used, ${b.free} free`;
        svg.append(r, t1, t2);
      });
      div.appendChild(svg);
      nets.appendChild(div);
    }

    $('service-count').textContent = v.services.length;
    const sb = $('services').tBodies[0]; sb.replaceChildren();
    for (const s of v.services) {
      const tr = sb.insertRow(); tr.dataset.service = s.name;
      cell(tr, s.name); cell(tr, s.mode);
      cell(tr, Object.keys(s.vips).sort().map((k) => k + ' ' + s.vips[k]).join(', ') || '-');
      cell(tr, perNode(s.running)); cell(tr, perNode(s.leaving));
    }
  }

  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(proto + '//' + location.host + '/console/eventbus/websocket');
    ws.binaryType = 'arraybuffer';
    const utf8 = new TextDecoder();
    let ping;
    ws.onopen = () => {
      $('status').textContent = 'connected'; $('status').className = 'on';
      ws.send(JSON.stringify({ type: 'register', address: 'console.cluster', headers: {} }));
      ping = setInterval(() => ws.send(JSON.stringify({ type: 'ping' })), 5000);
    };
    ws.onmessage = (ev) => {
      const f = JSON.parse(typeof ev.data === 'string' ? ev.data : utf8.decode(ev.data));
      if (f.type === 'rec' && f.address === 'console.cluster') draw(f.body); // at most one a second
      else if (f.type === 'err') $('status').textContent = 'bridge error: ' + f.message;
    };
    ws.onclose = () => {
      clearInterval(ping);
      $('status').textContent = 'disconnected, retrying…'; $('status').className = 'off';
      setTimeout(connect, 2000);
    };
  }
  connect();
})();
