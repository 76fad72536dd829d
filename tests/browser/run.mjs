// End-to-end browser tests of `tessera serve` with the bundled web client (web/).
//
//   node tests/browser/run.mjs [chromium] [firefox]     (no argument: both)
//
// Starts `tessera serve --config tests/browser/test.toml --listen 127.0.0.1:0` (the binary
// from $TESSERA_BIN, else target/debug/tessera), then:
//   chromium  three Debian Chromium processes (playwright-core), each with its own fake
//             camera/microphone file from $TESSERA_FIXTURES (else target/fixtures, made by
//             scripts/make-fixtures.sh when missing), join `chromium-room`; every composite
//             must show every participant's colour in its tile, every page must hear the
//             others' tones and not its own (mix-minus); one leaves and its tile must go.
//             A screenshot of a page with all three tiles goes to target/browser-artifacts/screenshot.png
//             (copy it to docs/screenshot.png to refresh the README picture).
//             Then the camera senders follow the server's send_hint (setParameters and the
//             sent frame size), the stats line shows tier, estimate and hint, "Pause my video"
//             stops Bo's camera RTP and shows Bo's placeholder, and "Audio only" stops Cy's
//             video in and out (framesDecoded still, audio flowing, API tier null).
//   firefox   two Firefox ESR processes (puppeteer-core over WebDriver BiDi) join
//             `firefox-room` with the client's fake=colour hook; each composite must show
//             both colours (VP8: Firefox has no H.264 offline).
// Browsers are never downloaded: /usr/bin/chromium and /usr/bin/firefox-esr (installed by
// scripts/setup-browser.sh). Failure screenshots, page console logs and the server log go
// to target/browser-artifacts/. The whole run is bounded (RUN_TIMEOUT_MS, default 230 s)
// and the server is killed at the end, whatever happened. Exit status 0 only if all passed.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  assert, getJson, log, pollUntil, runStep, skipStep, sleep, startServer, TestError, withTimeout,
} from './helpers.mjs';

process.env.PUPPETEER_SKIP_DOWNLOAD = '1';
process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const fixtures = process.env.TESSERA_FIXTURES || path.join(root, 'target/fixtures');
const artifacts = path.join(root, 'target/browser-artifacts');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';
const RUN_TIMEOUT_MS = Number(process.env.RUN_TIMEOUT_MS || 230_000);

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  // Play the composite's sound without a user gesture, and offer loopback candidates.
  '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
];

const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.gmp-manager.updateEnabled': false,
  'media.autoplay.default': 0,
  'media.autoplay.block-webaudio': false,
  // Firefox's ICE prefs stay at their defaults (no loopback candidates, mDNS names for host
  // addresses, as the fake=colour hook never calls getUserMedia): it reaches the server over
  // the machine's interface addresses, which the default network.host_ips advertises.
  // Headless Firefox on a machine without a sound card never starts an AudioContext (the
  // fake=colour microphone and the test's analyser both need one): use cubeb's mock device.
  'media.cubeb.force_mock_context': true,
};

// Participants: fixture name, colour, tone (scripts/make-fixtures.sh) and display name.
const CHROMIUM_PEOPLE = [
  { fixture: 'p1', name: 'Ann', rgb: [0xd6, 0x28, 0x28], tone: 300 },
  { fixture: 'p2', name: 'Bo', rgb: [0x28, 0xb4, 0x3c], tone: 450 },
  { fixture: 'p3', name: 'Cy', rgb: [0x28, 0x50, 0xd6], tone: 600 },
];
const FIREFOX_PEOPLE = [
  { name: 'Eve', hex: 'e6d228', rgb: [0xe6, 0xd2, 0x28], tone: 750 },
  { name: 'Fay', hex: 'c828c8', rgb: [0xc8, 0x28, 0xc8], tone: 900 },
];

// A tile's centre must be this close (RGB distance) to its participant's colour.
const COLOUR_TOLERANCE = 60;

// ---- Small helpers ----------------------------------------------------------------------


function dist(a, b) {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

const hex = (rgb) => `#${rgb.map((c) => Math.round(c).toString(16).padStart(2, '0')).join('')}`;

// ---- The server -------------------------------------------------------------------------

const cleanups = []; // run in reverse at the end, whatever happened
let server = null; // {base, child, exited()} from helpers' startServer

// The tile rectangles of a room's tier, from GET /api/rooms/{room}: {width, height, tiles:
// [{id, x, y, w, h}]} in canvas pixels, or null if the server does not report them.
function tierTiles(roomJson, tierName) {
  let tiers = roomJson && roomJson.tiers;
  if (!tiers) return null;
  if (!Array.isArray(tiers)) tiers = Object.entries(tiers).map(([name, t]) => ({ name, ...t }));
  const tier = tiers.find((t) => t.name === tierName || t.tier === tierName)
    || tiers.find((t) => Array.isArray(t.tiles));
  if (!tier || !Array.isArray(tier.tiles)) return null;
  const width = tier.width ?? (tier.size && tier.size[0]);
  const height = tier.height ?? (tier.size && tier.size[1]);
  const tiles = tier.tiles.map((t) => ({
    id: t.id ?? t.participant, x: t.x, y: t.y, w: t.w ?? t.width, h: t.h ?? t.height,
  }));
  if (!width || !height || tiles.some((t) => [t.x, t.y, t.w, t.h].some((n) => typeof n !== 'number'))) return null;
  return { width, height, tiles };
}

// ---- In-page probes (each runs in the page; plain functions, no closures) ----------------

// Whether the composite has frames: {w, h, t} (currentTime), or null.
function probeVideo() {
  const v = document.querySelector('video[data-role="composite"]');
  if (!v) return null;
  return { w: v.videoWidth, h: v.videoHeight, t: v.currentTime, paused: v.paused, muted: v.muted };
}

// For each rect (in `space` = {width, height} canvas pixels), the median colour of its
// centre (the middle `frac` of each side), and the fraction of the rect's pixels within
// `tol` of each colour in `colours`.
function probeColours({ rects, space, colours, tol, frac }) {
  const v = document.querySelector('video[data-role="composite"]');
  const W = v.videoWidth;
  const H = v.videoHeight;
  if (!W || !H) return { error: 'no video frames' };
  let c = window.__tesseraProbeCanvas;
  if (!c) {
    c = document.createElement('canvas');
    window.__tesseraProbeCanvas = c;
  }
  c.width = W;
  c.height = H;
  const g = c.getContext('2d', { willReadFrequently: true });
  g.drawImage(v, 0, 0, W, H);
  const sx = W / (space ? space.width : W);
  const sy = H / (space ? space.height : H);
  const median = (a) => {
    a.sort((p, q) => p - q);
    return a[a.length >> 1];
  };
  return {
    size: [W, H],
    rects: rects.map((r) => {
      const x = Math.max(0, Math.round(r.x * sx));
      const y = Math.max(0, Math.round(r.y * sy));
      const w = Math.max(1, Math.min(W - x, Math.round(r.w * sx)));
      const h = Math.max(1, Math.min(H - y, Math.round(r.h * sy)));
      const all = g.getImageData(x, y, w, h).data;
      const near = colours.map(() => 0);
      for (let i = 0; i < all.length; i += 4) {
        for (let k = 0; k < colours.length; k += 1) {
          const [cr, cg, cb] = colours[k];
          if (Math.hypot(all[i] - cr, all[i + 1] - cg, all[i + 2] - cb) <= tol) near[k] += 1;
        }
      }
      const n = all.length / 4;
      const cw = Math.max(1, Math.round(w * frac));
      const ch = Math.max(1, Math.round(h * frac));
      const centre = g.getImageData(x + ((w - cw) >> 1), y + ((h - ch) >> 1), cw, ch).data;
      const rs = [];
      const gs = [];
      const bs = [];
      for (let i = 0; i < centre.length; i += 4) {
        rs.push(centre[i]);
        gs.push(centre[i + 1]);
        bs.push(centre[i + 2]);
      }
      return { id: r.id, median: [median(rs), median(gs), median(bs)], near: near.map((k) => k / n) };
    }),
  };
}

// Listens to the received audio for `ms` and returns the level (dB, analyser scale) at each
// of `tones` (the strongest bin within +-8 Hz) and the median level between 150 and 1500 Hz.
async function probeTones({ tones, ms }) {
  const v = document.querySelector('video[data-role="composite"]');
  const stream = window.tessera.remoteStream || v.srcObject;
  if (!stream || !stream.getAudioTracks().length) return { error: 'no received audio track' };
  const ctx = new AudioContext();
  await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 2000))]);
  if (ctx.state !== 'running') {
    ctx.close();
    return { error: `AudioContext does not start (${ctx.state}): no audio output device?` };
  }
  const src = ctx.createMediaStreamSource(new MediaStream(stream.getAudioTracks()));
  const an = ctx.createAnalyser();
  an.fftSize = 8192;
  an.smoothingTimeConstant = 0;
  src.connect(an);
  const bins = an.frequencyBinCount;
  const buf = new Float32Array(bins);
  const power = new Float64Array(bins);
  let frames = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    an.getFloatFrequencyData(buf);
    for (let i = 0; i < bins; i += 1) power[i] += 10 ** (buf[i] / 10);
    frames += 1;
  }
  const hz = ctx.sampleRate / an.fftSize;
  const db = (i) => 10 * Math.log10(power[i] / frames + 1e-30);
  const levels = {};
  for (const f of tones) {
    let best = -Infinity;
    for (let i = Math.floor((f - 8) / hz); i <= Math.ceil((f + 8) / hz); i += 1) best = Math.max(best, db(i));
    levels[f] = Math.round(best * 10) / 10;
  }
  const band = [];
  for (let i = Math.ceil(150 / hz); i <= Math.floor(1500 / hz); i += 1) band.push(db(i));
  band.sort((a, b) => a - b);
  const state = ctx.state;
  await ctx.close();
  return { levels, floor: Math.round(band[band.length >> 1] * 10) / 10, frames, state, rate: ctx.sampleRate };
}

// RTP counters of the page's PeerConnection (getStats) and its camera sender's first
// encoding, with the client's last send hint; `time` is the page's clock in ms.
async function probeRtp() {
  const t = window.tessera;
  const pc = t && t.pc;
  if (!pc) return { error: 'no PeerConnection' };
  const out = { time: performance.now(), hint: t.lastHint || null, bandwidth: t.lastBandwidth || null };
  const report = await pc.getStats();
  report.forEach((r) => {
    const kind = r.kind || r.mediaType;
    if (r.type === 'outbound-rtp' && kind === 'video') {
      out.outVideo = { bytesSent: r.bytesSent || 0, frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0 };
    }
    if (r.type === 'inbound-rtp' && kind === 'video') out.inVideo = { framesDecoded: r.framesDecoded || 0 };
    if (r.type === 'inbound-rtp' && kind === 'audio') out.inAudio = { packetsReceived: r.packetsReceived || 0 };
  });
  // The camera's transceiver, whatever its sender's track is now.
  const tr = pc.getTransceivers().find((x) => x.receiver.track && x.receiver.track.kind === 'video');
  const track = t.localStream && t.localStream.getVideoTracks()[0];
  if (tr && track) {
    const e = tr.sender.getParameters().encodings[0] || {};
    const st = track.getSettings();
    out.enc = {
      active: e.active, scaleResolutionDownBy: e.scaleResolutionDownBy, maxFramerate: e.maxFramerate,
      maxBitrate: e.maxBitrate, trackAttached: tr.sender.track === track,
    };
    out.track = { width: st.width, height: st.height, enabled: track.enabled };
  }
  return out;
}

// ---- Shared steps -----------------------------------------------------------------------

async function saveFailure(page, name) {
  try {
    const file = path.join(artifacts, `${name}.png`);
    await withTimeout(page.screenshot({ path: file }), 10_000, 'failure screenshot');
    log(`  saved ${path.relative(root, file)}`);
  } catch (e) {
    log(`  (no screenshot for ${name}: ${e.message})`);
  }
}

async function pageState(page) {
  return page.evaluate(() => {
    const t = window.tessera;
    const text = (r) => (document.querySelector(`[data-role="${r}"]`) || {}).textContent;
    return t ? {
      state: t.state, id: t.id, participants: t.participants, errors: t.errors,
      stats: text('stats'), error: text('error'), pc: t.pc && t.pc.connectionState,
    } : null;
  });
}

async function waitForComposite(people, ms) {
  await Promise.all(people.map(async (p) => {
    const first = await pollUntil(async () => {
      const v = await p.page.evaluate(probeVideo);
      return { ok: !!(v && v.w > 0 && v.t > 0.3), detail: v };
    }, ms);
    if (!first.ok) {
      const st = await pageState(p.page).catch(() => null);
      throw new TestError(`${p.name}: composite has no frames after ${ms} ms: video ${JSON.stringify(first.detail)}, client ${JSON.stringify(st)}`);
    }
    const t1 = first.detail.t;
    await sleep(800);
    const v2 = await p.page.evaluate(probeVideo);
    assert(v2.t > t1, `${p.name}: composite currentTime does not advance (${t1} -> ${v2.t})`);
    p.id = await p.page.evaluate(() => window.tessera.id);
    log(`  ${p.name} (${p.id}): composite ${v2.w}x${v2.h}, playing, t=${v2.t.toFixed(2)}${v2.paused ? ' PAUSED' : ''}`);
  }));
}

// Every composite shows every participant's colour in that participant's tile (or, when the
// server reports no tiles, somewhere in the frame).
async function checkColours(base, room, viewers, ms, senders = viewers) {
  const people = senders;
  const colours = people.map((p) => p.rgb);
  const results = await Promise.all(viewers.map((viewer) => pollUntil(async () => {
    const roomJson = await getJson(`${base}/api/rooms/${room}`);
    const layout = tierTiles(roomJson, 'test');
    if (layout) {
      const byId = new Map(people.map((p) => [p.id, p]));
      const rects = layout.tiles.filter((t) => byId.has(t.id));
      const missing = people.filter((p) => !rects.some((r) => r.id === p.id)).map((p) => p.name);
      if (missing.length) return { ok: false, detail: `no tile for ${missing} in ${JSON.stringify(layout.tiles)}` };
      const r = await viewer.page.evaluate(probeColours, {
        rects, space: layout, colours, tol: COLOUR_TOLERANCE, frac: 0.3,
      });
      if (r.error) return { ok: false, detail: r.error };
      const bad = [];
      const seen = [];
      for (const t of r.rects) {
        const want = byId.get(t.id);
        const d = dist(t.median, want.rgb);
        const nearest = people.reduce((a, b) => (dist(t.median, a.rgb) <= dist(t.median, b.rgb) ? a : b));
        seen.push(`${want.name}@(${layout.tiles.find((x) => x.id === t.id).x},${layout.tiles.find((x) => x.id === t.id).y}) ${hex(t.median)} d=${d.toFixed(0)}`);
        if (d > COLOUR_TOLERANCE || nearest !== want) bad.push(`${want.name}'s tile is ${hex(t.median)}, want ${hex(want.rgb)} (distance ${d.toFixed(0)})`);
      }
      return { ok: bad.length === 0, detail: bad.length ? bad.join('; ') : seen.join(', '), layout };
    }
    // No tile geometry from the server: each colour must cover a few % of the frame.
    const r = await viewer.page.evaluate(probeColours, {
      rects: [{ id: 'all', x: 0, y: 0, w: 1e9, h: 1e9 }], space: null, colours, tol: COLOUR_TOLERANCE, frac: 1,
    });
    if (r.error) return { ok: false, detail: r.error };
    const near = r.rects[0].near;
    const bad = people.filter((p, i) => near[i] < 0.03).map((p, i) => `${p.name} ${(near[i] * 100).toFixed(1)}%`);
    return {
      ok: bad.length === 0,
      detail: `(no tiles in /api/rooms/${room}; whole-frame check) ${people.map((p, i) => `${p.name} ${(near[i] * 100).toFixed(1)}%`).join(', ')}`,
    };
  }, ms, 500)));
  let failed = false;
  for (const [i, r] of results.entries()) {
    log(`  ${viewers[i].name} sees: ${r.detail}`);
    if (!r.ok) failed = true;
  }
  if (failed) {
    for (const p of viewers) await saveFailure(p.page, `${room}-colours-${p.name}`);
    throw new TestError(`not every composite shows every participant's colour in its tile (see above)`);
  }
  return results[0].layout || null;
}

// Every page hears every other participant's tone and not its own.
async function checkMixMinus(people) {
  const tones = people.map((p) => p.tone);
  const results = await Promise.all(people.map((p) => withTimeout(
    p.page.evaluate(probeTones, { tones, ms: 3000 }), 10_000, `${p.name}: listening to the received audio`,
  )));
  const bad = [];
  for (const [i, p] of people.entries()) {
    const r = results[i];
    if (r.error) {
      bad.push(`${p.name}: ${r.error}`);
      continue;
    }
    const own = r.levels[p.tone];
    const others = people.filter((q) => q !== p).map((q) => r.levels[q.tone]);
    log(`  ${p.name} hears ${people.map((q) => `${q.tone} Hz ${r.levels[q.tone]} dB`).join(', ')}; floor ${r.floor} dB (${r.state}, ${r.frames} frames)`);
    if (others.some((l) => l < r.floor + 20)) bad.push(`${p.name} does not hear every other participant`);
    if (own > Math.min(...others) - 20) bad.push(`${p.name} hears its own ${p.tone} Hz tone (${own} dB)`);
  }
  assert(bad.length === 0, bad.join('; '));
}

async function checkStats(people, codec) {
  for (const p of people) {
    const r = await pollUntil(async () => {
      const s = await p.page.evaluate(() => window.tessera.stats);
      return { ok: !!(s && s.width > 0 && s.kbps > 0 && s.codec && s.codec !== '?'), detail: s };
    }, 5000);
    if (!r.ok) {
      const dump = await p.page.evaluate(async () => {
        const out = [];
        (await window.tessera.pc.getStats()).forEach((x) => { if (x.type === 'inbound-rtp' || x.type === 'codec') out.push(x); });
        return out;
      });
      log(`  ${p.name}: inbound-rtp and codec stats: ${JSON.stringify(dump)}`);
    }
    assert(r.ok, `${p.name}: stats line never filled in: ${JSON.stringify(r.detail)}`);
    const text = await p.page.evaluate(() => document.querySelector('[data-role="stats"]').textContent);
    log(`  ${p.name} stats: ${text}`);
    if (codec) assert(r.detail.codec.toUpperCase() === codec, `${p.name}: receives ${r.detail.codec}, want ${codec}`);
  }
}

// Polls probeRtp on a page until check(earlier, now, secs) says ok, where `earlier` is a
// probe at least windowMs older than `now` (rates need two samples); the last result.
async function pollRtp(page, ms, windowMs, check) {
  const history = [];
  return pollUntil(async () => {
    const now = await page.evaluate(probeRtp);
    if (now.error) return { ok: false, detail: now.error };
    history.push(now);
    const earlier = history.filter((h) => now.time - h.time >= windowMs).pop();
    if (!earlier) return { ok: false, detail: 'measuring' };
    return check(earlier, now, (now.time - earlier.time) / 1000);
  }, ms, 300);
}

const rate = (a, b, secs, get) => (get(b) - get(a)) / secs;

// Polls until every viewer's list marks `subject` video-muted (or not), the API agrees, and
// the subject's tile (people.layout) shows its colour (or no longer does: the placeholder).
async function checkCameraSeen(base, room, people, subject, shown, ms) {
  const viewers = people.filter((p) => p !== subject);
  const tile = people.layout && people.layout.tiles.find((t) => t.id === subject.id);
  const results = await Promise.all(viewers.map((viewer) => pollUntil(async () => {
    const cls = await viewer.page.evaluate((id) => {
      const li = document.querySelector(`[data-role="participants"] li[data-id="${id}"]`);
      return li ? [...li.classList] : null;
    }, subject.id);
    const api = (await getJson(`${base}/api/rooms/${room}`)).participants.find((q) => q.id === subject.id);
    const c = await viewer.page.evaluate(probeColours, {
      rects: [tile || { x: 0, y: 0, w: 1e9, h: 1e9 }], space: tile ? people.layout : null,
      colours: [subject.rgb], tol: COLOUR_TOLERANCE, frac: 0.3,
    });
    if (c.error) return { ok: false, detail: c.error };
    const share = c.rects[0].near[0];
    const muted = !!cls && cls.includes('video-muted');
    const picture = tile ? dist(c.rects[0].median, subject.rgb) <= COLOUR_TOLERANCE : share > 0.03;
    return {
      ok: muted === !shown && !!api && api.video_muted === !shown && (shown ? picture : share < 0.02),
      detail: `list classes [${cls}], API video_muted ${api && api.video_muted}, ${(share * 100).toFixed(1)}% of ${subject.name}'s ${tile ? 'tile' : 'frame'} is its colour${tile ? ` (centre ${hex(c.rects[0].median)})` : ''}`,
    };
  }, ms)));
  for (const [i, r] of results.entries()) log(`  ${viewers[i].name} sees: ${r.detail}`);
  if (results.some((r) => !r.ok)) {
    for (const p of viewers) await saveFailure(p.page, `${room}-camera-${subject.name}-${shown ? 'on' : 'off'}-${p.name}`);
    throw new TestError(`the others do not see ${subject.name}'s camera ${shown ? 'back' : 'replaced by the placeholder'}`);
  }
}

async function checkParticipantList(people) {
  for (const p of people) {
    const r = await pollUntil(async () => {
      const items = await p.page.evaluate(() => [...document.querySelectorAll('[data-role="participants"] li')]
        .map((li) => ({ id: li.dataset.id, text: li.textContent, speaking: li.classList.contains('speaking') })));
      const ids = items.map((i) => i.id).sort();
      const want = people.map((q) => q.id).sort();
      const self = items.find((i) => i.id === p.id);
      return {
        ok: JSON.stringify(ids) === JSON.stringify(want) && !!self && self.text.includes('(you)'),
        detail: items,
      };
    }, 5000);
    assert(r.ok, `${p.name}: participant list ${JSON.stringify(r.detail)}, want ids ${people.map((q) => q.id)} with self marked (you)`);
  }
  log(`  participant lists agree: ${people.map((p) => `${p.name}=${p.id}`).join(', ')}`);
}

function attachConsole(page, name) {
  const file = fs.createWriteStream(path.join(artifacts, `${name}.console.log`));
  page.on('console', (m) => {
    try {
      file.write(`${m.type()}: ${m.text()}\n`);
    } catch { /* page gone */ }
  });
  page.on('pageerror', (e) => file.write(`pageerror: ${e.message || e}\n`));
}

// ---- Chromium ---------------------------------------------------------------------------

async function chromiumTests(base, report) {
  const { chromium } = await import('playwright-core');
  ensureFixtures();
  const room = 'chromium-room';
  const people = CHROMIUM_PEOPLE.map((p) => ({ ...p }));

  await report('chromium: three participants join and see every colour in its tile', async () => {
    await Promise.all(people.map(async (p) => {
      p.browser = await withTimeout(chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [
          ...CHROMIUM_ARGS,
          `--use-file-for-fake-video-capture=${path.join(fixtures, `${p.fixture}.y4m`)}`,
          `--use-file-for-fake-audio-capture=${path.join(fixtures, `${p.fixture}-48k.wav`)}`,
        ],
        // Keep the composite's sound decoded and playing (headless adds --mute-audio).
        ignoreDefaultArgs: ['--mute-audio'],
        timeout: 30_000,
      }), 35_000, `launch chromium for ${p.name}`);
      cleanups.push(() => p.browser.close().catch(() => {}));
      const ctx = await p.browser.newContext({ viewport: { width: 1280, height: 800 } });
      p.page = await ctx.newPage();
      attachConsole(p.page, `chromium-${p.name}`);
    }));
    log(`  launched ${people.length} chromium processes (${p0version(people[0].browser)})`);
    // Join one after another so the join order (and so the tile order) is Ann, Bo, Cy.
    // raw=1: no echo cancellation, noise suppression or gain control on the microphone.
    // With them Chromium moves the tones' levels by 10-20 dB and leaves a residue of a muted
    // participant's tone in others' mixes, which makes the level checks below guesswork.
    for (const p of people) {
      await p.page.goto(`${base}/?room=${room}&name=${p.name}&raw=1`, { timeout: 15_000 });
      await p.page.waitForFunction(() => window.tessera && window.tessera.id, null, { timeout: 10_000 });
    }
    await waitForComposite(people, 30_000);
    await checkParticipantList(people);
    people.layout = await checkColours(base, room, people, 25_000);
    await checkStats(people, 'VP8');
  });

  await report('chromium: browsers\' receiver reports reach the server (tier choice input)', async () => {
    const r = await pollUntil(async () => {
      const j = await getJson(`${base}/api/rooms/${room}`);
      const counts = j.participants.map((p) => p.feedback_reports);
      return { ok: counts.length === 3 && counts.every((n) => n > 0), detail: counts };
    }, 10_000);
    log(`  feedback reports per participant: ${JSON.stringify(r.detail)}`);
    assert(r.ok, `a participant's receiver reports never reached the server: ${JSON.stringify(r.detail)}`);
  }, { needs: 0 });

  await report('chromium: screenshot of a three-tile page', async () => {
    const ann = people[0];
    assert(ann.page, 'no page');
    const file = path.join(artifacts, "screenshot.png");
    await withTimeout(ann.page.screenshot({ path: file }), 10_000, 'screenshot');
    log(`  wrote ${path.relative(root, file)}`);
  }, { needs: 0 });

  await report('chromium: each page hears the others and not itself (mix-minus)', async () => {
    await checkMixMinus(people);
  }, { needs: 0 });

  await report('chromium: mute buttons reach the others (list, placeholder tile, silence)', async () => {
    const [ann, bo, cy] = people;
    await bo.page.click('[data-role="mute-audio"]');
    await bo.page.click('[data-role="mute-video"]');
    const local = await bo.page.evaluate(() => ({
      audio: window.tessera.localStream.getAudioTracks().map((t) => t.enabled),
      video: window.tessera.localStream.getVideoTracks().map((t) => t.enabled),
      buttons: [...document.querySelectorAll('[data-role^="mute-"]')].map((b) => b.textContent),
    }));
    log(`  ${bo.name} muted: tracks enabled ${JSON.stringify(local)}`);
    assert(!local.audio[0] && !local.video[0], `${bo.name}: local tracks still enabled after mute`);
    const tile = () => people.layout && people.layout.tiles.find((x) => x.id === bo.id);
    for (const viewer of [ann, cy]) {
      const r = await pollUntil(async () => {
        const cls = await viewer.page.evaluate((id) => {
          const li = document.querySelector(`[data-role="participants"] li[data-id="${id}"]`);
          return li ? [...li.classList] : null;
        }, bo.id);
        const rect = tile() || { x: 0, y: 0, w: 1e9, h: 1e9 };
        const c = await viewer.page.evaluate(probeColours, {
          rects: [rect], space: tile() ? people.layout : null, colours: [bo.rgb], tol: COLOUR_TOLERANCE, frac: 0.3,
        });
        const green = c.rects ? c.rects[0].near[0] : 1;
        return {
          ok: !!cls && cls.includes('audio-muted') && cls.includes('video-muted') && green < 0.02,
          detail: `list classes ${cls}, ${(green * 100).toFixed(1)}% of ${bo.name}'s tile still green${c.rects ? ` (centre ${hex(c.rects[0].median)})` : ''}`,
        };
      }, 6000);
      log(`  ${viewer.name} sees: ${r.detail}`);
      if (!r.ok) await saveFailure(viewer.page, `chromium-mute-${viewer.name}`);
      assert(r.ok, `${viewer.name} does not see ${bo.name} muted`);
    }
    await sleep(300);
    const hear = await withTimeout(ann.page.evaluate(probeTones, { tones: [bo.tone, cy.tone], ms: 2000 }), 10_000, 'listening');
    assert(!hear.error, hear.error);
    log(`  ${ann.name} hears ${bo.tone} Hz ${hear.levels[bo.tone]} dB, ${cy.tone} Hz ${hear.levels[cy.tone]} dB; floor ${hear.floor} dB`);
    assert(hear.levels[bo.tone] < hear.levels[cy.tone] - 30, `${ann.name} still hears muted ${bo.name}`);
    await bo.page.click('[data-role="mute-audio"]');
    await bo.page.click('[data-role="mute-video"]');
    const back = await pollUntil(async () => {
      const c = await ann.page.evaluate(probeColours, {
        rects: [tile()], space: people.layout, colours: [bo.rgb], tol: COLOUR_TOLERANCE, frac: 0.3,
      });
      return { ok: dist(c.rects[0].median, bo.rgb) <= COLOUR_TOLERANCE, detail: hex(c.rects[0].median) };
    }, 8000);
    log(`  after unmute ${ann.name} sees ${bo.name}'s tile ${back.detail}`);
    assert(back.ok, `${bo.name}'s picture did not come back after unmuting the camera`);
  }, { needs: 0 });

  await report('chromium: a send_hint reaches the camera sender and the sent frames shrink to it', async () => {
    // The hint is the largest tile the camera fills on any canvas; the client sets
    // scaleResolutionDownBy = max(1, trackW/W, trackH/H), maxFramerate = fps and
    // maxBitrate on its sender, and the encoder's frames follow.
    const results = await Promise.all(people.map((p) => pollUntil(async () => {
      const x = await p.page.evaluate(probeRtp);
      if (x.error) return { ok: false, detail: x.error };
      const h = x.hint;
      if (!h) return { ok: false, detail: 'no send_hint received' };
      if (!x.enc || !x.outVideo) return { ok: false, detail: `no camera sender stats: ${JSON.stringify(x)}` };
      const want = Math.max(1, x.track.width / h.width, x.track.height / h.height);
      const e = x.enc;
      const params = Math.abs((e.scaleResolutionDownBy ?? 1) - want) < 0.01 && e.maxFramerate === h.fps
        && (h.max_bitrate_bps > 0 ? e.maxBitrate === h.max_bitrate_bps : true);
      const fw = x.outVideo.frameWidth;
      const fh = x.outVideo.frameHeight;
      // A few pixels for the encoder's rounding of width/scale.
      const frames = fw > 0 && fw <= h.width + 8 && fh <= h.height + 8;
      const rooms = await getJson(`${base}/api/rooms/${room}`);
      const tiles = (rooms.tiers || []).flatMap((t) => (t.tiles || []).filter((q) => q.id === p.id));
      const largest = tiles.reduce((a, b) => (!a || b.w * b.h > a.w * a.h ? b : a), null);
      const fits = !largest || (h.on_canvas && Math.abs(h.width - largest.w) <= 8 && Math.abs(h.height - largest.h) <= 8);
      return {
        ok: h.kind === 'camera' && params && frames && fits,
        detail: `hint ${h.width}x${h.height}@${h.fps} ≤${h.max_bitrate_bps} bit/s on_canvas=${h.on_canvas}`
          + ` (largest tile ${largest ? `${largest.w}x${largest.h}` : '?'}); track ${x.track.width}x${x.track.height};`
          + ` sender scale ${e.scaleResolutionDownBy} (want ${want.toFixed(3)}) fps ${e.maxFramerate} bitrate ${e.maxBitrate};`
          + ` sending ${fw}x${fh}`,
      };
    }, 15_000, 500)));
    for (const [i, r] of results.entries()) log(`  ${people[i].name}: ${r.detail}`);
    assert(results.every((r) => r.ok), 'a camera sender does not follow its send_hint (see above)');
  }, { needs: 0 });

  await report('chromium: the stats line shows the receive tier, the downlink estimate and the send hint', async () => {
    for (const p of people) {
      const r = await pollUntil(async () => {
        const x = await p.page.evaluate(() => ({
          text: document.querySelector('[data-role="stats"]').textContent,
          b: window.tessera.lastBandwidth,
          h: window.tessera.lastHint,
        }));
        const m = /tier (\S+) · est (\d+) kbit\/s/.exec(x.text);
        const api = (await getJson(`${base}/api/rooms/${room}`)).participants.find((q) => q.id === p.id);
        const sending = x.h ? x.text.includes(`sending ≤${x.h.width}x${x.h.height}@${x.h.fps}`) : false;
        return {
          ok: !!m && !!x.b && x.b.tier === m[1] && x.b.estimate_bps > 0
            && Math.round(x.b.estimate_bps / 1000) === Number(m[2]) && !!api && api.tier === m[1] && sending,
          detail: `"${x.text}"; bandwidth ${JSON.stringify(x.b)}; API tier ${api && api.tier}`,
        };
      }, 10_000, 500);
      log(`  ${p.name}: ${r.detail}`);
      assert(r.ok, `${p.name}: the stats line lacks the tier, the estimate or the send hint`);
    }
  }, { needs: 0 });

  await report('chromium: "Pause my video" stops the camera\'s RTP and shows the placeholder; unpausing resumes', async () => {
    const bo = people[1];
    const out = (x) => x.outVideo.bytesSent;
    try {
      await bo.page.check('[data-role="pause-video"]');
      const stopped = await pollRtp(bo.page, 8000, 1500, (a, b, secs) => ({
        ok: rate(a, b, secs, out) < 300,
        detail: `${rate(a, b, secs, out).toFixed(0)} B/s of video out; encoding ${JSON.stringify(b.enc)}; camera track enabled ${b.track.enabled}`,
      }));
      log(`  ${bo.name} paused: ${stopped.detail}`);
      assert(stopped.ok, `${bo.name}'s camera is still being sent after "Pause my video"`);
      await checkCameraSeen(base, room, people, bo, false, 8000);
      const preview = await bo.page.evaluate(() => window.tessera.localStream.getVideoTracks()[0].readyState);
      assert(preview === 'live', `${bo.name}'s camera track is ${preview} while paused (the preview should stay live)`);

      await bo.page.uncheck('[data-role="pause-video"]');
      const resumed = await pollRtp(bo.page, 8000, 1500, (a, b, secs) => ({
        ok: rate(a, b, secs, out) > 1000,
        detail: `${rate(a, b, secs, out).toFixed(0)} B/s of video out; encoding ${JSON.stringify(b.enc)}`,
      }));
      log(`  ${bo.name} unpaused: ${resumed.detail}`);
      assert(resumed.ok, `${bo.name}'s camera is not sent again after unpausing`);
      await checkCameraSeen(base, room, people, bo, true, 10_000);
    } finally {
      // Whatever failed, the later tests need Bo's camera back.
      await bo.page.uncheck('[data-role="pause-video"]', { timeout: 5000 }).catch(() => {});
    }
  }, { needs: 0 });

  await report('chromium: "Audio only" stops the composite video but not the sound; unchecking brings video back', async () => {
    const cy = people[2];
    const frames = (x) => x.inVideo.framesDecoded;
    const audio = (x) => x.inAudio.packetsReceived;
    const out = (x) => x.outVideo.bytesSent;
    const apiTier = async () => {
      const q = (await getJson(`${base}/api/rooms/${room}`)).participants.find((x) => x.id === cy.id);
      return q ? q.tier : 'gone';
    };
    try {
      await cy.page.check('[data-role="audio-only"]');
      const still = await pollRtp(cy.page, 12_000, 2000, async (a, b, secs) => {
        const tier = await apiTier();
        return {
          // Opus sends 50 packets a second. Polled: the composite takes a moment to stop.
          ok: frames(b) - frames(a) === 0 && rate(a, b, secs, audio) > 25 && rate(a, b, secs, out) < 300
            && (tier === null || /audio.?only/i.test(tier)),
          detail: `${frames(b) - frames(a)} frames decoded and ${(rate(a, b, secs, audio)).toFixed(0)} audio packets/s in ${secs.toFixed(1)} s;`
            + ` ${rate(a, b, secs, out).toFixed(0)} B/s of video out; API tier ${JSON.stringify(tier)}; bandwidth ${JSON.stringify(b.bandwidth)}`,
        };
      });
      log(`  ${cy.name} audio only: ${still.detail}`);
      if (!still.ok) await saveFailure(cy.page, `${room}-audio-only-${cy.name}`);
      assert(still.ok, `${cy.name}: "Audio only" did not stop the video in and out while keeping the sound, or the API does not show it`);
      assert(await cy.page.isVisible('[data-role="audio-only-notice"]'), `${cy.name}: no audio-only notice over the composite`);
      // The client also mutes its camera (docs/protocol.md): the others see the placeholder.
      await checkCameraSeen(base, room, people, cy, false, 8000);

      await cy.page.uncheck('[data-role="audio-only"]');
      const back = await pollRtp(cy.page, 12_000, 1500, async (a, b, secs) => {
        const tier = await apiTier();
        return {
          ok: frames(b) - frames(a) >= 5 && typeof tier === 'string' && !/audio.?only/i.test(tier),
          detail: `${frames(b) - frames(a)} frames decoded in ${secs.toFixed(1)} s; API tier ${JSON.stringify(tier)}`,
        };
      });
      log(`  ${cy.name} back to video: ${back.detail}`);
      assert(back.ok, `${cy.name}: the composite video did not come back after unchecking "Audio only"`);
      await checkCameraSeen(base, room, people, cy, true, 10_000);
    } finally {
      await cy.page.uncheck('[data-role="audio-only"]', { timeout: 5000 }).catch(() => {});
    }
  }, { needs: 0 });

  await report('chromium: an ICE restart (a new offer with new credentials) keeps the call going', async () => {
    const cy = people[2];
    const ufrags = () => cy.page.evaluate(() => {
      const pc = window.tessera.pc;
      const u = (d) => d && (d.sdp.match(/a=ice-ufrag:(\S+)/) || [])[1];
      return { local: u(pc.localDescription), remote: u(pc.remoteDescription), state: pc.connectionState };
    });
    const before = await ufrags();
    const errs0 = (await pageState(cy.page)).errors.length;
    const frames0 = (await cy.page.evaluate(probeRtp)).inVideo.framesDecoded;
    assert(await cy.page.evaluate(() => window.tessera.restartIce()), `${cy.name}: restartIce() refused`);
    const r = await pollUntil(async () => {
      const now = await ufrags();
      const rtp = await cy.page.evaluate(probeRtp);
      const restarts = await cy.page.evaluate(() => window.tessera.iceRestarts);
      const frames = rtp.inVideo ? rtp.inVideo.framesDecoded - frames0 : 0;
      return {
        ok: restarts === 1 && now.local !== before.local && now.remote !== before.remote && now.state === 'connected' && frames >= 30,
        detail: `ufrags ${JSON.stringify(before)} -> ${JSON.stringify(now)}, ${restarts} restart(s), ${frames} frames decoded since`,
      };
    }, 15_000, 250);
    log(`  ${cy.name}: ${r.detail}`);
    assert(r.ok, `${cy.name}: after an ICE restart: ${r.detail}`);
    const errs = (await pageState(cy.page)).errors.slice(errs0);
    assert(errs.length === 0, `${cy.name}: errors after the restart: ${JSON.stringify(errs)}`);
    await checkColours(base, room, people, 10_000);
  }, { needs: 0 });

  await report('chromium: a participant leaves and its tile goes within 5 s', async () => {
    const leaver = people[2];
    const stay = people.slice(0, 2);
    const roomBefore = await getJson(`${base}/api/rooms/${room}`);
    const before = tierTiles(roomBefore, 'test');
    const oldTile = before && before.tiles.find((t) => t.id === leaver.id);
    const started = Date.now();
    await leaver.page.click('[data-role="leave"]');
    const form = await leaver.page.waitForSelector('[data-role="join-form"]', { state: 'visible', timeout: 3000 })
      .then(() => true, () => false);
    assert(form, `${leaver.name}: the join form did not come back after leave`);
    const ls = await pageState(leaver.page);
    assert(ls.state === 'left' && (!ls.pc || ls.pc === 'closed'), `${leaver.name}: after leave state=${ls.state} pc=${ls.pc}`);
    const results = await Promise.all(stay.map((viewer) => pollUntil(async () => {
      const now = tierTiles(await getJson(`${base}/api/rooms/${room}`), 'test');
      const rect = oldTile || { id: 'all', x: 0, y: 0, w: 1e9, h: 1e9 };
      const r = await viewer.page.evaluate(probeColours, {
        rects: [rect], space: oldTile ? before : null, colours: [leaver.rgb], tol: COLOUR_TOLERANCE, frac: 0.3,
      });
      if (r.error) return { ok: false, detail: r.error };
      const share = r.rects[0].near[0];
      const tiles = now ? now.tiles.length : null;
      const list = await viewer.page.evaluate(() => window.tessera.participants.map((q) => q.id));
      return {
        ok: share < 0.01 && (tiles === null || tiles === 2) && !list.includes(leaver.id),
        detail: `${(share * 100).toFixed(1)}% of ${leaver.name}'s former tile is still its colour, ${tiles ?? '?'} tiles, list ${list}`,
        ms: Date.now() - started,
      };
    }, 6000, 250)));
    for (const [i, r] of results.entries()) log(`  ${stay[i].name} after ${r.ms} ms: ${r.detail}`);
    if (results.some((r) => !r.ok)) {
      for (const p of stay) await saveFailure(p.page, `${room}-leave-${p.name}`);
      throw new TestError(`${leaver.name}'s tile did not go within 5 s`);
    }
    assert(results.every((r) => r.ms <= 6000), 'too slow');
    await checkColours(base, room, stay, 10_000);
  }, { needs: 0 });

  await report('chromium: a refused join shows the server\'s error', async () => {
    const p = people[2];
    await p.page.goto(`${base}/?room=${room}&name=${p.name}&tier=no-such-tier`, { timeout: 15_000 });
    const r = await pollUntil(async () => {
      const e = await p.page.evaluate(() => {
        const el = document.querySelector('[data-role="error"]');
        return { hidden: el.hidden, text: el.textContent };
      });
      return { ok: !e.hidden && /bad_request/.test(e.text), detail: e };
    }, 5000);
    log(`  error shown: ${JSON.stringify(r.detail)}`);
    assert(r.ok, 'no bad_request error shown for an unknown tier');
    const form = await p.page.evaluate(() => !document.querySelector('[data-role="join-form"]').hidden);
    assert(form, 'the join form did not come back after the refusal');
  }, { needs: 0 });

  await report('chromium: a viewer joins from the form (no camera, no microphone)', async () => {
    const p = people[2];
    const [ann, bo] = people;
    await p.page.goto(`${base}/`, { timeout: 15_000 });
    await p.page.fill('[data-role="room"]', room);
    await p.page.fill('[data-role="name"]', 'Viewer');
    await p.page.uncheck('[data-role="camera"]');
    await p.page.uncheck('[data-role="microphone"]');
    await p.page.click('[data-role="join"]');
    // The offer is made after `joined` (which sets the id), asynchronously: wait for it.
    await p.page.waitForFunction(() => window.tessera.pc && window.tessera.pc.localDescription, null, { timeout: 10_000 });
    const offer = await p.page.evaluate(() => window.tessera.pc.localDescription.sdp);
    const dirs = offer.split('\r\n').filter((l) => /^m=|^a=(sendrecv|recvonly|sendonly|inactive)$/.test(l));
    log(`  viewer's offer: ${dirs.join(' | ')}`);
    assert(dirs.length === 4 && dirs[0].startsWith('m=video') && dirs[1] === 'a=recvonly'
      && dirs[2].startsWith('m=audio') && dirs[3] === 'a=recvonly', 'the viewer\'s offer is not one recvonly video and one recvonly audio m-line');
    const viewer = { ...p, name: 'Viewer' };
    await waitForComposite([viewer], 20_000);
    const layout = await checkColours(base, room, [ann, bo, viewer], 10_000, [ann, bo]);
    assert(!layout || layout.tiles.length === 2, `a viewer got a tile: ${JSON.stringify(layout && layout.tiles)}`);
    const ids = await ann.page.evaluate(() => window.tessera.participants.map((q) => q.id));
    assert(ids.includes(viewer.id), `${ann.name}'s list ${ids} lacks the viewer ${viewer.id}`);
  }, { needs: 0 });

  for (const p of people) if (p.browser) await p.browser.close().catch(() => {});
}

function p0version(browser) {
  try {
    return `Chromium ${browser.version()}`;
  } catch {
    return 'Chromium';
  }
}

function ensureFixtures() {
  const need = CHROMIUM_PEOPLE.flatMap((p) => [`${p.fixture}.y4m`, `${p.fixture}-48k.wav`]);
  if (need.every((f) => fs.existsSync(path.join(fixtures, f)))) return;
  log(`making fixtures in ${fixtures}`);
  const r = spawnSync(path.join(root, 'scripts/make-fixtures.sh'), [fixtures], { stdio: 'inherit', timeout: 120_000 });
  assert(r.status === 0, `scripts/make-fixtures.sh ${fixtures} failed`);
}

// ---- Firefox ----------------------------------------------------------------------------

async function firefoxTests(base, report) {
  const puppeteer = (await import('puppeteer-core')).default;
  const room = 'firefox-room';
  const people = FIREFOX_PEOPLE.map((p) => ({ ...p }));

  await report('firefox: two participants (fake=colour) see both colours, over VP8', async () => {
    await Promise.all(people.map(async (p) => {
      p.browser = await withTimeout(puppeteer.launch({
        browser: 'firefox',
        protocol: 'webDriverBiDi',
        executablePath: FIREFOX,
        headless: true,
        extraPrefsFirefox: FIREFOX_PREFS,
        timeout: 30_000,
        protocolTimeout: 30_000,
      }), 40_000, `launch firefox for ${p.name}`);
      cleanups.push(() => p.browser.close().catch(() => {}));
      p.page = await p.browser.newPage();
      await p.page.setViewport({ width: 1280, height: 800 });
      attachConsole(p.page, `firefox-${p.name}`);
    }));
    log(`  launched ${people.length} firefox processes (${await people[0].browser.version()})`);
    for (const p of people) {
      await p.page.goto(`${base}/?room=${room}&name=${p.name}&fake=colour&colour=${p.hex}&tone=${p.tone}`, { timeout: 15_000 });
      await p.page.waitForFunction(() => window.tessera && window.tessera.id, { timeout: 10_000 });
    }
    await waitForComposite(people, 30_000);
    await checkParticipantList(people);
    await checkColours(base, room, people, 25_000);
    await checkStats(people, 'VP8');
  });

  await report('firefox: each page hears the other and not itself (mix-minus)', async () => {
    await checkMixMinus(people);
  }, { needs: 0 });

  for (const p of people) if (p.browser) await p.browser.close().catch(() => {});
}

// ---- Main -------------------------------------------------------------------------------

async function main() {
  const which = process.argv.slice(2);
  const want = (name) => which.length === 0 || which.includes(name);
  fs.rmSync(artifacts, { recursive: true, force: true });
  fs.mkdirSync(artifacts, { recursive: true });

  const results = [];
  // Runs one test; { needs: i } skips it when results[i] (an earlier test) failed.
  const report = async (name, fn, opts = {}) => {
    if (opts.needs !== undefined && results[groupStart + opts.needs]?.status !== 'passed') {
      return skipStep(results, name, 'an earlier step failed');
    }
    return runStep(results, name, fn);
  };

  let base;
  try {
    // TESSERA_WEB_DIR=web serves the client from web/ instead of the compiled-in copy.
    server = await startServer({ logFile: path.join(artifacts, 'server.log'), cleanups });
    base = server.base;
  } catch (e) {
    log(`FAIL starting the server: ${e.message}`);
    results.push({ name: 'server starts', status: 'failed', error: e });
  }
  if (base) {
    if (want('chromium')) {
      groupStart = results.length;
      await chromiumTests(base, report).catch((e) => {
        results.push({ name: 'chromium', status: 'failed', error: e });
        log(`FAIL chromium: ${e.stack || e}`);
      });
    }
    if (want('firefox')) {
      groupStart = results.length;
      await firefoxTests(base, report).catch((e) => {
        results.push({ name: 'firefox', status: 'failed', error: e });
        log(`FAIL firefox: ${e.stack || e}`);
      });
    }
    if (server && server.exited()) {
      results.push({ name: 'server stays up', status: 'failed' });
      log(`FAIL the server exited during the run: ${JSON.stringify(server.exited())}`);
    }
  }
  return results;
}

// `needs: i` names the i-th test of the current browser's group.
let groupStart = 0;

async function cleanupAll() {
  while (cleanups.length) {
    const fn = cleanups.pop();
    await withTimeout(Promise.resolve().then(fn), 8000, 'cleanup').catch(() => {});
  }
}

function summary(results) {
  const n = (s) => results.filter((r) => r.status === s).length;
  const failed = n('failed');
  if (failed && fs.existsSync(path.join(artifacts, 'server.log'))) {
    const lines = fs.readFileSync(path.join(artifacts, 'server.log'), 'utf8').trimEnd().split('\n');
    console.log(`--- last ${Math.min(30, lines.length)} lines of target/browser-artifacts/server.log ---`);
    console.log(lines.slice(-30).join('\n'));
    console.log('---');
  }
  for (const r of results) console.log(`${r.status.toUpperCase().padEnd(7)} ${r.name}`);
  console.log(`browser: ${n('passed')} passed, ${failed} failed${n('skipped') ? `, ${n('skipped')} skipped` : ''}`);
  return failed === 0 && n('passed') > 0;
}

const watchdog = setTimeout(async () => {
  log(`FAIL the run took longer than ${RUN_TIMEOUT_MS} ms; stopping`);
  await cleanupAll();
  console.log('browser: 0 passed, 1 failed');
  process.exit(1);
}, RUN_TIMEOUT_MS);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await cleanupAll();
    process.exit(130);
  });
}

let ok = false;
try {
  const results = await main();
  await cleanupAll();
  ok = summary(results);
} catch (e) {
  console.error(e);
  await cleanupAll();
}
clearTimeout(watchdog);
process.exit(ok ? 0 : 1);
