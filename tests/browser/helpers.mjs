// Helpers shared by the browser tests (run.mjs, shaped.mjs, cluster.mjs, icetcp.mjs):
// logging with elapsed time, assertions, waits that always have a deadline, free ports and
// the colours of a composite's tiles.

import net from 'node:net';

export const t0 = Date.now();
export const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class TestError extends Error {}

export function assert(cond, msg) {
  if (!cond) throw new TestError(msg);
}

export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new TestError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Polls fn() (which returns {ok, detail}) until ok or the time is up; returns the last result.
export async function pollUntil(fn, ms, every = 300) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
    } catch (e) {
      last = { ok: false, detail: `error: ${e.message}` };
    }
    if (last.ok || Date.now() >= end) return last;
    await sleep(every);
  }
}

// Debian Chromium, headless, with fake devices; playback with sound without a gesture, and
// loopback candidates (the servers listen on 127.0.0.1).
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
];

// A TCP port free on 127.0.0.1 a moment ago.
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// The colour at the centre of each tile of the composite a page decodes now.
export async function tileColours(page, tiles, width, height) {
  return page.evaluate(({ tiles, width, height }) => {
    const v = document.querySelector('[data-role="composite"]');
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = width;
    c.height = height;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, width, height);
    return tiles.map((t) => {
      const d = g.getImageData(Math.round(t.x + t.w / 2) - 4, Math.round(t.y + t.h / 2) - 4, 8, 8).data;
      const m = [0, 0, 0];
      for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) m[k] += d[i + k] / (d.length / 4);
      return { id: t.id, rgb: m };
    });
  }, { tiles, width, height });
}

export const dist = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

// Runs a test script's `main` (which returns [{name, status}]) under a watchdog of
// `timeoutMs`, runs `cleanups` (last first, 8 s each) however it ends, prints one line per
// test and `LABEL: N passed, M failed`, and exits 0 only if something passed and nothing
// failed.
export async function runScript(label, main, { timeoutMs, cleanups }) {
  const cleanupAll = async () => {
    while (cleanups.length) {
      const fn = cleanups.pop();
      await withTimeout(Promise.resolve().then(fn), 8000, 'cleanup').catch(() => {});
    }
  };
  const watchdog = setTimeout(async () => {
    log(`FAIL the run took longer than ${timeoutMs} ms; stopping`);
    await cleanupAll();
    console.log(`${label}: 0 passed, 1 failed`);
    process.exit(1);
  }, timeoutMs);
  let ok = false;
  try {
    const results = await main();
    await cleanupAll();
    const n = (st) => results.filter((r) => r.status === st).length;
    for (const r of results) console.log(`${r.status.toUpperCase().padEnd(7)} ${r.name}`);
    console.log(`${label}: ${n('passed')} passed, ${n('failed')} failed`);
    ok = n('failed') === 0 && n('passed') > 0;
  } catch (e) {
    console.error(e);
    await cleanupAll();
  }
  clearTimeout(watchdog);
  process.exit(ok ? 0 : 1);
}
