// Browser test of screen sharing and viewers' own layouts, with the bundled web client in
// Debian Chromium (playwright-core).
//
//   node tests/browser/share.mjs
//
// One server on tests/browser/test.toml (a 640x360 VP8 tier `test`; the room's layout is
// grid, rooms.share_layout the default `presenter`). Ann (red camera) and Bo (blue camera),
// both the client's fake=colour hook, join `share-room`. Then:
//   - Ann clicks "Share screen". The capture is Chromium's own: getDisplayMedia, called from
//     the click, with --use-fake-ui-for-media-stream (the picker accepts by itself) and
//     --use-fake-device-for-media-stream (the "entire screen" is a green 1280x720 test
//     pattern with a turning pac-man and a clock; it comes with an audio track). The API
//     must say Ann shares; in Bo's tier the share member's tile is the largest (about 3/4
//     of the canvas width); Bo's decoded composite shows the screen's green in that tile,
//     letterboxed (bars above and below the 16:9 picture), and Ann's and Bo's colours in
//     their small tiles; the sharer's sender follows its `send_hint` of kind `screen`.
//     A JPEG of Bo's page goes to target/browser-artifacts/share/share.jpg.
//   - Ann clicks "Stop sharing": nobody shares, the capture is stopped, the grid comes back
//     (two equal tiles, both colours).
//   - Bo picks `speaker` in the layout selector: the API lists his layout and a tier
//     `test@speaker`, and his composite has one big tile; back to "Room layout" (the hook,
//     chooseLayout(null)) returns him to `test` and the grid.
//   - An unknown layout is refused (layout_refused): the selector goes back to the room's.
//   - Ann shares, then Bo shares: one share per room, so Ann is told `share_ended` and her
//     button and capture reset; Bo's share is the room's.
//   - Ann shares and her socket closes: she rejoins and shares the same capture again.
//   - A third page opened with &layout=speaker joins with that layout.
// Logs and failure screenshots in target/browser-artifacts/share/. Bounded by RUN_TIMEOUT_MS.

import fs from 'node:fs';
import path from 'node:path';
import {
  assert, CHROMIUM_ARGS, dist, getJson, log, pollUntil, root, runScript, runStep, skipStep, startServer, TestError, withTimeout,
} from './helpers.mjs';

process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';

const artifacts = path.join(root, 'target/browser-artifacts/share');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const RUN_TIMEOUT_MS = Number(process.env.RUN_TIMEOUT_MS || 150_000);
const ROOM = 'share-room';
const PEOPLE = [
  { name: 'Ann', hex: 'd62828', rgb: [0xd6, 0x28, 0x28], tone: 300 },
  { name: 'Bo', hex: '2850d6', rgb: [0x28, 0x50, 0xd6], tone: 600 },
];
// A region's median colour must be this close (RGB distance) to the colour it should show,
// and further than FAR from the colours it should not.
const NEAR = 60;
const FAR = 100;

const cleanups = [];
const hex = (rgb) => `#${rgb.map((c) => Math.round(c).toString(16).padStart(2, '0')).join('')}`;

// ---- In-page probes (plain functions, run in the page) ------------------------------------

// The median colour of each rect ({x, y, w, h} in `space` = {width, height} canvas pixels)
// of the composite the page decodes now.
function probeMedians({ rects, space }) {
  const v = document.querySelector('video[data-role="composite"]');
  const W = v.videoWidth;
  const H = v.videoHeight;
  if (!W || !H) return { error: 'no video frames' };
  const c = document.createElement('canvas');
  c.width = W;
  c.height = H;
  const g = c.getContext('2d', { willReadFrequently: true });
  g.drawImage(v, 0, 0, W, H);
  const sx = W / space.width;
  const sy = H / space.height;
  const median = (a) => a.sort((p, q) => p - q)[a.length >> 1];
  return rects.map((r) => {
    const x = Math.max(0, Math.round(r.x * sx));
    const y = Math.max(0, Math.round(r.y * sy));
    const d = g.getImageData(x, y, Math.max(1, Math.min(W - x, Math.round(r.w * sx))), Math.max(1, Math.min(H - y, Math.round(r.h * sy)))).data;
    const ch = [[], [], []];
    for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k += 1) ch[k].push(d[i + k]);
    return ch.map(median);
  });
}

// The median colour of the middle 80% of the sharer's own capture, and its size.
async function probeCapture() {
  const pc = window.tessera.sharePc;
  const sender = pc && pc.getSenders().find((x) => x.track && x.track.kind === 'video');
  if (!sender) return { error: 'no share sender' };
  const v = document.createElement('video');
  v.muted = true;
  v.srcObject = new MediaStream([sender.track]);
  await v.play();
  // The first frame's size arrives with loadedmetadata (or resize); give up after 5 s.
  if (!v.videoWidth) {
    await new Promise((resolve) => {
      v.addEventListener('loadedmetadata', resolve, { once: true });
      v.addEventListener('resize', resolve, { once: true });
      setTimeout(resolve, 5000);
    });
  }
  if (!v.videoWidth) return { error: 'the capture had no picture size within 5 s' };
  const W = v.videoWidth;
  const H = v.videoHeight;
  const c = document.createElement('canvas');
  c.width = W;
  c.height = H;
  const g = c.getContext('2d', { willReadFrequently: true });
  g.drawImage(v, 0, 0, W, H);
  v.srcObject = null;
  const d = g.getImageData(Math.round(W * 0.1), Math.round(H * 0.1), Math.round(W * 0.8), Math.round(H * 0.8)).data;
  const ch = [[], [], []];
  for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k += 1) ch[k].push(d[i + k]);
  return { size: [W, H], median: ch.map((a) => a.sort((p, q) => p - q)[a.length >> 1]) };
}

function probeUi() {
  const t = window.tessera;
  const el = (r) => document.querySelector(`[data-role="${r}"]`);
  return {
    state: t.state,
    sharing: t.sharing,
    banner: el('sharing').hidden ? null : el('sharing').textContent,
    button: el('share').textContent,
    pressed: el('share').getAttribute('aria-pressed'),
    shareNotice: el('share-notice').hidden ? null : el('share-notice').textContent,
    pc: t.sharePc && t.sharePc.connectionState,
    hint: t.shareHint,
    sendParams: t.shareSendParams,
    choice: t.layoutChoice(),
    picker: el('layout-choice').value,
    layoutNotice: el('layout-notice').hidden ? null : el('layout-notice').textContent,
    roomLine: el('layout').textContent,
    errors: t.errors,
  };
}

// ---- Steps --------------------------------------------------------------------------------

// The room as the API lists it, with `viewer`'s tier: {json, me, tier, share}.
async function roomFor(base, viewer) {
  const json = await getJson(`${base}/api/rooms/${ROOM}`);
  const me = json.participants.find((p) => p.id === viewer.id);
  const tier = me && json.tiers.find((t) => t.name === me.tier);
  const share = json.participants.find((p) => p.kind === 'screen');
  return { json, me, tier, share };
}

const shortTiles = (tier) => (tier ? tier.tiles.map((t) => `${t.id}:${t.w}x${t.h}@${t.x},${t.y}`).join(' ') : 'no tier');
const centre = (t, frac) => ({ x: t.x + (t.w * (1 - frac)) / 2, y: t.y + (t.h * (1 - frac)) / 2, w: t.w * frac, h: t.h * frac });

// Every camera tile of `viewer`'s tier shows its owner's colour in `viewer`'s composite, and
// the tiles are what `shape(tier)` accepts.
async function checkCameras(base, people, viewer, shape, what, ms) {
  const r = await pollUntil(async () => {
    const { tier, json } = await roomFor(base, viewer);
    if (!tier) return { ok: false, detail: 'no tier for the viewer yet' };
    const bad = shape(tier, json);
    if (bad) return { ok: false, detail: `${bad}: ${shortTiles(tier)}` };
    const tiles = people.map((p) => tier.tiles.find((t) => t.id === p.id));
    if (tiles.some((t) => !t)) return { ok: false, detail: `a camera has no tile: ${shortTiles(tier)}` };
    const got = await viewer.page.evaluate(probeMedians, { rects: tiles.map((t) => centre(t, 0.3)), space: tier });
    if (got.error) return { ok: false, detail: got.error };
    const seen = people.map((p, i) => `${p.name} ${hex(got[i])} (d=${dist(got[i], p.rgb).toFixed(0)})`);
    return { ok: people.every((p, i) => dist(got[i], p.rgb) <= NEAR), detail: `${tier.name} ${shortTiles(tier)}; ${seen.join(', ')}` };
  }, ms, 400);
  log(`  ${viewer.name} sees ${what}: ${r.detail}`);
  if (!r.ok) {
    await saveFailure(viewer, what);
    throw new TestError(`${viewer.name} does not see ${what}: ${r.detail}`);
  }
}

// Two tiles of the same size: the room's grid for two.
function grid(tier) {
  if (tier.tiles.length !== 2) return `${tier.tiles.length} tiles, want 2`;
  const [a, b] = tier.tiles;
  return a.w === b.w && a.h === b.h ? null : 'tiles of different sizes';
}

async function saveFailure(p, what) {
  const file = path.join(artifacts, `fail-${p.name}-${what.replace(/[^a-z0-9]+/gi, '-')}.png`);
  await withTimeout(p.page.screenshot({ path: file }), 10_000, 'failure screenshot').catch(() => {});
  log(`  saved ${path.relative(root, file)}`);
}

async function waitUi(p, ms, pred, what) {
  const r = await pollUntil(async () => {
    const ui = await p.page.evaluate(probeUi);
    return { ok: pred(ui), detail: ui };
  }, ms, 250);
  if (!r.ok) await saveFailure(p, what);
  assert(r.ok, `${p.name}: ${what}: ${JSON.stringify(r.detail)}`);
  return r.detail;
}

// `sharer` clicks "Share screen"; resolves once its share's media connected.
async function share(sharer) {
  await sharer.page.click('[data-role="share"]');
  return waitUi(sharer, 15_000, (ui) => ui.pc === 'connected' && ui.button === 'Stop sharing' && ui.pressed === 'true',
    'the share connects and the button says "Stop sharing"');
}

// ---- Main ---------------------------------------------------------------------------------

async function main() {
  fs.rmSync(artifacts, { recursive: true, force: true });
  fs.mkdirSync(artifacts, { recursive: true });
  const results = [];
  const report = async (name, fn) => {
    if (results.length && results[0].status !== 'passed') return skipStep(results, name, 'the join failed');
    return runStep(results, name, fn);
  };

  const server = await startServer({ logFile: path.join(artifacts, 'server.log'), cleanups });
  const { base } = server;
  const { chromium } = await import('playwright-core');
  const browser = await withTimeout(chromium.launch({
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000,
  }), 35_000, 'launch chromium');
  cleanups.push(() => browser.close().catch(() => {}));
  const people = PEOPLE.map((p) => ({ ...p }));
  const [ann, bo] = people;

  await report('share: Ann and Bo join; the grid shows both cameras', async () => {
    for (const p of people) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      p.page = await ctx.newPage();
      const out = fs.createWriteStream(path.join(artifacts, `${p.name}.console.log`));
      p.page.on('console', (m) => out.write(`${m.type()}: ${m.text()}\n`));
      p.page.on('pageerror', (e) => out.write(`pageerror: ${e.message || e}\n`));
      cleanups.push(() => out.end());
      await p.page.goto(`${base}/?room=${ROOM}&name=${p.name}&fake=colour&colour=${p.hex}&tone=${p.tone}`, { timeout: 15_000 });
      await p.page.waitForFunction(() => window.tessera && window.tessera.id, null, { timeout: 15_000 });
      p.id = await p.page.evaluate(() => window.tessera.id);
    }
    log(`  ${people.map((p) => `${p.name}=${p.id}`).join(', ')}`);
    const layouts = await bo.page.evaluate(() => window.tessera.layouts);
    const options = await bo.page.$$eval('[data-role="layout-choice"] option', (os) => os.map((o) => [o.value, o.textContent]));
    log(`  joined.layouts ${JSON.stringify(layouts)}; selector ${JSON.stringify(options)}`);
    assert(layouts.includes('speaker') && layouts.includes('grid'), `joined.layouts lacks grid or speaker: ${layouts}`);
    assert(options.length === layouts.length + 1 && options[0][0] === '' && options[0][1] === 'Room layout',
      `the layout selector is not "Room layout" + joined.layouts: ${JSON.stringify(options)}`);
    for (const viewer of people) await checkCameras(base, people, viewer, grid, 'the grid', 25_000);
    await waitUi(ann, 5000, (ui) => ui.button === 'Share screen' && ui.banner === null, 'the share button is ready');
  });

  await report('share: Ann shares her screen; Bo sees it letterboxed in the presenter\'s big tile, the cameras small', async () => {
    const ui = await share(ann);
    log(`  Ann's button "${ui.button}", banner "${ui.banner}"`);
    const capture = await ann.page.evaluate(probeCapture);
    assert(!capture.error, `Ann's capture: ${capture.error}`);
    log(`  Ann's capture (Chromium's fake screen): ${capture.size.join('x')}, median ${hex(capture.median)}`);
    assert(people.every((p) => dist(capture.median, p.rgb) > FAR), 'the fake screen looks like a camera colour; pick other colours');
    // The API, Bo's tier and Bo's pixels, polled together until all agree.
    const r = await pollUntil(async () => {
      const { json, tier, share: member } = await roomFor(base, bo);
      if (json.sharing !== ann.id) return { ok: false, detail: `sharing ${json.sharing}, want ${ann.id}` };
      if (!member || member.name !== ann.name) return { ok: false, detail: 'no participant of kind screen named Ann' };
      if (!tier) return { ok: false, detail: 'no tier for Bo' };
      const big = tier.tiles.find((t) => t.id === member.id);
      const largest = tier.tiles.reduce((a, b) => (b.w * b.h > a.w * a.h ? b : a));
      const share = big ? big.w / tier.width : 0;
      if (!big || largest !== big || share < 0.7 || share > 0.76) {
        return { ok: false, detail: `the share ${member.id} is not the largest tile at about 75% of the width: ${shortTiles(tier)}` };
      }
      const cams = people.map((p) => tier.tiles.find((t) => t.id === p.id));
      if (cams.some((t) => !t || t.w * t.h * 4 > big.w * big.h)) return { ok: false, detail: `cameras not in small tiles: ${shortTiles(tier)}` };
      // The 16:9 picture letterboxed into the tile: bars above and below it.
      const pictureH = Math.min(big.h, (big.w * capture.size[1]) / capture.size[0]);
      const bar = (big.h - pictureH) / 2;
      const rects = [
        { x: big.x + big.w * 0.1, y: big.y + bar + pictureH * 0.1, w: big.w * 0.8, h: pictureH * 0.8 },
        { x: big.x + big.w * 0.25, y: big.y + bar * 0.2, w: big.w * 0.5, h: bar * 0.6 },
        ...cams.map((t) => centre(t, 0.3)),
      ];
      const got = await bo.page.evaluate(probeMedians, { rects, space: tier });
      if (got.error) return { ok: false, detail: got.error };
      const [picture, top, ...faces] = got;
      const detail = `${tier.name} ${shortTiles(tier)}; big tile ${hex(picture)} (screen ${hex(capture.median)}, d=${dist(picture, capture.median).toFixed(0)}),`
        + ` bar above it ${hex(top)} (${bar.toFixed(0)} px), ${people.map((p, i) => `${p.name} ${hex(faces[i])}`).join(', ')}`;
      return {
        ok: dist(picture, capture.median) <= NEAR && people.every((p) => dist(picture, p.rgb) > FAR)
          && bar >= 20 && dist(top, capture.median) > NEAR
          && people.every((p, i) => dist(faces[i], p.rgb) <= NEAR),
        detail,
      };
    }, 20_000, 500);
    log(`  Bo sees: ${r.detail}`);
    if (!r.ok) await saveFailure(bo, 'share');
    assert(r.ok, `Bo's composite does not show Ann's screen in the big tile and the cameras small: ${r.detail}`);

    const boUi = await waitUi(bo, 5000, (x) => x.banner === 'Ann is sharing their screen' && x.sharing.id === ann.id
      && x.button === 'Share screen', 'the banner says Ann shares');
    log(`  Bo's banner "${boUi.banner}"; room line "${boUi.roomLine}"`);
    const annUi = await waitUi(ann, 5000, (x) => x.banner === 'You are sharing your screen', 'Ann\'s banner');
    // The share's sender fits the capture into the screen hint (largest ratio, never < 1).
    const hinted = await waitUi(ann, 10_000, (x) => {
      const h = x.hint;
      const p = x.sendParams;
      if (!h || !p || h.kind !== 'screen' || !h.on_canvas) return false;
      const want = Math.max(1, p.trackWidth / h.width, p.trackHeight / h.height);
      return Math.abs(p.scaleResolutionDownBy - want) < 0.01 && p.maxFramerate === h.fps && p.maxBitrate === h.max_bitrate_bps;
    }, 'the share sender follows the screen send_hint');
    log(`  Ann's screen hint ${JSON.stringify(hinted.hint)}; applied ${JSON.stringify(hinted.sendParams)}; stats "${annUi.roomLine}"`);

    const shot = path.join(artifacts, 'share.jpg');
    await withTimeout(bo.page.screenshot({ path: shot, type: 'jpeg', quality: 60 }), 10_000, 'screenshot');
    log(`  wrote ${path.relative(root, shot)} (${Math.round(fs.statSync(shot).size / 1024)} KB; copy it to docs/share.jpg to refresh the picture)`);
  });

  await report('share: Ann stops sharing; nobody shares and the grid comes back', async () => {
    await ann.page.evaluate(() => {
      const pc = window.tessera.sharePc;
      window.__shareTracks = pc ? pc.getSenders().map((x) => x.track).filter(Boolean) : [];
    });
    await ann.page.click('[data-role="share"]');
    const ui = await waitUi(ann, 5000, (x) => x.pc === null && x.button === 'Share screen' && x.pressed === 'false',
      'the button says "Share screen" again and the share PC is gone');
    const tracks = await ann.page.evaluate(() => window.__shareTracks.map((t) => t.readyState));
    assert(tracks.length >= 1 && tracks.every((t) => t === 'ended'), `Ann's capture tracks are still ${tracks}`);
    log(`  Ann: button "${ui.button}", capture tracks ${tracks}`);
    const r = await pollUntil(async () => {
      const { json, share: member } = await roomFor(base, bo);
      return { ok: json.sharing === null && !member, detail: `sharing ${json.sharing}, screen member ${member && member.id}` };
    }, 10_000);
    log(`  API: ${r.detail}`);
    assert(r.ok, `the API still shows a share: ${r.detail}`);
    for (const viewer of people) await checkCameras(base, people, viewer, grid, 'the grid again', 15_000);
    await waitUi(bo, 5000, (x) => x.banner === null && x.sharing.id === null, 'the sharing banner goes');
  });

  await report('share: Bo picks the speaker layout (a tier variant test@speaker) and goes back to the room\'s', async () => {
    await bo.page.selectOption('[data-role="layout-choice"]', 'speaker');
    const speaker = (tier, json) => {
      if (!tier.name.endsWith('@speaker')) return `Bo's tier is ${tier.name}`;
      const me = json.participants.find((p) => p.id === bo.id);
      if (me.layout !== 'speaker') return `Bo's layout is ${me.layout}`;
      const [a, b] = [...tier.tiles].sort((x, y) => y.w * y.h - x.w * x.h);
      if (!a || !b || a.w * a.h < 4 * b.w * b.h) return 'no big speaker tile';
      return null;
    };
    await checkCameras(base, people, bo, speaker, 'his own speaker layout', 15_000);
    const { json } = await roomFor(base, bo);
    log(`  tiers: ${json.tiers.map((t) => `${t.name} (${t.receivers} receiver(s))`).join(', ')}`);
    const ui = await waitUi(bo, 5000, (x) => x.choice === 'speaker' && x.picker === 'speaker' && /speaker/.test(x.roomLine),
      'the selector and the room line say speaker');
    log(`  Bo's room line "${ui.roomLine}"`);
    // Ann still sees the room's grid.
    await checkCameras(base, people, ann, grid, 'the room\'s grid', 5000);

    await bo.page.evaluate(() => window.tessera.chooseLayout(null));
    const room = (tier, j) => {
      const me = j.participants.find((p) => p.id === bo.id);
      if (me.layout !== null || tier.name !== 'test') return `Bo's layout ${me.layout}, tier ${tier.name}`;
      return grid(tier);
    };
    await checkCameras(base, people, bo, room, 'the room\'s grid again', 15_000);
    await waitUi(bo, 5000, (x) => x.choice === null && x.picker === '', 'the selector says "Room layout"');
  });

  await report('share: an unknown layout is refused and the selector returns to the room\'s', async () => {
    await bo.page.evaluate(() => window.tessera.chooseLayout('no-such-layout'));
    const ui = await waitUi(bo, 5000, (x) => x.choice === null && x.picker === '' && !!x.layoutNotice, 'layout_refused handled');
    const refused = await bo.page.evaluate(() => window.tessera.lastLayoutRefused);
    log(`  lastLayoutRefused ${JSON.stringify(refused)}; notice "${ui.layoutNotice}"`);
    assert(refused && refused.layout === 'no-such-layout' && refused.reason, `lastLayoutRefused ${JSON.stringify(refused)}`);
    await checkCameras(base, people, bo, grid, 'the grid', 5000);
  });

  await report('share: one share per room: Bo sharing ends Ann\'s (share_ended)', async () => {
    await share(ann);
    await waitUi(bo, 10_000, (x) => x.sharing && x.sharing.id === ann.id, 'Bo hears that Ann shares');
    await ann.page.evaluate(() => {
      window.__shareTracks = window.tessera.sharePc.getSenders().map((x) => x.track).filter(Boolean);
    });
    await share(bo);
    const annUi = await waitUi(ann, 10_000, (x) => x.pc === null && x.button === 'Share screen' && !!x.shareNotice
      && x.sharing && x.sharing.id === bo.id && x.banner === 'Bo is sharing their screen', 'Ann\'s share ends');
    log(`  Ann: notice "${annUi.shareNotice}", banner "${annUi.banner}"`);
    const tracks = await ann.page.evaluate(() => window.__shareTracks.map((t) => t.readyState));
    assert(tracks.every((t) => t === 'ended'), `Ann's capture tracks are still ${tracks}`);
    const r = await pollUntil(async () => {
      const { json } = await roomFor(base, bo);
      const screens = json.participants.filter((p) => p.kind === 'screen');
      return { ok: json.sharing === bo.id && screens.length === 1 && screens[0].name === bo.name, detail: `sharing ${json.sharing}, screens ${JSON.stringify(screens.map((p) => [p.id, p.name]))}` };
    }, 10_000);
    log(`  API: ${r.detail}`);
    assert(r.ok, `the room does not show Bo's share alone: ${r.detail}`);
    await bo.page.evaluate(() => window.tessera.stopShare());
    const gone = await pollUntil(async () => {
      const { json } = await roomFor(base, bo);
      return { ok: json.sharing === null, detail: `sharing ${json.sharing}` };
    }, 10_000);
    assert(gone.ok, `Bo's stopShare() did not end the share: ${gone.detail}`);
  });

  await report('share: after a rejoin (socket lost) the same capture is shared again', async () => {
    await share(ann);
    const before = await ann.page.evaluate(() => ({
      track: window.tessera.sharePc.getSenders().find((x) => x.track && x.track.kind === 'video').track.id,
      reconnects: window.tessera.reconnects,
    }));
    // A socket that closes without a goodbye: the client rejoins as after losing the server.
    await ann.page.evaluate(() => window.tessera.ws.close());
    const r = await pollUntil(async () => {
      const now = await ann.page.evaluate(() => {
        const t = window.tessera;
        const sender = t.sharePc && t.sharePc.getSenders().find((x) => x.track && x.track.kind === 'video');
        return {
          id: t.id, state: t.state, reconnects: t.reconnects, pc: t.sharePc && t.sharePc.connectionState,
          track: sender && sender.track.id, live: sender && sender.track.readyState,
        };
      });
      const { json } = await roomFor(base, bo);
      const screens = json.participants.filter((p) => p.kind === 'screen');
      return {
        ok: now.reconnects > before.reconnects && now.id !== ann.id && now.pc === 'connected' && now.track === before.track
          && now.live === 'live' && json.sharing === now.id && screens.length === 1,
        detail: `Ann ${JSON.stringify(now)}; API sharing ${json.sharing}, screens ${screens.map((p) => p.id)}`,
        id: now.id,
      };
    }, 20_000, 500);
    log(`  ${r.detail}`);
    assert(r.ok, `Ann's share did not come back on her new session: ${r.detail}`);
    ann.id = r.id;
    await ann.page.click('[data-role="share"]');
    const gone = await pollUntil(async () => {
      const { json } = await roomFor(base, bo);
      return { ok: json.sharing === null, detail: `sharing ${json.sharing}` };
    }, 10_000);
    assert(gone.ok, `"Stop sharing" after the rejoin did not end the share: ${gone.detail}`);
  });

  await report('share: a page opened with ?layout=speaker joins with that layout', async () => {
    const cy = { name: 'Cy', hex: 'e6d228', rgb: [0xe6, 0xd2, 0x28], tone: 750 };
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    cy.page = await ctx.newPage();
    await cy.page.goto(`${base}/?room=${ROOM}&name=Cy&fake=colour&colour=${cy.hex}&tone=${cy.tone}&layout=speaker`, { timeout: 15_000 });
    await cy.page.waitForFunction(() => window.tessera && window.tessera.id, null, { timeout: 15_000 });
    cy.id = await cy.page.evaluate(() => window.tessera.id);
    const r = await pollUntil(async () => {
      const { me, tier } = await roomFor(base, cy);
      return { ok: !!me && me.layout === 'speaker' && !!tier && tier.name.endsWith('@speaker'), detail: `layout ${me && me.layout}, tier ${me && me.tier}` };
    }, 15_000);
    log(`  Cy in the API: ${r.detail}`);
    assert(r.ok, `Cy did not join with her layout: ${r.detail}`);
    const ui = await waitUi(cy, 5000, (x) => x.choice === 'speaker' && x.picker === 'speaker', 'Cy\'s selector says speaker');
    log(`  Cy's room line "${ui.roomLine}"`);
  });

  for (const p of people) {
    if (!p.page) continue;
    const errors = await p.page.evaluate(() => window.tessera.errors).catch(() => []);
    if (errors.length) log(`  ${p.name}'s page showed errors: ${JSON.stringify(errors)}`);
  }
  if (server.exited()) {
    results.push({ name: 'share: the server stays up', status: 'failed' });
    log(`FAIL the server exited during the run: ${JSON.stringify(server.exited())}`);
  }
  return results;
}

await runScript('share-browser', main, { timeoutMs: RUN_TIMEOUT_MS, cleanups });
