// Helpers shared by the browser tests (run.mjs, share.mjs, shaped.mjs, cluster.mjs,
// paths.mjs): logging with elapsed time, assertions, waits that always have a deadline, free
// ports, the colours of a composite's tiles, and one `tessera serve` on tests/browser/test.toml.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

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

// Runs one named test: logs RUN, then PASS with its time or FAIL with the error, and pushes
// { name, status, error } to `results`. Returns whether it passed.
export async function runStep(results, name, fn) {
  log(`RUN  ${name}`);
  const start = Date.now();
  try {
    await fn();
    results.push({ name, status: 'passed' });
    log(`PASS ${name} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
    return true;
  } catch (e) {
    results.push({ name, status: 'failed', error: e });
    log(`FAIL ${name}: ${e instanceof TestError ? e.message : e.stack || e}`);
    return false;
  }
}

// Records a test that did not run because `why`.
export function skipStep(results, name, why) {
  results.push({ name, status: 'skipped' });
  log(`SKIP ${name} (${why})`);
}

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

// ---- One server on tests/browser/test.toml (run.mjs, share.mjs) ---------------------------

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');
export const serverBin = process.env.TESSERA_BIN || path.join(root, 'target/debug/tessera');

// tests/browser/test.toml, or with TESSERA_WEB_DIR=web a copy of it that serves the client
// from that directory instead of the copy compiled into the binary (for editing web/
// without rebuilding).
export function testConfig() {
  const dir = process.env.TESSERA_WEB_DIR;
  if (!dir) return path.join(here, 'test.toml');
  const file = path.join(root, 'target/browser-test.toml');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${fs.readFileSync(path.join(here, 'test.toml'), 'utf8')}
[server]
web_dir = ${JSON.stringify(path.resolve(dir))}
`);
  return file;
}

// Starts `tessera serve --config testConfig() --listen 127.0.0.1:0` (UDP and TCP media
// ports 0 too), its output to `logFile`; resolves to {base, child, exited()} once it prints
// its address. Pushes its stop onto `cleanups`.
export async function startServer({ logFile, cleanups, config = testConfig() }) {
  assert(fs.existsSync(serverBin), `no server binary at ${serverBin} (cargo build -p tessera, or set TESSERA_BIN)`);
  const out = fs.createWriteStream(logFile);
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' };
  log(`starting ${path.relative(root, serverBin)} serve --config ${path.relative(root, config)} --listen 127.0.0.1:0 --udp-port 0 --tcp-port 0`);
  const child = spawn(serverBin, ['serve', '--config', config, '--listen', '127.0.0.1:0', '--udp-port', '0', '--tcp-port', '0'], {
    cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  cleanups.push(async () => {
    await stopServer(child);
    out.end();
  });
  child.stderr.on('data', (d) => out.write(d));
  let exited = null;
  const exitedPromise = new Promise((resolve) => child.on('exit', (code, sig) => {
    exited = { code, sig };
    resolve(exited);
  }));
  const url = new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      out.write(`${line}\n`);
      const m = /listening on (https?:\/\/[^\s]+)/.exec(line);
      if (m) resolve(m[1].replace(/\/$/, ''));
    });
    exitedPromise.then((e) => reject(new TestError(`server exited before listening (${JSON.stringify(e)}); see ${path.relative(root, logFile)}`)));
    child.on('error', (e) => reject(new TestError(`cannot start ${serverBin}: ${e.message}`)));
  });
  const base = await withTimeout(url, 30_000, 'server to print "listening on http://..."');
  log(`server at ${base}`);
  return { base, child, exited: () => exited };
}

async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const done = new Promise((r) => child.once('exit', r));
  if (await Promise.race([done.then(() => true), sleep(3000).then(() => false)])) return;
  child.kill('SIGKILL');
  await Promise.race([done, sleep(2000)]);
}

export async function getJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new TestError(`GET ${url}: ${res.status}`);
  return res.json();
}
