// Helpers shared by the browser tests (run.mjs, shaped.mjs): logging with elapsed time,
// assertions, and waits that always have a deadline.

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
