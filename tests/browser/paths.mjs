// Browser tests of the media paths for clients on hard networks.
//
//   node tests/browser/paths.mjs
//
// One Chromium runs on the host, one in a network namespace (`tictcp1`, a veth to the host)
// whose nftables drop every UDP packet in and out.
// - ICE-TCP: Ann (host) and Tom (namespace) join a server with `network.tcp_port` set. Tom
//   can only reach it over ICE-TCP (RFC 6544, the server's passive candidates): both pages
//   must reach `connected`, decode the composite and see each other's colour, Tom's
//   selected pair must be TCP to the server's ICE-TCP port, /metrics must count the
//   connection and the namespace's UDP drop counter must have counted Chromium's tries.
// - TURN: a private coturn (Debian's turnserver) on the veth address, handed out through
//   `network.ice_servers`; Uma (host) and Tia (namespace) join with `relay=1` (relay
//   candidates only). Uma must be relayed over UDP, Tia (no UDP) over TCP to the TURN
//   server, and both see each other's colour.
// Needs root and `ip netns` (prints SKIP otherwise). The binary comes from $TESSERA_BIN
// (else target/debug/tessera); logs and failure screenshots go to
// target/browser-artifacts/paths/. Bounded by RUN_TIMEOUT_MS.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  assert, CHROMIUM_ARGS, dist, freePort, log, pollUntil, runScript, sleep, TestError, tileColours, withTimeout,
} from './helpers.mjs';

process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bin = process.env.TESSERA_BIN || path.join(root, 'target/debug/tessera');
const artifacts = path.join(root, 'target/browser-artifacts/paths');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const RUN_TIMEOUT_MS = Number(process.env.RUN_TIMEOUT_MS || 150_000);
const TURN_USER = 'tessera';
const TURN_PASSWORD = 'relay-test-password';
const NS = 'tictcp1';
const HOST_IF = 'tictcp1h';
const NS_IF = 'tictcp1c';
const HOST_IP = '10.213.9.1';
const NS_IP = '10.213.9.2';
const ICE_TCP_PEOPLE = [
  { name: 'Ann', hex: 'd62828', rgb: [0xd6, 0x28, 0x28], tone: 300 },
  { name: 'Tom', hex: '2850d6', rgb: [0x28, 0x50, 0xd6], tone: 450, ns: true },
];
const TURN_PEOPLE = [
  { name: 'Uma', hex: '28b43c', rgb: [0x28, 0xb4, 0x3c], tone: 350, relay: 'udp' },
  { name: 'Tia', hex: 'e6d229', rgb: [0xe6, 0xd2, 0x29], tone: 500, ns: true, relay: 'tcp' },
];

const cleanups = [];

function sh(cmd, args, { mayFail = false } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 15_000 });
  if (!mayFail && r.status !== 0) {
    throw new TestError(`${cmd} ${args.join(' ')}: ${r.error ? r.error.message : `exit ${r.status}`} ${(r.stderr || '').trim()}`);
  }
  return r;
}
const inNs = (cmd, args, opts) => sh('ip', ['netns', 'exec', NS, cmd, ...args], opts);

function skip(why) {
  console.log(`# SKIP media-path browser tests: ${why} (nothing was tested)`);
  console.log('paths: 0 passed, 0 failed, 1 skipped');
  process.exit(0);
}

function removeNamespace() {
  const pids = (spawnSync('ip', ['netns', 'pids', NS], { encoding: 'utf8' }).stdout || '')
    .split('\n').map(Number).filter((p) => p > 1);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch { /* gone */ }
  }
  sh('ip', ['netns', 'del', NS], { mayFail: true });
  sh('ip', ['link', 'del', HOST_IF], { mayFail: true });
}

// A namespace on a veth to the host, whose nftables drop all UDP (IPv4 and IPv6), and count it.
function createNamespace() {
  removeNamespace();
  cleanups.push(removeNamespace);
  sh('ip', ['netns', 'add', NS]);
  sh('ip', ['link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF, 'netns', NS]);
  sh('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', HOST_IF]);
  sh('ip', ['link', 'set', HOST_IF, 'up']);
  inNs('ip', ['link', 'set', 'lo', 'up']);
  inNs('ip', ['addr', 'add', `${NS_IP}/24`, 'dev', NS_IF]);
  inNs('ip', ['link', 'set', NS_IF, 'up']);
  const rules = `table inet noudp {
  counter dropped { }
  chain out { type filter hook output priority 0; meta l4proto udp counter name "dropped" drop; }
  chain in { type filter hook input priority 0; meta l4proto udp drop; }
}
`;
  const file = path.join(artifacts, 'noudp.nft');
  fs.writeFileSync(file, rules);
  inNs('nft', ['-f', file]);
}

function udpDropped() {
  const r = inNs('nft', ['-j', 'list', 'counter', 'inet', 'noudp', 'dropped'], { mayFail: true });
  try {
    const c = JSON.parse(r.stdout).nftables.find((x) => x.counter).counter;
    return c.packets;
  } catch {
    return null;
  }
}

function track(child, name) {
  const out = fs.createWriteStream(path.join(artifacts, `${name}.log`));
  child.stdout.on('data', (d) => out.write(d));
  child.stderr.on('data', (d) => out.write(d));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(3000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    out.end();
  });
}

async function startServer(name, { tcp = false, iceServers = '[]' } = {}) {
  const [port, tcpPort] = [await freePort(), tcp ? await freePort() : 0];
  const cfg = path.join(artifacts, `${name}.toml`);
  fs.writeFileSync(cfg, `[server]
listen = "0.0.0.0:${port}"
[network]
host_ips = ["127.0.0.1", "${HOST_IP}"]
udp_port = 0
tcp_port = ${tcpPort}
ice_servers = ${iceServers}
[rooms]
default_tier = "test"
[tiers.test]
width = 640
height = 360
fps = 15
bitrate_kbps = 600
codec = "vp8"
[bandwidth]
audio_only = false
`);
  const child = spawn(bin, ['serve', '--config', cfg], {
    cwd: root, env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child, name);
  const listening = new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('listening on ')) resolve();
    });
    child.on('exit', (code) => reject(new TestError(`server exited (${code}); see ${path.relative(root, artifacts)}/${name}.log`)));
  });
  await withTimeout(listening, 30_000, 'server listening');
  log(`${name}: http://127.0.0.1:${port} and http://${HOST_IP}:${port}${tcp ? `, ICE-TCP on port ${tcpPort}` : ''}`);
  return { port, tcpPort };
}

async function getText(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new TestError(`GET ${url}: ${res.status}`);
  return res.text();
}

// A private coturn on the veth address: long-term credentials, relays on that address.
async function startTurn() {
  const port = await freePort();
  const child = spawn('turnserver', [
    '-n', '--listening-ip', HOST_IP, '--listening-port', String(port), '--relay-ip', HOST_IP,
    '--min-port', '49152', '--max-port', '65535', '--lt-cred-mech', '--user', `${TURN_USER}:${TURN_PASSWORD}`,
    '--realm', 'tessera.test', '--fingerprint', '--no-tls', '--no-dtls', '--no-cli', '--allow-loopback-peers',
    '--log-file', 'stdout', '--simple-log', '--verbose',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.on('error', (e) => log(`turnserver: ${e.message} (make setup-test installs coturn)`));
  track(child, 'turnserver');
  const r = await pollUntil(() => new Promise((resolve) => {
    const c = net.connect(port, HOST_IP, () => { c.destroy(); resolve({ ok: true }); });
    c.on('error', () => resolve({ ok: false }));
  }), 10_000, 100);
  assert(r.ok, `turnserver did not listen on ${HOST_IP}:${port}; see ${path.relative(root, artifacts)}/turnserver.log`);
  log(`turnserver on ${HOST_IP}:${port} (UDP and TCP)`);
  return port;
}

// The transport of a page's selected candidate pair: { local, remote } protocols and types.
async function selectedPair(page) {
  return page.evaluate(async () => {
    const pc = window.tessera.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    if (!pair) return null;
    const l = stats.get(pair.localCandidateId);
    const r = stats.get(pair.remoteCandidateId);
    return {
      local: l && `${l.protocol} ${l.candidateType} ${l.tcpType || ''}`.trim(),
      relayProtocol: l && l.relayProtocol,
      remote: r && `${r.protocol} ${r.candidateType} ${r.address}:${r.port}`,
      bytesReceived: pair.bytesReceived,
    };
  });
}

// Launches a Chromium per person (in the namespace for `ns`) and opens a page each.
async function launchPeople(people, port) {
  const { chromium } = await import('playwright-core');
  for (const p of people) {
    const args = [...CHROMIUM_ARGS];
    let executablePath = CHROMIUM;
    p.base = `http://127.0.0.1:${port}`;
    if (p.ns) {
      executablePath = path.join(artifacts, `chromium-${NS}.sh`);
      fs.writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${NS} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
      p.base = `http://${HOST_IP}:${port}`;
      // The camera needs a secure origin; http://10.213.9.1 is one only when we say so.
      args.push(`--unsafely-treat-insecure-origin-as-secure=${p.base}`);
    }
    p.browser = await withTimeout(chromium.launch({
      executablePath, headless: true, args, ignoreDefaultArgs: ['--mute-audio'], timeout: 45_000,
    }), 50_000, `launch chromium for ${p.name}`);
    cleanups.push(() => p.browser.close().catch(() => {}));
    const ctx = await p.browser.newContext({ viewport: { width: 960, height: 600 } });
    p.page = await ctx.newPage();
    p.page.on('console', (m) => fs.appendFileSync(path.join(artifacts, `page-${p.name}.log`), `${m.type()}: ${m.text()}\n`));
  }
}

// Every page joins `room`, reaches `connected` and sees every participant's colour in its tile.
async function joinAndSeeEachOther(people, port, room) {
  for (const p of people) {
    const relay = p.relay ? '&relay=1' : '';
    await p.page.goto(`${p.base}/?room=${room}&name=${p.name}&fake=colour&colour=${p.hex}&tone=${p.tone}${relay}`, { timeout: 30_000 });
    await p.page.waitForFunction(() => window.tessera && window.tessera.id, null, { timeout: 30_000 });
  }
  const r = await pollUntil(async () => {
    const states = await Promise.all(people.map((p) => p.page.evaluate(() => ({
      state: window.tessera.state, id: window.tessera.id, fps: window.tessera.stats && window.tessera.stats.fps,
    }))));
    if (!states.every((st) => st.state === 'connected' && st.fps > 0)) return { ok: false, detail: states };
    const info = JSON.parse(await getText(`http://127.0.0.1:${port}/api/rooms/${room}`));
    const tier = info.tiers.find((t) => t.tiles && t.tiles.length === people.length);
    if (!tier) return { ok: false, detail: 'no tier with every tile yet' };
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
  }, 60_000, 500);
  assert(r.ok, `the room is not right: ${JSON.stringify(r.detail)}`);
  log(`  every page connected and sees every colour: ${JSON.stringify(r.detail)}`);
}

async function main() {
  fs.rmSync(artifacts, { recursive: true, force: true });
  fs.mkdirSync(artifacts, { recursive: true });
  if (typeof process.getuid === 'function' && process.getuid() !== 0) skip('not running as root');
  for (const [what, file] of [['ip', '/usr/sbin/ip'], ['nft', '/usr/sbin/nft'], ['turnserver', '/usr/bin/turnserver'], ['chromium', CHROMIUM], ['the server', bin]]) {
    if (!fs.existsSync(file)) {
      if (what === 'ip') skip('`ip` is missing');
      throw new TestError(`missing ${what} (${file}); make setup-test installs it`);
    }
  }
  createNamespace();

  const results = [];
  let shown = [];
  const report = async (name, fn) => {
    log(`RUN  ${name}`);
    const start = Date.now();
    try {
      await fn();
      results.push({ name, status: 'passed' });
      log(`PASS ${name} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
    } catch (e) {
      results.push({ name, status: 'failed' });
      log(`FAIL ${name}: ${e instanceof TestError ? e.message : e.stack || e}`);
      for (const p of shown) if (p.page) await p.page.screenshot({ path: path.join(artifacts, `fail-${p.name}.png`) }).catch(() => {});
    }
  };

  await report('paths: a Chromium whose UDP is blocked joins over ICE-TCP and sees the composite', async () => {
    const { port, tcpPort } = await startServer('server-icetcp', { tcp: true });
    const people = ICE_TCP_PEOPLE.map((p) => ({ ...p }));
    shown = people;
    await launchPeople(people, port);
    await joinAndSeeEachOther(people, port, 'icetcp-room');
    const tom = people.find((p) => p.ns);
    const pair = await selectedPair(tom.page);
    log(`  ${tom.name}'s selected pair: local ${pair && pair.local}, remote ${pair && pair.remote}, ${pair && pair.bytesReceived} bytes received`);
    assert(pair && pair.local.startsWith('tcp') && pair.remote.startsWith('tcp') && pair.remote.endsWith(`:${tcpPort}`),
      `${tom.name} is not on ICE-TCP to port ${tcpPort}: ${JSON.stringify(pair)}`);
    const dropped = udpDropped();
    log(`  UDP packets dropped in ${NS}: ${dropped}`);
    assert(dropped > 0, `the namespace's UDP drop counter is ${dropped}: was UDP really blocked?`);
    const metrics = await getText(`http://127.0.0.1:${port}/metrics`);
    const m = /^tessera_media_tcp_connections (\d+)/m.exec(metrics);
    log(`  /metrics: tessera_media_tcp_connections ${m && m[1]}`);
    assert(m && Number(m[1]) >= 1, 'the server counts no ICE-TCP connection');
    for (const p of people) await p.browser.close().catch(() => {});
  });

  await report('paths: pages relayed by TURN, over UDP and (with UDP blocked) over TCP, see each other', async () => {
    const turnPort = await startTurn();
    const urls = [`turn:${HOST_IP}:${turnPort}?transport=udp`, `turn:${HOST_IP}:${turnPort}?transport=tcp`];
    const iceServers = `[{ urls = ${JSON.stringify(urls)}, username = "${TURN_USER}", credential = "${TURN_PASSWORD}" }]`;
    // No ICE-TCP: Tia's only way in is the TURN server over TCP.
    const { port } = await startServer('server-turn', { iceServers });
    const people = TURN_PEOPLE.map((p) => ({ ...p }));
    shown = people;
    await launchPeople(people, port);
    await joinAndSeeEachOther(people, port, 'turn-room');
    for (const p of people) {
      const pair = await selectedPair(p.page);
      log(`  ${p.name}'s selected pair: local ${pair && pair.local} (relayed over ${pair && pair.relayProtocol}), remote ${pair && pair.remote}`);
      assert(pair && / relay/.test(pair.local) && pair.relayProtocol === p.relay,
        `${p.name} is not relayed over ${p.relay}: ${JSON.stringify(pair)}`);
    }
  });
  return results;
}

await runScript('paths', main, { timeoutMs: RUN_TIMEOUT_MS, cleanups });
