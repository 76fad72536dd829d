// Tessera admin page: rooms with live snapshot thumbnails and per-participant stats, and the
// admin API's actions (layout, pin, mute, tier, remove, close). The token (auth.admin_token)
// stays in this tab's sessionStorage.
const $ = (role) => document.querySelector(`[data-role="${role}"]`);
let token = sessionStorage.getItem('tessera-admin-token') || '';
let config = { layouts: [], tiers: [] };

async function api(method, path, body) {
  const res = await fetch(`/api/admin/${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `${res.status}`);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function select(options, value, onchange) {
  const s = el('select', { onchange: (ev) => onchange(ev.target.value) });
  for (const o of options) s.append(el('option', { value: o, ...(o === value ? { selected: '' } : {}) }, o));
  return s;
}

const act = (fn) => async (...args) => {
  try { await fn(...args); $('status').textContent = 'done'; refresh(); }
  catch (e) { $('status').textContent = `error: ${e.message}`; }
};

function roomCard(r) {
  const room = encodeURIComponent(r.room);
  const img = el('img', { src: `/api/rooms/${room}/snapshot.png?t=${Date.now()}`, alt: `composite of ${r.room}`, 'data-role': 'snapshot' });
  const speaker = r.active_speaker;
  const rows = r.participants.map((p) => el('tr', { 'data-id': p.id },
    el('td', {}, `${p.name} (${p.id})${p.id === speaker ? ' (speaking)' : ''}`),
    el('td', {}, p.layout ? `${p.kind}, sees ${p.layout}` : p.kind),
    el('td', {}, `${p.codec_in || '-'} → ${p.codec_out || '-'}`),
    el('td', {}, p.tier ? select(config.tiers, p.tier.split(/[~@]/)[0], act((t) => api('POST', `rooms/${room}/participants/${p.id}/tier`, { tier: t }))) : '-'),
    el('td', {}, `${p.video_fps_in.toFixed(1)} fps, ${p.video_kbps_in.toFixed(0)} kbps`),
    el('td', {}, `${p.net.video_frames_lost} lost, ${p.video_decode_errors} errors, ${p.media_dropped} dropped`),
    el('td', { class: p.audio_muted ? 'muted' : '' }, p.audio_muted ? 'muted' : 'live'),
    el('td', {},
      el('button', { onclick: act(() => api('POST', `rooms/${room}/pin`, { participant: p.id })) }, 'Pin'),
      el('button', { onclick: act(() => api('POST', `rooms/${room}/participants/${p.id}/mute`, { audio: !p.audio_muted })) }, p.audio_muted ? 'Unmute' : 'Mute'),
      el('button', { onclick: act(() => api('DELETE', `rooms/${room}/participants/${p.id}`)) }, 'Remove'))));
  const tiers = r.tiers.map((t) => `${t.name}: ${t.width}x${t.height} ${t.codec} ${t.fps_out.toFixed(1)} fps ${t.kbps_out.toFixed(0)} kbps, ${t.receivers} receivers`).join(' · ');
  return el('section', { class: 'room', 'data-room': r.room },
    img,
    el('div', {},
      el('h2', {}, r.room),
      el('div', { class: 'controls' },
        'Layout', select(config.layouts, r.layout, act((l) => api('POST', `rooms/${room}/layout`, { layout: l }))),
        el('button', { onclick: act(() => api('POST', `rooms/${room}/pin`, { participant: null })) }, 'Unpin'),
        el('button', { onclick: act(() => api('DELETE', `rooms/${room}`)) }, 'Close room'),
        r.sharing ? el('span', { 'data-role': 'sharing' }, `${(r.participants.find((p) => p.id === r.sharing) || { name: r.sharing }).name} is sharing (remove its screen row to stop it)`) : '',
        el('span', {}, `${Math.round(r.busy_secs / Math.max(1, r.uptime_secs) * 100)}% of a core · up ${r.uptime_secs} s`)),
      el('div', {}, tiers),
      el('table', {},
        el('tr', {}, ...['participant', 'kind', 'codec in → out', 'tier', 'in', 'losses', 'mic', ''].map((h) => el('th', {}, h))),
        ...rows)));
}

async function refresh() {
  if (!token) return;
  try {
    const rooms = await api('GET', 'rooms');
    const box = $('rooms');
    box.replaceChildren(...(rooms.length ? rooms.map(roomCard) : [el('p', {}, 'No rooms.')]));
  } catch (e) {
    $('status').textContent = `error: ${e.message}`;
  }
}

$('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('tessera-admin-token', token);
  try {
    config = await api('GET', 'config');
    $('status').textContent = 'signed in';
    refresh();
  } catch (e) {
    $('status').textContent = `error: ${e.message}`;
  }
});

if (token) {
  $('token').value = token;
  api('GET', 'config').then((c) => { config = c; refresh(); }).catch((e) => { $('status').textContent = `error: ${e.message}`; });
}
setInterval(refresh, 2000);
