// Tessera web client: joins a room over the WebSocket protocol of docs/protocol.md, sends
// the camera and microphone over one RTCPeerConnection and plays back the one composite
// video and the one audio mix the server sends. Plain ES module, no build step.
//
// URL parameters
//   room=R&name=N    join room R as N at once, with camera and microphone
//   tier=T           ask for output tier T instead of the room's default
//   layout=L         see layout L (one of `joined`'s `layouts`) instead of the room's
//
// Screen sharing: "Share screen" opens the browser's picker (getDisplayMedia) and sends the
// capture over a second, send-only RTCPeerConnection (`share`, answered by `share_answer`);
// "Stop sharing" (or the browser's own stop button) sends `share_stop`. Who shares is shown
// over the composite (`sharing`). The layout picker sends `layout` (a name, or null for the
// room's layout).
//
// Test hooks (used by tests/browser, documented in web/README.md)
//   fake=colour&colour=RRGGBB&tone=HZ
//       Do not call getUserMedia. The camera is a 640x360 canvas.captureStream(15) filled
//       with the solid colour #RRGGBB, the name drawn small in the top-left corner and a
//       small dark box moving along the bottom edge; the microphone is a WebAudio
//       OscillatorNode at HZ (sine, about -12 dBFS) into a MediaStreamDestination.
//       Firefox cannot take a per-tab fake camera file, so its tests use this.
//   raw=1
//       getUserMedia without echo cancellation, noise suppression or automatic gain, so
//       a test tone reaches the server unchanged.
//   window.tessera
//       { state, pc, id, participants, ws, room, layout, tier, speaker, stats,
//         localStream, remoteStream, autoplayBlocked, errors, display, videoSender,
//         lastHint, sendParams, lastBandwidth, paused, audioOnly, join(), leave(),
//         share(), stopShare(), sharing, sharePc, shareHint, shareSendParams, layouts,
//         layoutChoice(), chooseLayout(name|null), lastLayoutRefused }:
//       live getters over the client's state. `state` is one of "idle", "media",
//       "connecting", "joined", "negotiating", "connected", "reconnecting", "failed",
//       "left". `server` is the base URL of the node the socket went to; `reconnects`
//       counts the rejoins after losing the server or being told `moved`.
//       `participants` is an array of {id, name, audio_muted, video_muted, self}.
//       `lastHint` / `lastBandwidth` are the last `send_hint` (kind `camera`) / `bandwidth`
//       messages as received; `sendParams` is what the camera sender last had applied.
//       `share()` starts a screen share as the button does (resolves true once offered;
//       browsers may want a user gesture for the picker: tests click the button instead),
//       `stopShare()` ends ours; `sharing` is the last `sharing` message ({id, name}),
//       `sharePc` the share's RTCPeerConnection (null when not sharing), `shareHint` the
//       last `send_hint` of kind `screen` and `shareSendParams` what its sender last had
//       applied (like `sendParams`). `layouts` are `joined`'s choices; `layoutChoice()` is
//       ours (null: the room's), `chooseLayout(name|null)` picks as the selector does, and
//       `lastLayoutRefused` is the last `layout_refused` message.

const $ = (role) => document.querySelector(`[data-role="${role}"]`);

const ui = {
  form: $('join-form'),
  room: $('room'),
  name: $('name'),
  camera: $('camera'),
  microphone: $('microphone'),
  call: $('call'),
  composite: $('composite'),
  play: $('play'),
  preview: $('preview'),
  muteAudio: $('mute-audio'),
  muteVideo: $('mute-video'),
  pauseVideo: $('pause-video'),
  audioOnly: $('audio-only'),
  audioOnlyNotice: $('audio-only-notice'),
  recording: $('recording'),
  leave: $('leave'),
  participants: $('participants'),
  stats: $('stats'),
  error: $('error'),
  status: $('status'),
  roomName: $('room-name'),
  layout: $('layout'),
  share: $('share'),
  sharing: $('sharing'),
  shareNotice: $('share-notice'),
  layoutChoice: $('layout-choice'),
  layoutNotice: $('layout-notice'),
};

const params = new URLSearchParams(location.search);

// Everything about the current session; replaced on every join (and rejoin).
let s = freshSession();

// Rejoining: after losing the server (the socket closed without a goodbye) or an error with
// one of these codes, the client joins the same room again with the same camera and
// microphone, trying its own origin first and then the other nodes of a cluster
// (GET /api/cluster/nodes, read after each join), for up to REJOIN_FOR_MS.
const REJOIN_CODES = new Set(['moved', 'shutdown', 'unavailable']);
const REJOIN_FOR_MS = 60000;
// A media path that stays `disconnected` this long is restarted (a new offer with new ICE
// credentials, over the same signalling socket): a network change (Wi-Fi to cellular) then
// recovers within the server's network.ice_failed_timeout_ms instead of ending the call.
const ICE_RESTART_AFTER_MS = 2000;
const ICE_RESTARTS = 3;
let clusterUrls = []; // other nodes' base URLs, as the last join's server listed them
let reconnects = 0;

function freshSession() {
  const session = {
    state: 'idle',
    ws: null,
    pc: null,
    id: null,
    room: null,
    layout: null,
    tier: null,
    speaker: null,
    participants: new Map(), // id -> {id, name, audio_muted, video_muted, self}
    localStream: null,
    remoteStream: null,
    fake: null, // {timer, audioContext} for the fake=colour hook
    remoteDescriptionSet: false,
    pendingCandidates: [], // server candidates that arrived before the answer
    statsTimer: null,
    pingTimer: null,
    lastStats: null, // {bytes, time} of the previous inbound video sample
    stats: null,
    audioMuted: false,
    videoMuted: false, // "Stop camera": the camera track is disabled
    paused: false, // "Pause my video": the camera is not sent, the preview stays live
    audioOnly: false, // "Audio only": no video in (asked of the server) or out
    videoOffSent: false, // the last `mute` `video` value sent to the server
    display: null, // {width, height} sent in `join`
    camera: null, // the camera's outgoing video: its send hint and sender (see applySender)
    bandwidth: null, // the last `bandwidth` message
    iceServers: [], // from `joined`, for the share's PeerConnection too
    share: null, // our screen share: {pc, stream, out, answered, timer} (see offerShare)
    pendingShare: null, // a share's capture kept across a rejoin, offered again once answered
    sharePicking: false, // the browser's screen picker is open
    sharing: null, // the last `sharing` message: who shares a screen now
    layouts: [], // the layouts `joined` lets us choose
    layoutChoice: null, // our own layout (`layout`); null: the room's
    layoutRefused: null, // the last `layout_refused` message
    inText: '', // the inbound part of the stats line
    autoplayBlocked: false,
    name: '',
    queue: Promise.resolve(), // server messages are handled one after another
    server: null, // the base URL the socket went to
    fatalCode: null, // the code of a fatal error received (before its handler ran)
    rejoin: null, // {until, attempt} while rejoining
  };
  session.camera = outgoing(session, {
    kind: 'camera',
    pc: () => session.pc,
    track: () => session.localStream && session.localStream.getVideoTracks()[0],
    active: () => !videoOff(session),
    // A canvas track may not report its size.
    canvas: () => session.fake && session.fake.canvas,
  });
  return session;
}

const errors = [];

window.tessera = {
  get state() { return s.state; },
  get pc() { return s.pc; },
  get id() { return s.id; },
  get ws() { return s.ws; },
  get room() { return s.room; },
  get layout() { return s.layout; },
  get tier() { return s.tier; },
  get speaker() { return s.speaker; },
  get stats() { return s.stats; },
  get localStream() { return s.localStream; },
  get remoteStream() { return s.remoteStream; },
  get autoplayBlocked() { return s.autoplayBlocked; },
  get display() { return s.display && { ...s.display }; },
  get videoSender() { return videoSender(s.pc); },
  get lastHint() { return s.camera.hint && { ...s.camera.hint }; },
  get sendParams() { return s.camera.sendParams && { ...s.camera.sendParams }; },
  get iceRestarts() { return s.iceRestarts || 0; },
  // Restart ICE now, as a path lost for ICE_RESTART_AFTER_MS would (tests).
  restartIce() { return !!s.pc && restartIce(s.pc); },
  get lastBandwidth() { return s.bandwidth && { ...s.bandwidth }; },
  get paused() { return s.paused; },
  get audioOnly() { return s.audioOnly; },
  get server() { return s.server; },
  get reconnects() { return reconnects; },
  get participants() { return [...s.participants.values()].map((p) => ({ ...p })); },
  get errors() { return errors.slice(); },
  join: (opts) => join(opts),
  leave: () => leave(),
  share: () => startShare(),
  stopShare: () => stopShare(),
  get sharing() { return s.sharing && { ...s.sharing }; },
  get sharePc() { return s.share ? s.share.pc : null; },
  get shareHint() { return s.share && s.share.out.hint ? { ...s.share.out.hint } : null; },
  get shareSendParams() { return s.share && s.share.out.sendParams ? { ...s.share.out.sendParams } : null; },
  get layouts() { return s.layouts.slice(); },
  layoutChoice: () => s.layoutChoice,
  chooseLayout: (name) => chooseLayout(name),
  get lastLayoutRefused() { return s.layoutRefused && { ...s.layoutRefused }; },
};

function setState(state) {
  s.state = state;
  ui.status.textContent = state;
  ui.status.dataset.state = state;
}

function showError(text) {
  errors.push(text);
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  ui.error.hidden = true;
}

function send(msg) {
  if (s.ws && s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify(msg));
}

// ---- Local media ------------------------------------------------------------------------

async function getLocalMedia(name, wantVideo, wantAudio) {
  if (!wantVideo && !wantAudio) return new MediaStream();
  if (params.get('fake') === 'colour') return fakeMedia(name, wantVideo, wantAudio);
  const raw = params.get('raw') === '1';
  const audio = !wantAudio ? false
    : raw ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false }
      : true;
  const video = wantVideo ? { width: { ideal: 640 }, height: { ideal: 360 } } : false;
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio });
  } catch (e) {
    // One device missing or refused: carry on with what works.
    if (wantVideo && wantAudio) {
      for (const only of [{ audio }, { video }]) {
        try {
          const stream = await navigator.mediaDevices.getUserMedia(only);
          showError(`${only.audio ? 'camera' : 'microphone'} unavailable (${e.name}); joining without it`);
          return stream;
        } catch { /* try the next */ }
      }
    }
    showError(`camera/microphone unavailable (${e.name}: ${e.message}); joining as a viewer`);
    return new MediaStream();
  }
}

// The fake=colour hook: a solid-colour canvas camera and an oscillator microphone.
function fakeMedia(name, wantVideo, wantAudio) {
  const colour = /^[0-9a-fA-F]{6}$/.test(params.get('colour') || '') ? `#${params.get('colour')}` : '#808080';
  const tone = Number(params.get('tone')) > 0 ? Number(params.get('tone')) : 440;
  const stream = new MediaStream();
  s.fake = { timer: null, audioContext: null };
  if (wantVideo) {
    const canvas = document.createElement('canvas');
    canvas.width = 640;
    canvas.height = 360;
    const g = canvas.getContext('2d');
    let frame = 0;
    const draw = () => {
      g.fillStyle = colour;
      g.fillRect(0, 0, 640, 360);
      g.fillStyle = 'rgba(0,0,0,0.6)';
      g.font = '14px sans-serif';
      g.fillText(name, 8, 20);
      // A small box moving along the bottom edge, clear of the centre, so frames differ.
      g.fillStyle = '#181818';
      g.fillRect((frame * 16) % 592, 300, 48, 48);
      frame += 1;
    };
    draw();
    s.fake.timer = setInterval(draw, 1000 / 15);
    // Kept in the document (invisible) so browsers keep painting it.
    canvas.style.cssText = 'position:absolute;width:1px;height:1px;opacity:0;pointer-events:none';
    document.body.appendChild(canvas);
    s.fake.canvas = canvas;
    stream.addTrack(canvas.captureStream(15).getVideoTracks()[0]);
  }
  if (wantAudio) {
    const ctx = new AudioContext({ sampleRate: 48000 });
    const osc = ctx.createOscillator();
    osc.type = 'sine';
    osc.frequency.value = tone;
    const gain = ctx.createGain();
    gain.gain.value = 0.25;
    const dest = ctx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    ctx.resume().catch(() => {});
    s.fake.audioContext = ctx;
    stream.addTrack(dest.stream.getAudioTracks()[0]);
  }
  return stream;
}

function stopLocalMedia(session) {
  if (session.localStream) for (const t of session.localStream.getTracks()) t.stop();
  if (session.fake) {
    clearInterval(session.fake.timer);
    if (session.fake.audioContext) session.fake.audioContext.close().catch(() => {});
    if (session.fake.canvas) session.fake.canvas.remove();
  }
}

// ---- Joining ----------------------------------------------------------------------------

async function join({ room, name, video = true, audio = true } = {}) {
  if (s.state !== 'idle' && s.state !== 'left' && s.state !== 'failed') return;
  cleanup();
  s = freshSession();
  clearError();
  s.room = room;
  s.name = name;
  s.layoutChoice = params.get('layout') || null;
  ui.roomName.textContent = room;
  ui.form.hidden = true;
  ui.call.hidden = false;
  ui.stats.textContent = 'waiting for media…';
  renderParticipants();

  setState('media');
  const session = s;
  const stream = await getLocalMedia(name, video, audio);
  if (session !== s) { // left while waiting for the devices
    for (const t of stream.getTracks()) t.stop();
    return;
  }
  s.localStream = stream;
  ui.preview.srcObject = stream.getVideoTracks().length ? stream : null;
  ui.preview.classList.toggle('mirror', !s.fake); // a real camera shows as in a mirror
  ui.preview.hidden = !stream.getVideoTracks().length;
  ui.preview.play().catch(() => {});
  updateButtons();

  setState('connecting');
  connect(session, location.origin);
}

// Opens the signalling socket to the node at `base` and joins the session's room.
function connect(session, base) {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ws`);
  session.ws = ws;
  session.server = base;
  const stream = session.localStream;
  ws.onopen = () => {
    s.display = displaySize();
    const msg = {
      type: 'join',
      room: session.room,
      name: session.name,
      video: stream.getVideoTracks().length > 0,
      audio: stream.getAudioTracks().length > 0,
      display: s.display,
    };
    if (params.get('tier')) msg.tier = params.get('tier');
    if (params.get('token')) msg.token = params.get('token');
    if (session.layoutChoice) msg.layout = session.layoutChoice;
    ws.send(JSON.stringify(msg));
    clearInterval(session.pingTimer);
    session.pingTimer = setInterval(() => send({ type: 'ping' }), 25000);
  };
  ws.onmessage = (ev) => {
    if (session !== s) return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      showError(`server sent something that is not JSON: ${String(ev.data).slice(0, 100)}`);
      return;
    }
    if (msg.type === 'error' && msg.fatal) session.fatalCode = msg.code;
    session.queue = session.queue.then(() => onMessage(msg)).catch((e) => {
      console.error(e);
      if (session === s) showError(`${msg.type}: ${e.message || e}`);
    });
  };
  ws.onerror = () => {
    if (session === s && !session.rejoin) showError('connection to the server failed');
  };
  ws.onclose = (ev) => {
    if (session !== s || s.state === 'left') return;
    if (session.rejoin && !session.id) {
      rejoinNext(); // this attempt failed; its error, if any, was handled
      return;
    }
    const code = session.fatalCode;
    if (session.id && (!code || REJOIN_CODES.has(code))) {
      // The handler of a queued `moved`/`shutdown` error starts the rejoin; a socket that
      // just dropped starts it here.
      if (!code) rejoin(`lost the connection to the server (code ${ev.code})`);
      return;
    }
    showError(`disconnected from the server${ev.reason ? `: ${ev.reason}` : ''} (code ${ev.code})`);
    endCall('failed');
  };
}

// Starts over in the same room: the same camera and microphone and switches, a new socket
// and PeerConnection.
function rejoin(reason) {
  if (s.rejoin || s.state === 'left' || s.state === 'idle') return;
  const old = s;
  reconnects += 1;
  const screen = old.share ? old.share.stream : old.pendingShare;
  cleanup({ keepMedia: true });
  s = freshSession();
  for (const k of ['room', 'name', 'localStream', 'fake', 'audioMuted', 'videoMuted', 'paused', 'audioOnly', 'layoutChoice']) {
    s[k] = old[k];
  }
  // A screen being shared is offered again once the new session's offer is answered.
  s.pendingShare = screen;
  s.rejoin = { until: Date.now() + REJOIN_FOR_MS, attempt: 0, reason };
  ui.preview.srcObject = s.localStream.getVideoTracks().length ? s.localStream : null;
  ui.preview.play().catch(() => {});
  setState('reconnecting');
  ui.stats.textContent = `reconnecting: ${reason}`;
  rejoinNext();
}

// The next rejoin attempt: this page's origin, then the cluster's other nodes, in turn,
// waiting a little longer each round.
function rejoinNext() {
  const session = s;
  const r = session.rejoin;
  if (!r) return;
  if (Date.now() > r.until) {
    showError(`could not rejoin within ${REJOIN_FOR_MS / 1000} s: ${r.reason}`);
    endCall('failed');
    return;
  }
  const urls = [location.origin, ...clusterUrls.filter((u) => u !== location.origin)];
  const base = urls[r.attempt % urls.length];
  const delay = r.attempt === 0 ? 0 : Math.min(3000, 250 * 2 ** Math.floor(r.attempt / urls.length));
  r.attempt += 1;
  setTimeout(() => {
    if (session !== s || s.rejoin !== r) return;
    if (session.ws) {
      session.ws.onclose = null;
      session.ws.onmessage = null;
      if (session.ws.readyState <= WebSocket.OPEN) session.ws.close(1000, 'retry');
    }
    session.id = null;
    session.fatalCode = null;
    connect(session, base);
  }, delay);
}

// The cluster's other nodes, for rejoining when this one is lost (404 on a single node).
async function learnNodes(base) {
  try {
    const r = await fetch(`${location.origin}/api/cluster/nodes`, { cache: 'no-store' });
    if (!r.ok) return;
    const rows = await r.json();
    clusterUrls = rows.filter((n) => !n.draining && n.url).map((n) => n.url.replace(/\/$/, ''));
    if (base && !clusterUrls.includes(base)) clusterUrls.push(base);
  } catch {
    // A single node, or the page's server is gone: keep what was known.
  }
}

async function onMessage(msg) {
  switch (msg.type) {
    case 'joined': return onJoined(msg);
    case 'answer': return onAnswer(msg);
    case 'candidate': return onRemoteCandidate(msg.candidate);
    case 'participant_joined':
    case 'participant_updated':
      upsertParticipant(msg.participant);
      return undefined;
    case 'participant_left':
      s.participants.delete(msg.id);
      if (s.speaker === msg.id) s.speaker = null;
      renderParticipants();
      return undefined;
    case 'active_speaker':
      s.speaker = msg.id ?? null;
      renderParticipants();
      return undefined;
    case 'layout_changed':
      s.layout = msg.layout;
      renderRoomLine();
      return undefined;
    case 'layout_refused':
      s.layoutRefused = msg;
      s.layoutChoice = null;
      ui.layoutChoice.value = '';
      showNote(ui.layoutNotice, `Layout "${msg.layout}" is not available: ${msg.reason}`);
      renderRoomLine();
      return undefined;
    case 'send_hint': {
      const out = msg.kind === 'camera' ? s.camera : msg.kind === 'screen' && s.share ? s.share.out : null;
      if (out) {
        out.hint = msg;
        scheduleSenderUpdate(out);
      }
      renderStatsLine();
      return undefined;
    }
    case 'share_answer': return onShareAnswer(msg);
    case 'share_ended':
      stopShare({ tell: false });
      showNote(ui.shareNotice, `Your screen share ended: ${msg.reason}`);
      return undefined;
    case 'sharing':
      s.sharing = { id: msg.id ?? null, name: msg.name ?? null };
      renderSharing();
      return undefined;
    case 'bandwidth':
      s.bandwidth = msg;
      s.tier = msg.tier ?? null;
      renderRoomLine();
      renderStatsLine();
      return undefined;
    case 'recording':
      // People are told when the meeting is recorded or streamed, as they expect.
      ui.recording.textContent = [msg.recording && '● REC', msg.streaming && '● LIVE']
        .filter(Boolean).join('  ');
      ui.recording.title = `This meeting is being ${[msg.recording && 'recorded', msg.streaming && 'streamed live']
        .filter(Boolean).join(' and ')}`;
      ui.recording.hidden = !(msg.recording || msg.streaming);
      return undefined;
    case 'pong':
      return undefined;
    case 'error':
      if (REJOIN_CODES.has(msg.code) && (msg.fatal || !s.id) && s.state !== 'left') {
        if (s.rejoin) {
          // A failed attempt: its socket closes next, and the next attempt follows.
          if (!msg.fatal) rejoinNext();
          return undefined;
        }
        if (s.id) {
          rejoin(`${msg.code}: ${msg.reason}`);
          return undefined;
        }
      }
      showError(`server: ${msg.code}: ${msg.reason}`);
      // The reply to a `share` that the server refused (it answers messages in order; a
      // bad_message is more likely about a trickled candidate).
      if (!msg.fatal && s.share && !s.share.answered && s.share.offered && msg.code !== 'bad_message') {
        stopShare();
      }
      // A fatal error, the join refused, or the offer refused (no answer will come): the
      // call cannot go on.
      if (msg.fatal || (s.state === 'connecting' && !s.id)
          || (s.state === 'negotiating' && !s.remoteDescriptionSet && msg.code !== 'bad_message')) {
        endCall('failed');
      }
      return undefined;
    default:
      console.warn('unknown message', msg);
      return undefined;
  }
}

function upsertParticipant(p) {
  const old = s.participants.get(p.id);
  s.participants.set(p.id, { ...old, ...p, self: p.id === s.id });
  // Only the microphone is mirrored back: the server's `video_muted` for us is the
  // union of "Stop camera", "Pause my video" and "Audio only" (see syncVideoOff), so it
  // cannot say which of them is on.
  if (p.id === s.id) {
    s.audioMuted = !!p.audio_muted;
    updateButtons();
  }
  renderParticipants();
}

async function onJoined(msg) {
  if (s.rejoin) clearError();
  s.rejoin = null;
  s.id = msg.id;
  // A `recording` message follows if this room is being recorded, a `sharing` one if a
  // screen is shared.
  ui.recording.hidden = true;
  renderSharing();
  s.layouts = Array.isArray(msg.layouts) ? msg.layouts : [];
  fillLayoutPicker();
  learnNodes(s.server);
  s.room = msg.room;
  s.layout = msg.layout;
  s.tier = msg.tier;
  ui.roomName.textContent = msg.room;
  renderRoomLine();
  s.participants.clear();
  for (const p of msg.participants || []) s.participants.set(p.id, { ...p, self: false });
  s.participants.set(s.id, {
    id: s.id,
    name: s.name,
    audio_muted: s.audioMuted,
    video_muted: false,
    self: true,
  });
  renderParticipants();
  setState('joined');
  updateButtons();
  // Buttons pressed while waiting for `joined` could not be sent yet.
  if (s.audioMuted) send({ type: 'mute', audio: true });
  if (s.audioOnly) send({ type: 'audio_only', enabled: true });
  syncVideoOff();

  s.iceServers = (msg.ice_servers || []).map((x) => {
    const server = { urls: x.urls };
    if (x.username != null) server.username = x.username;
    if (x.credential != null) server.credential = x.credential;
    return server;
  });
  const pc = new RTCPeerConnection(pcConfig(s));
  s.pc = pc;

  // Exactly one video and one audio m-line: sendrecv with a local track, else recvonly.
  const local = s.localStream;
  const v = local.getVideoTracks()[0];
  const a = local.getAudioTracks()[0];
  pc.addTransceiver(v || 'video', v ? { direction: 'sendrecv', streams: [local] } : { direction: 'recvonly' });
  pc.addTransceiver(a || 'audio', a ? { direction: 'sendrecv', streams: [local] } : { direction: 'recvonly' });

  s.remoteStream = new MediaStream();
  pc.ontrack = (ev) => {
    if (!s.remoteStream.getTracks().includes(ev.track)) s.remoteStream.addTrack(ev.track);
    if (ui.composite.srcObject !== s.remoteStream) ui.composite.srcObject = s.remoteStream;
    playComposite();
  };
  pc.onicecandidate = (ev) => {
    if (!ev.candidate) {
      send({ type: 'candidate', candidate: null });
      return;
    }
    // Firefox signals the end of each m-line's gathering with an empty candidate.
    if (!ev.candidate.candidate) return;
    // Firefox also gathers RTCP (component 2) candidates in case the answer refuses
    // rtcp-mux; the server always muxes, so they would only be noise.
    if (ev.candidate.component === 'rtcp' || /^candidate:\S+ 2 /.test(ev.candidate.candidate)) return;
    const c = ev.candidate.toJSON();
    const candidate = { candidate: c.candidate };
    if (c.sdpMid != null) candidate.sdpMid = c.sdpMid;
    if (c.sdpMLineIndex != null) candidate.sdpMLineIndex = c.sdpMLineIndex;
    if (c.usernameFragment != null) candidate.usernameFragment = c.usernameFragment;
    send({ type: 'candidate', candidate });
  };
  pc.onconnectionstatechange = () => {
    if (pc !== s.pc) return;
    const st = pc.connectionState;
    if (st === 'connected') {
      setState('connected');
      // Browsers may refuse setParameters before the transport is up; apply again.
      scheduleSenderUpdate(s.camera);
      s.iceRestartTries = 0;
    } else if (st === 'failed') {
      if (!restartIce(pc)) {
        showError('media connection failed (ICE/DTLS)');
        setState('failed');
      }
    } else if (st === 'disconnected') {
      ui.status.textContent = 'reconnecting…';
      clearTimeout(s.iceRestartTimer);
      s.iceRestartTimer = setTimeout(() => {
        if (pc === s.pc && pc.connectionState === 'disconnected') restartIce(pc);
      }, ICE_RESTART_AFTER_MS);
    }
  };

  setState('negotiating');
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send({ type: 'offer', sdp: pc.localDescription.sdp });
  startStats();
}

// An ICE restart: a new offer with new ICE credentials, answered like the first. Returns
// false when the restarts are spent.
function restartIce(pc) {
  if ((s.iceRestartTries || 0) >= ICE_RESTARTS || !s.ws || s.ws.readyState !== WebSocket.OPEN) return false;
  s.iceRestartTries = (s.iceRestartTries || 0) + 1;
  s.iceRestarts = (s.iceRestarts || 0) + 1;
  s.remoteDescriptionSet = false;
  (async () => {
    const offer = await pc.createOffer({ iceRestart: true });
    if (pc !== s.pc) return;
    await pc.setLocalDescription(offer);
    send({ type: 'offer', sdp: pc.localDescription.sdp });
  })().catch((e) => console.warn('ICE restart failed', e));
  return true;
}

// relay=1: only TURN-relayed paths (tests, and operators checking their TURN server).
function pcConfig(session) {
  const iceTransportPolicy = params.get('relay') === '1' ? 'relay' : 'all';
  return { iceServers: session.iceServers, iceTransportPolicy, bundlePolicy: 'max-bundle' };
}

async function onAnswer(msg) {
  if (!s.pc) return;
  await s.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  s.remoteDescriptionSet = true;
  const pending = s.pendingCandidates;
  s.pendingCandidates = [];
  for (const c of pending) await addRemoteCandidate(c);
  updateButtons();
  const screen = s.pendingShare;
  s.pendingShare = null;
  if (screen && screen.getVideoTracks().some((t) => t.readyState === 'live')) {
    offerShare(s, screen).catch((e) => shareFailed(e));
  } else if (screen) {
    stopTracks(screen);
  }
}

async function onRemoteCandidate(candidate) {
  if (!s.pc || !s.remoteDescriptionSet) {
    s.pendingCandidates.push(candidate);
    return;
  }
  await addRemoteCandidate(candidate);
}

async function addRemoteCandidate(candidate) {
  try {
    if (candidate == null) {
      // End of the server's candidates.
      await s.pc.addIceCandidate();
    } else {
      await s.pc.addIceCandidate(candidate);
    }
  } catch (e) {
    console.warn('addIceCandidate failed', candidate, e);
  }
}

function playComposite() {
  const v = ui.composite;
  v.muted = false;
  const p = v.play();
  if (!p) return;
  p.then(() => {
    s.autoplayBlocked = false;
    ui.play.hidden = true;
  }).catch((e) => {
    if (e.name === 'NotAllowedError') {
      s.autoplayBlocked = true;
      ui.play.hidden = false;
    } else if (e.name !== 'AbortError') {
      console.warn('composite play()', e);
    }
  });
}

// ---- Controls ---------------------------------------------------------------------------

function hasVideo(session = s) {
  return !!(session.localStream && session.localStream.getVideoTracks().length);
}

function updateButtons() {
  const hasAudio = !!(s.localStream && s.localStream.getAudioTracks().length);
  const joined = !!s.id;
  ui.muteAudio.disabled = !hasAudio;
  ui.muteVideo.disabled = !hasVideo();
  ui.muteAudio.textContent = s.audioMuted ? 'Unmute mic' : 'Mute mic';
  ui.muteVideo.textContent = s.videoMuted ? 'Start camera' : 'Stop camera';
  ui.muteAudio.setAttribute('aria-pressed', String(s.audioMuted));
  ui.muteVideo.setAttribute('aria-pressed', String(s.videoMuted));
  // The switches speak to the server, so they wait for `joined`. "Audio only" already
  // keeps the camera from being sent, so "Pause my video" has nothing to add meanwhile.
  ui.pauseVideo.checked = s.paused;
  ui.pauseVideo.disabled = !joined || !hasVideo() || s.audioOnly;
  ui.audioOnly.checked = s.audioOnly;
  ui.audioOnly.disabled = !joined;
  ui.audioOnlyNotice.hidden = !s.audioOnly;
  // A share is offered after the main offer was answered.
  ui.share.hidden = !canShare();
  ui.share.disabled = !joined || !answered() || s.sharePicking;
  ui.share.textContent = s.share ? 'Stop sharing' : 'Share screen';
  ui.share.setAttribute('aria-pressed', String(!!s.share));
}

// Whether the others should see our placeholder instead of our camera.
function videoOff(session = s) {
  return session.videoMuted || session.paused || session.audioOnly;
}

// Tells the server (`mute` `video`) when videoOff() changed. One flag on the wire for three
// local reasons, so that switching one of them off while another is on does not unmute.
function syncVideoOff() {
  if (!s.id || !hasVideo()) return;
  const off = videoOff();
  const me = s.participants.get(s.id);
  if (me) me.video_muted = off;
  renderParticipants();
  if (off === s.videoOffSent) return;
  s.videoOffSent = off;
  send({ type: 'mute', video: off });
}

function setMuted(kind, muted) {
  if (!s.localStream) return;
  const tracks = kind === 'audio' ? s.localStream.getAudioTracks() : s.localStream.getVideoTracks();
  if (!tracks.length) return;
  for (const t of tracks) t.enabled = !muted;
  if (kind === 'audio') {
    s.audioMuted = muted;
    send({ type: 'mute', audio: muted });
    const me = s.participants.get(s.id);
    if (me) me.audio_muted = muted;
    renderParticipants();
  } else {
    s.videoMuted = muted;
    // A disabled track still sends black frames; stop the encoder as well.
    scheduleSenderUpdate(s.camera);
    syncVideoOff();
  }
  updateButtons();
}

// Going dark: the placeholder first (mute), then stop the encoder, so nobody sees our tile
// freeze. Coming back: the encoder first, then unmute, so the tile gets fresh frames.
async function switchVideo(change) {
  const wasOff = videoOff();
  change();
  updateButtons();
  if (!wasOff && videoOff()) syncVideoOff();
  await scheduleSenderUpdate(s.camera);
  syncVideoOff();
  renderStatsLine();
}

function setPaused(on) {
  if (!s.id || on === s.paused) return undefined;
  return switchVideo(() => { s.paused = on; });
}

function setAudioOnly(on) {
  if (!s.id || on === s.audioOnly) return undefined;
  return switchVideo(() => {
    s.audioOnly = on;
    send({ type: 'audio_only', enabled: on });
  });
}

ui.muteAudio.addEventListener('click', () => setMuted('audio', !s.audioMuted));
ui.muteVideo.addEventListener('click', () => setMuted('video', !s.videoMuted));
ui.pauseVideo.addEventListener('change', () => setPaused(ui.pauseVideo.checked));
ui.audioOnly.addEventListener('change', () => setAudioOnly(ui.audioOnly.checked));
ui.leave.addEventListener('click', () => leave());
ui.share.addEventListener('click', () => (s.share ? stopShare() : startShare()));
ui.layoutChoice.addEventListener('change', () => chooseLayout(ui.layoutChoice.value || null));
ui.play.addEventListener('click', () => {
  if (s.fake && s.fake.audioContext) s.fake.audioContext.resume().catch(() => {});
  playComposite();
});

// ---- Outgoing video senders -------------------------------------------------------------
//
// Everything the client changes on an outgoing video's RTCRtpSender goes through
// applySender: the camera's (on the main PeerConnection) and the shared screen's (on the
// share's), each following its own `send_hint` (scale, frame rate, bitrate). The camera's
// encoding is also switched off (`active: false`) while it is stopped, paused or audio only:
// that stops the encoder without renegotiating (the one offer of the session stands) and
// keeps the track attached, so the preview stays live and `active: true` resumes with a
// keyframe.

// One outgoing video: `pc()`, `track()` and `active()` say where it goes and whether it is
// sent, `canvas()` (optional) gives a size when the track reports none.
function outgoing(session, { kind, pc, track, active, canvas = () => null }) {
  return {
    session, kind, pc, track, active, canvas,
    hint: null, // the last `send_hint` of this kind
    sendParams: null, // what its sender last had applied (see applySender)
    queue: Promise.resolve(), // setParameters calls, one after another
    pending: false, // an applySender run is queued and has not started yet
    closed: false,
  };
}

function videoSender(pc) {
  if (!pc) return null;
  const t = pc.getTransceivers().find((x) => x.receiver.track && x.receiver.track.kind === 'video');
  return t ? t.sender : null;
}

// Queues one applySender run unless one is already waiting to start (it will read the
// latest state when it runs). Runs never overlap: each is getParameters -> modify ->
// setParameters, and an overlapping pair could fail or apply a stale hint last.
function scheduleSenderUpdate(out) {
  if (out.pending) return out.queue;
  out.pending = true;
  out.queue = out.queue.then(() => {
    out.pending = false;
    return applySender(out);
  }).catch((e) => {
    console.warn(`${out.kind} sender setParameters failed`, e);
  });
  return out.queue;
}

async function applySender(out) {
  if (out.session !== s || out.closed) return;
  const sender = videoSender(out.pc());
  const track = out.track();
  if (!sender || !track || sender.track !== track) return;
  const params = sender.getParameters();
  // No encodings before the transceiver is negotiated (Firefox): the run on `connected`
  // applies the state then.
  if (!params.encodings || !params.encodings.length) return;
  const enc = params.encodings[0];
  enc.active = out.active();
  const h = out.hint;
  let size = null;
  if (h) {
    const st = track.getSettings();
    const c = out.canvas();
    const tw = st.width || (c && c.width) || 0;
    const th = st.height || (c && c.height) || 0;
    enc.scaleResolutionDownBy = Math.max(1, tw / Math.max(1, h.width), th / Math.max(1, h.height));
    enc.maxFramerate = Math.max(1, h.fps);
    if (h.max_bitrate_bps > 0) enc.maxBitrate = h.max_bitrate_bps;
    else delete enc.maxBitrate;
    size = { track: [tw, th] };
  }
  await sender.setParameters(params);
  if (out.session !== s || out.closed) return;
  out.sendParams = {
    active: enc.active,
    scaleResolutionDownBy: enc.scaleResolutionDownBy ?? null,
    maxFramerate: enc.maxFramerate ?? null,
    maxBitrate: enc.maxBitrate ?? null,
    hint: h ? { width: h.width, height: h.height, fps: h.fps, max_bitrate_bps: h.max_bitrate_bps, on_canvas: h.on_canvas } : null,
    trackWidth: size ? size.track[0] : null,
    trackHeight: size ? size.track[1] : null,
  };
  renderStatsLine();
}

// A shared window can change size (or the person switches what is shared): the scale that
// fits it into the hint changes with it. Checked with the stats, every second.
function refitShare() {
  const share = s.share;
  const p = share && share.out.sendParams;
  const track = share && share.out.track();
  if (!p || !p.hint || !track) return;
  const st = track.getSettings();
  if ((st.width && st.width !== p.trackWidth) || (st.height && st.height !== p.trackHeight)) {
    scheduleSenderUpdate(share.out);
  }
}

// ---- Screen sharing -----------------------------------------------------------------------
//
// A share is a second RTCPeerConnection that only sends: the getDisplayMedia video, and its
// sound if the browser captured some. Its offer goes out once, with every candidate in it
// (the server does not trickle for a share), after the main offer was answered. The server
// shows it in the big tile of `rooms.share_layout`, letterboxed, to everyone on the room's
// layout, the sharer included: the sharer sees its own screen mirrored in the composite
// (one encode for all), so the picker is asked not to offer this very tab, which would
// show a hall of mirrors.

const DISPLAY_MEDIA = {
  video: { frameRate: 5 }, // text wants pixels, not motion (the server asks rooms.share_fps)
  audio: true, // a tab's or the system's sound, where the browser offers it
  selfBrowserSurface: 'exclude',
  surfaceSwitching: 'include',
  suppressLocalAudioPlayback: true,
};
const GATHER_MS = 3000; // the share's offer goes out with what was gathered by then
const SHARE_ANSWER_MS = 15000;

function canShare() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
}

function answered(session = s) {
  return !!(session.pc && session.pc.remoteDescription);
}

function stopTracks(stream) {
  for (const t of stream.getTracks()) t.stop();
}

// "Share screen": the browser's picker, then the share's offer. Resolves true once offered.
async function startShare() {
  const session = s;
  if (!canShare() || !session.id || !answered(session) || session.share || session.sharePicking) return false;
  session.sharePicking = true;
  updateButtons();
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia(DISPLAY_MEDIA);
  } catch (e) {
    // NotAllowedError: the picker was cancelled (or sharing is not allowed): nothing to say.
    if (e.name !== 'NotAllowedError') showNote(ui.shareNotice, `Cannot share the screen: ${e.name}: ${e.message}`);
    return false;
  } finally {
    session.sharePicking = false;
    if (session === s) updateButtons();
  }
  if (session !== s || session.share || !answered(session)) {
    stopTracks(stream);
    return false;
  }
  try {
    await offerShare(session, stream);
  } catch (e) {
    shareFailed(e);
    return false;
  }
  return !!session.share;
}

async function offerShare(session, stream) {
  const pc = new RTCPeerConnection(pcConfig(session));
  const video = stream.getVideoTracks()[0];
  const share = {
    pc,
    stream,
    answered: false,
    offered: false,
    timer: null,
    out: outgoing(session, { kind: 'screen', pc: () => pc, track: () => video, active: () => true }),
  };
  session.share = share;
  hideNote(ui.shareNotice);
  // Keep the pixels sharp and let the frame rate give under pressure.
  if ('contentHint' in video) video.contentHint = 'detail';
  pc.addTransceiver(video, { direction: 'sendonly', streams: [stream] });
  const audio = stream.getAudioTracks()[0];
  if (audio) pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] });
  // The browser's own "Stop sharing", or the shared window closed.
  video.onended = () => {
    if (s.share === share) stopShare();
  };
  pc.onconnectionstatechange = () => {
    if (s.share !== share) return;
    if (pc.connectionState === 'connected') {
      // Browsers may refuse setParameters before the transport is up; apply again.
      scheduleSenderUpdate(share.out);
    } else if (pc.connectionState === 'failed') {
      stopShare();
      showNote(ui.shareNotice, 'Your screen share ended: its connection failed');
    }
  };
  updateButtons();
  renderStatsLine();
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, GATHER_MS);
  if (s.share !== share) return;
  send({ type: 'share', sdp: pc.localDescription.sdp });
  share.offered = true;
  share.timer = setTimeout(() => {
    if (s.share !== share || share.answered) return;
    stopShare();
    showNote(ui.shareNotice, `The server did not answer the screen share within ${SHARE_ANSWER_MS / 1000} s`);
  }, SHARE_ANSWER_MS);
}

// Resolves when `pc` has gathered all its candidates, or after `ms`.
function iceGathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function shareFailed(e) {
  console.warn('screen share failed', e);
  stopShare();
  showNote(ui.shareNotice, `Cannot share the screen: ${e.message || e}`);
}

async function onShareAnswer(msg) {
  const share = s.share;
  if (!share || share.answered) return;
  share.answered = true;
  clearTimeout(share.timer);
  try {
    await share.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  } catch (e) {
    if (s.share === share) shareFailed(e);
    return;
  }
  scheduleSenderUpdate(share.out);
}

// Ends our share: tells the server (unless it ended it) and closes the PeerConnection and
// the capture. Returns whether there was one.
function stopShare({ tell = true } = {}) {
  const share = s.share;
  if (!share) return false;
  s.share = null;
  if (tell) send({ type: 'share_stop' });
  closeShare(share);
  updateButtons();
  renderStatsLine();
  return true;
}

function closeShare(share, { keepStream = false } = {}) {
  clearTimeout(share.timer);
  share.out.closed = true;
  share.pc.onconnectionstatechange = null;
  share.pc.close();
  for (const t of share.stream.getVideoTracks()) t.onended = null;
  if (!keepStream) stopTracks(share.stream);
}

// The banner over the composite and the participant list say who shares.
function renderSharing() {
  const sh = s.sharing;
  const on = !!(sh && sh.id);
  ui.sharing.hidden = !on;
  if (on) {
    const p = s.participants.get(sh.id);
    ui.sharing.textContent = sh.id === s.id ? 'You are sharing your screen'
      : `${sh.name || (p && p.name) || 'Someone'} is sharing their screen`;
  }
  renderParticipants();
  renderRoomLine();
}

// ---- Layout choice ------------------------------------------------------------------------

function fillLayoutPicker() {
  const sel = ui.layoutChoice;
  sel.replaceChildren(new Option('Room layout', ''), ...s.layouts.map((n) => new Option(n, n)));
  sel.value = s.layoutChoice && s.layouts.includes(s.layoutChoice) ? s.layoutChoice : '';
  sel.disabled = !s.layouts.length;
}

// See `name` (one of `joined`'s layouts), or the room's layout with null. Before `joined`
// it goes into the join.
function chooseLayout(name) {
  const layout = name || null;
  s.layoutChoice = layout;
  ui.layoutChoice.value = layout ?? '';
  hideNote(ui.layoutNotice);
  if (s.id) send({ type: 'layout', layout });
  renderRoomLine();
}

function showNote(el, text) {
  el.textContent = text;
  el.hidden = false;
}

function hideNote(el) {
  el.textContent = '';
  el.hidden = true;
}

// The size the composite is shown at, in device pixels (for `join`'s `display`): the
// element's layout size, or the window's before the element has one.
function displaySize() {
  const dpr = window.devicePixelRatio || 1;
  const r = ui.composite.getBoundingClientRect();
  const [w, h] = r.width > 0 && r.height > 0 ? [r.width, r.height] : [window.innerWidth, window.innerHeight];
  return { width: Math.max(1, Math.round(w * dpr)), height: Math.max(1, Math.round(h * dpr)) };
}

function leave() {
  if (s.state === 'idle' || s.state === 'left') return;
  send({ type: 'leave' });
  endCall('left');
}

// Closes everything of the current session and shows the form again.
function endCall(state) {
  cleanup();
  setState(state);
  ui.call.hidden = true;
  ui.form.hidden = false;
  ui.play.hidden = true;
}

// Closes the session's socket and PeerConnection and, unless `keepMedia`, its camera and
// microphone.
function cleanup({ keepMedia = false } = {}) {
  const old = s;
  clearInterval(old.statsTimer);
  clearInterval(old.pingTimer);
  clearTimeout(old.iceRestartTimer);
  old.statsTimer = null;
  old.pingTimer = null;
  if (old.share) closeShare(old.share, { keepStream: keepMedia });
  if (old.pendingShare && !keepMedia) stopTracks(old.pendingShare);
  old.share = null;
  old.pendingShare = null;
  if (old.pc) {
    old.pc.ontrack = null;
    old.pc.onicecandidate = null;
    old.pc.onconnectionstatechange = null;
    old.pc.close();
  }
  if (old.ws) {
    old.ws.onclose = null;
    old.ws.onmessage = null;
    if (old.ws.readyState <= WebSocket.OPEN) old.ws.close(1000, 'leave');
  }
  if (!keepMedia) {
    stopLocalMedia(old);
    old.localStream = null;
  }
  ui.composite.srcObject = null;
  ui.preview.srcObject = null;
  ui.sharing.hidden = true;
  hideNote(ui.layoutNotice);
  if (!keepMedia) hideNote(ui.shareNotice);
}

// ---- Participants -----------------------------------------------------------------------

function renderParticipants() {
  const ul = ui.participants;
  const items = [...s.participants.values()].sort((a, b) => (a.self === b.self ? 0 : a.self ? -1 : 1));
  ul.replaceChildren(...items.map((p) => {
    const li = document.createElement('li');
    li.dataset.id = p.id;
    if (p.self) li.classList.add('self');
    if (p.id === s.speaker) li.classList.add('speaking');
    if (p.audio_muted) li.classList.add('audio-muted');
    if (p.video_muted) li.classList.add('video-muted');
    const sharing = !!(s.sharing && s.sharing.id === p.id);
    if (sharing) li.classList.add('sharing');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = p.self ? `${p.name} (you)` : p.name;
    li.append(name);
    const flags = [];
    if (p.audio_muted) flags.push('mic off');
    if (p.video_muted) flags.push('camera off');
    if (p.id === s.speaker) flags.push('speaking');
    if (sharing) flags.push('sharing screen');
    if (flags.length) {
      const f = document.createElement('span');
      f.className = 'flags';
      f.textContent = flags.join(' · ');
      li.append(f);
    }
    return li;
  }));
}

// ---- Stats ------------------------------------------------------------------------------

function startStats() {
  clearInterval(s.statsTimer);
  s.statsTimer = setInterval(updateStats, 1000);
}

async function updateStats() {
  const session = s;
  const pc = session.pc;
  if (!pc) return;
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return;
  }
  if (session !== s) return;
  refitShare();
  let video = null;
  let audio = null;
  const codecs = new Map();
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && (r.kind || r.mediaType) === 'video') video = r;
    if (r.type === 'inbound-rtp' && (r.kind || r.mediaType) === 'audio') audio = r;
    if (r.type === 'codec') codecs.set(r.id, r);
  });
  if (!video) {
    s.inText = `waiting for media… (${pc.connectionState})`;
    renderStatsLine();
    return;
  }
  const now = video.timestamp;
  const bytes = video.bytesReceived || 0;
  let kbps = null; // needs two samples
  if (s.lastStats && now > s.lastStats.time) {
    kbps = ((bytes - s.lastStats.bytes) * 8) / (now - s.lastStats.time);
  }
  s.lastStats = { bytes, time: now };
  const codec = codecs.get(video.codecId);
  const codecName = codec ? codec.mimeType.replace(/^video\//, '') : '?';
  const width = video.frameWidth || ui.composite.videoWidth || 0;
  const height = video.frameHeight || ui.composite.videoHeight || 0;
  const fps = video.framesPerSecond ?? 0;
  const lost = (video.packetsLost || 0) + (audio ? audio.packetsLost || 0 : 0);
  s.stats = { kbps: kbps === null ? null : Math.round(kbps), width, height, fps, packetsLost: lost, codec: codecName };
  s.inText = `in: ${kbps === null ? '…' : Math.round(kbps)} kbps · ${width}×${height} · ${Math.round(fps)} fps`
    + ` · ${lost} packets lost · ${codecName}`;
  renderStatsLine();
}

function renderRoomLine() {
  // While a screen is shared, the room's layout gives way to rooms.share_layout (no
  // `layout_changed` says so; `sharing` does). A layout of one's own stays.
  const layout = s.layoutChoice ? `layout ${s.layout} (yours)`
    : s.sharing && s.sharing.id ? 'share layout' : `layout ${s.layout}`;
  ui.layout.textContent = `${layout}, ${s.tier == null && s.bandwidth ? 'audio only' : `tier ${s.tier}`}`;
}

// The stats line: what comes in (updateStats), the receive tier and the server's estimate
// of our downlink (`bandwidth`), and what the camera is asked to send (`send_hint`). The
// tooltip has the details.
function renderStatsLine() {
  const parts = [s.inText || 'waiting for media…'];
  const tips = [];
  const b = s.bandwidth;
  if (b) {
    const est = b.estimate_bps != null ? `${Math.round(b.estimate_bps / 1000)} kbit/s` : '?';
    parts.push(`${b.tier == null ? 'audio only' : `tier ${b.tier}`} · est ${est}`);
    tips.push(`receive tier: ${b.tier ?? 'none (audio only)'}; downlink estimate: ${est} (${b.source})`
      + `${b.audio_only ? '; audio only asked' : ''}`);
  }
  const hintTip = (what, out) => {
    const h = out.hint;
    const p = out.sendParams;
    return `${what} send hint: ${h.width}x${h.height} at ${h.fps} fps, ≤ ${Math.round(h.max_bitrate_bps / 1000)} kbit/s`
      + `${h.on_canvas ? '' : ' (not on any canvas)'}`
      + `${p && p.scaleResolutionDownBy ? `; applied: scale ÷${p.scaleResolutionDownBy.toFixed(2)}, ${p.maxFramerate} fps, ${p.maxBitrate ?? '∞'} bit/s` : '; not applied yet'}`;
  };
  if (hasVideo()) {
    const h = s.camera.hint;
    if (videoOff()) parts.push(`sending no video (${s.audioOnly ? 'audio only' : s.paused ? 'paused' : 'camera stopped'})`);
    else if (h) parts.push(`sending ≤${h.width}x${h.height}@${h.fps}`);
    if (h) tips.push(hintTip('camera', s.camera));
  }
  if (s.share) {
    const h = s.share.out.hint;
    parts.push(h ? `screen ≤${h.width}x${h.height}@${h.fps}` : 'screen: connecting');
    if (h) tips.push(hintTip('screen', s.share.out));
  }
  ui.stats.textContent = parts.join(' · ');
  ui.stats.title = tips.join('\n');
}

// ---- Start ------------------------------------------------------------------------------

ui.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  join({
    room: ui.room.value.trim(),
    name: ui.name.value.trim(),
    video: ui.camera.checked,
    audio: ui.microphone.checked,
  });
});

window.addEventListener('pagehide', () => {
  if (s.ws) send({ type: 'leave' });
});

if (params.get('room')) ui.room.value = params.get('room');
if (params.get('name')) ui.name.value = params.get('name');
if (params.get('room') && params.get('name')) {
  join({ room: params.get('room'), name: params.get('name'), video: true, audio: true });
}
