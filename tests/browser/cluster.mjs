// Browser test of a cluster: two `tessera serve` nodes sharing a private redis-server on
// loopback, and the bundled web client in Debian Chromium.
//
//   node tests/browser/cluster.mjs
//
// Ann opens the page of node a and Bo the page of node b, both in room `cluster-room`: one
// of them joins through a node that does not hold the room (its signalling is proxied; its
// media goes straight to the room's node). Both must reach `connected` and decode the
// composite, each seeing the other's colour. Then the room's node is killed (SIGKILL): both
// pages must rejoin by themselves (the one whose own server died through the other node's
// URL, the other after the dead node's claim expired) and land on the live node, decoding
// the composite again, within REJOIN_MS.
// The binary comes from $TESSERA_BIN (else target/debug/tessera); logs and failure
// screenshots go to target/browser-artifacts/cluster/. Bounded by RUN_TIMEOUT_MS.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  assert, CHROMIUM_ARGS, dist, freePort, log, pollUntil, runScript, runStep, sleep, TestError, tileColours, withTimeout,
} from './helpers.mjs';

process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bin = process.env.TESSERA_BIN || path.join(root, 'target/debug/tessera');
const artifacts = path.join(root, 'target/browser-artifacts/cluster');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const RUN_TIMEOUT_MS = Number(process.env.RUN_TIMEOUT_MS || 150_000);
const ROOM = 'cluster-room';
const TTL_SECS = 3;
// From the SIGKILL to both pages connected again on the live node.
const REJOIN_MS = 30_000;
const SECRET = 'cluster-browser-secret-0123456789abcdef';
const PEOPLE = [
  { name: 'Ann', node: 0, hex: 'd62828', rgb: [0xd6, 0x28, 0x28], tone: 300 },
  { name: 'Bo', node: 1, hex: '28b43c', rgb: [0x28, 0xb4, 0x3c], tone: 450 },
];

const cleanups = [];

function track(child, name) {
  const out = fs.createWriteStream(path.join(artifacts, `${name}.log`));
  child.stdout.on('data', (d) => out.write(d));
  child.stderr.on('data', (d) => out.write(d));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(2000)]);
    }
    out.end();
  });
}

async function startRedis(port) {
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.on('error', (e) => log(`redis-server: ${e.message} (install redis-server: scripts/setup.sh)`));
  track(child, 'redis');
  const r = await pollUntil(() => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('PING\r\n'));
    s.on('data', (d) => { s.destroy(); resolve({ ok: d.toString().startsWith('+PONG') }); });
    s.on('error', () => resolve({ ok: false }));
  }), 10_000, 100);
  assert(r.ok, 'redis-server did not start');
  return child;
}

async function startNode(id, redisPort, udp) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const cfg = path.join(artifacts, `${id}.toml`);
  fs.writeFileSync(cfg, `[server]
listen = "127.0.0.1:${port}"
[network]
udp_port = ${udp}
tcp_port = 0
[rooms]
default_tier = "test"
[tiers.test]
width = 640
height = 360
fps = 15
bitrate_kbps = 600
codec = "vp8"
[cluster]
redis_url = "redis://127.0.0.1:${redisPort}"
node_id = "${id}"
advertise_url = "${base}"
secret = "${SECRET}"
node_ttl_secs = ${TTL_SECS}
`);
  const child = spawn(bin, ['serve', '--config', cfg], {
    cwd: root, env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child, id);
  const listening = new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('listening on ')) resolve();
    });
    child.on('exit', (code) => reject(new TestError(`node ${id} exited (${code}); see ${path.relative(root, artifacts)}/${id}.log`)));
  });
  await withTimeout(listening, 30_000, `node ${id} listening`);
  return { id, base, child };
}

async function getJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new TestError(`GET ${url}: ${res.status}`);
  return res.json();
}


// Both pages connected in one room on `node`, each decoding a composite where every
// participant's tile shows its colour.
async function checkRoom(people, node, ms) {
  const r = await pollUntil(async () => {
    const states = await Promise.all(people.map((p) => p.page.evaluate(() => ({
      state: window.tessera.state, id: window.tessera.id, fps: window.tessera.stats && window.tessera.stats.fps,
    }))));
    if (!states.every((st) => st.state === 'connected' && st.fps > 0)) return { ok: false, detail: states };
    const rooms = await getJson(`${node.base}/api/rooms`);
    const row = rooms.find((x) => x.room === ROOM);
    if (!row || row.node !== node.id || row.participants !== people.length) return { ok: false, detail: { states, row } };
    const info = await getJson(`${node.base}/api/rooms/${ROOM}`);
    const tier = info.tiers.find((t) => t.tiles && t.tiles.length === people.length);
    if (!tier) return { ok: false, detail: 'no tier with both tiles yet' };
    for (const [i, p] of people.entries()) p.id = states[i].id;
    for (const viewer of people) {
      const got = await tileColours(viewer.page, tier.tiles, tier.width, tier.height);
      if (!got) return { ok: false, detail: `${viewer.name}: no video yet` };
      for (const p of people) {
        const tile = got.find((t) => t.id === p.id);
        if (!tile || dist(tile.rgb, p.rgb) > 80) {
          return { ok: false, detail: `${viewer.name} sees ${p.name}'s tile as ${tile && tile.rgb.map(Math.round)}` };
        }
      }
    }
    return { ok: true, detail: states };
  }, ms, 500);
  assert(r.ok, `room not right on node ${node.id}: ${JSON.stringify(r.detail)}`);
}

async function main() {
  fs.rmSync(artifacts, { recursive: true, force: true });
  fs.mkdirSync(artifacts, { recursive: true });
  const results = [];
  const report = (name, fn) => runStep(results, name, fn);

  const redisPort = await freePort();
  await startRedis(redisPort);
  const nodes = [await startNode('a', redisPort, 63400), await startNode('b', redisPort, 63600)];
  const { chromium } = await import('playwright-core');
  const browser = await withTimeout(chromium.launch({
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, ignoreDefaultArgs: ['--mute-audio'], timeout: 30_000,
  }), 35_000, 'launch chromium');
  cleanups.push(() => browser.close().catch(() => {}));
  const people = PEOPLE.map((p) => ({ ...p }));
  let home;

  const joinedOk = await report('cluster: pages of two nodes join one room, one through a node without it', async () => {
    for (const p of people) {
      const ctx = await browser.newContext({ viewport: { width: 960, height: 600 } });
      p.page = await ctx.newPage();
      p.page.on('console', (m) => fs.appendFileSync(path.join(artifacts, `page-${p.name}.log`), `${m.type()}: ${m.text()}\n`));
      const base = nodes[p.node].base;
      await p.page.goto(`${base}/?room=${ROOM}&name=${p.name}&fake=colour&colour=${p.hex}&tone=${p.tone}`, { timeout: 15_000 });
      await p.page.waitForFunction(() => window.tessera && window.tessera.id, null, { timeout: 15_000 });
    }
    const rooms = await getJson(`${nodes[0].base}/api/rooms`);
    const row = rooms.find((x) => x.room === ROOM);
    assert(row, `room not listed: ${JSON.stringify(rooms)}`);
    home = nodes.find((n) => n.id === row.node);
    log(`  the room is on node ${home.id}; ${people.find((p) => nodes[p.node] !== home).name} joined through the other node`);
    await checkRoom(people, home, 40_000);
  });

  if (joinedOk) {
    await report('cluster: after SIGKILL of the room\'s node both pages rejoin on the live node', async () => {
      const live = nodes.find((n) => n !== home);
      const before = await Promise.all(people.map((p) => p.page.evaluate(() => window.tessera.reconnects)));
      const killed = Date.now();
      home.child.kill('SIGKILL');
      await checkRoom(people, live, REJOIN_MS);
      const after = await Promise.all(people.map((p) => p.page.evaluate(() => ({
        reconnects: window.tessera.reconnects, server: window.tessera.server,
      }))));
      log(`  both pages connected on node ${live.id} again ${((Date.now() - killed) / 1000).toFixed(1)} s after the SIGKILL: ${JSON.stringify(after)}`);
      for (const [i, p] of people.entries()) {
        assert(after[i].reconnects > before[i], `${p.name} did not rejoin`);
        if (nodes[p.node] === home) assert(after[i].server === live.base, `${p.name} rejoined through ${after[i].server}, not the live node`);
      }
    });
  }
  for (const r of results) {
    if (r.status === 'failed') {
      for (const p of people) if (p.page) await p.page.screenshot({ path: path.join(artifacts, `fail-${p.name}.png`) }).catch(() => {});
      break;
    }
  }
  return results;
}

await runScript('cluster-browser', main, { timeoutMs: RUN_TIMEOUT_MS, cleanups });
