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
// - TURN: a private coturn (Debian's turnserver) on the veth address with TURN REST
//   credentials (`use-auth-secret`): the server has its `static-auth-secret` as
//   `network.turn_secret` and hands out `network.ice_servers` (URLs only) with a username
//   and password of each client's own. Uma (host) and Tia (namespace) join with `relay=1`
//   (relay candidates only): each page's RTCPeerConnection must have a username
//   `EXPIRY:NAME`, Uma must be relayed over UDP, Tia (no UDP) over TCP to the TURN server,
//   and both see each other's colour.
// - WHIP: the namespace gets its UDP back. Wes, a page in the namespace served from another
//   origin (a small HTTP server on another port), publishes a canvas by WHIP (RFC 9725) the
//   way OBS does: the offer goes out before any candidate, candidates follow by PATCH
//   (trickle ICE, `If-Match` with the ETag; CORS lets the page read Location and ETag).
//   The server must count its frames and tile it, and Vic (the web client on the host)
//   must see its colour. Then the namespace's address changes (the old path dies) and the
//   page restarts ICE by PATCH (`If-Match: *`): it must get a new ETag, be connected again
//   from the new address, and the server must count its frames again. A CORS preflight
//   from the page's origin is checked from node too.
// Needs root and `ip netns` (prints SKIP otherwise). The binary comes from $TESSERA_BIN
// (else target/debug/tessera); logs and failure screenshots go to
// target/browser-artifacts/paths/. Bounded by RUN_TIMEOUT_MS.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
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
const artifacts = path.join(root, 'target/browser-artifacts/paths');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const RUN_TIMEOUT_MS = Number(process.env.RUN_TIMEOUT_MS || 210_000);
// coturn's static-auth-secret, and the server's network.turn_secret.
const TURN_SECRET = 'paths-test-turn-rest-secret';
const NS = 'tictcp1';
const HOST_IF = 'tictcp1h';
const NS_IF = 'tictcp1c';
const HOST_IP = '10.213.9.1';
const NS_IP = '10.213.9.2';
const NS_IP_MOVED = '10.213.9.3';
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

async function startServer(name, { tcp = false, iceServers = '[]', turnSecret = '' } = {}) {
  const [port, tcpPort] = [await freePort(), tcp ? await freePort() : 0];
  const cfg = path.join(artifacts, `${name}.toml`);
  fs.writeFileSync(cfg, `[server]
listen = "0.0.0.0:${port}"
[network]
host_ips = ["127.0.0.1", "${HOST_IP}"]
udp_port = 0
tcp_port = ${tcpPort}
ice_servers = ${iceServers}
turn_secret = "${turnSecret}"
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

// A private coturn on the veth address: TURN REST credentials (HMAC of the username with
// TURN_SECRET), relays on that address.
async function startTurn() {
  const port = await freePort();
  const child = spawn('turnserver', [
    '-n', '--listening-ip', HOST_IP, '--listening-port', String(port), '--relay-ip', HOST_IP,
    '--min-port', '49152', '--max-port', '65535', '--use-auth-secret', `--static-auth-secret=${TURN_SECRET}`,
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

// Launches a Chromium for person `p` (in the namespace for `p.ns`, where `secureOrigin`, an
// http:// origin, counts as secure) with one page, as p.browser and p.page.
async function launchBrowser(p, secureOrigin) {
  const { chromium } = await import('playwright-core');
  const args = [...CHROMIUM_ARGS];
  let executablePath = CHROMIUM;
  if (p.ns) {
    executablePath = path.join(artifacts, `chromium-${NS}.sh`);
    fs.writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${NS} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
    args.push(`--unsafely-treat-insecure-origin-as-secure=${secureOrigin}`);
  }
  p.browser = await withTimeout(chromium.launch({
    executablePath, headless: true, args, ignoreDefaultArgs: ['--mute-audio'], timeout: 45_000,
  }), 50_000, `launch chromium for ${p.name}`);
  cleanups.push(() => p.browser.close().catch(() => {}));
  const ctx = await p.browser.newContext({ viewport: { width: 960, height: 600 } });
  p.page = await ctx.newPage();
  p.page.on('console', (m) => fs.appendFileSync(path.join(artifacts, `page-${p.name}.log`), `${m.type()}: ${m.text()}\n`));
}

// Launches a Chromium per person (in the namespace for `ns`) and opens a page each.
async function launchPeople(people, port) {
  for (const p of people) {
    // The camera needs a secure origin; http://10.213.9.1 is one only when we say so.
    p.base = p.ns ? `http://${HOST_IP}:${port}` : `http://127.0.0.1:${port}`;
    await launchBrowser(p, p.base);
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

// A WHIP publisher page (RFC 9725), plain JS: a canvas in one colour with a moving mark
// (so the encoder keeps sending), published from ?server=&room=&name=. The offer is
// POSTed at once, before any candidate (as OBS does); candidates then go by PATCH with
// If-Match: the ETag, one at a time and queued while an ICE restart is in flight.
// window.whip: state, states, errors, patches (count per status), etags, restarts, pc, and
// restart() (an ICE restart by PATCH with If-Match: *).
const WHIP_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>WHIP publisher</title></head>
<body><canvas width="640" height="360"></canvas>
<script>
const q = new URLSearchParams(location.search);
const endpoint = q.get('server') + '/whip/' + encodeURIComponent(q.get('room')) + '?name=' + encodeURIComponent(q.get('name'));
const whip = window.whip = { state: 'new', states: [], errors: [], patches: {}, etags: [], restarts: [] };
const canvas = document.querySelector('canvas');
const g = canvas.getContext('2d');
let frame = 0;
function draw() {
  g.fillStyle = '#' + q.get('colour');
  g.fillRect(0, 0, 640, 360);
  g.fillStyle = '#ffffff';
  g.fillRect((frame * 8) % 620, 330, 20, 20);
  frame += 1;
}
draw();
setInterval(draw, 66);

const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
whip.pc = pc;
pc.onconnectionstatechange = () => {
  whip.state = pc.connectionState;
  whip.states.push(pc.connectionState);
};
pc.addTransceiver(canvas.captureStream(15).getVideoTracks()[0], { direction: 'sendonly' });

let resource = null;
let ready = false; // the session exists and no ICE restart is in flight
let sending = null; // the running pump, awaited by a restart
const queue = [];
const ice = () => {
  const sdp = pc.localDescription.sdp;
  return { ufrag: /a=ice-ufrag:(\\S+)/.exec(sdp)[1], pwd: /a=ice-pwd:(\\S+)/.exec(sdp)[1] };
};
const section = () => 'm=video 9 UDP/TLS/RTP/SAVPF 0\\r\\na=mid:' + pc.getTransceivers()[0].mid + '\\r\\n';

async function patch(ifMatch, body) {
  const res = await fetch(resource, {
    method: 'PATCH', headers: { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': ifMatch }, body,
  });
  whip.patches[res.status] = (whip.patches[res.status] || 0) + 1;
  return res;
}

// One candidate (or the end of them) of the ICE generation it was gathered in.
async function trickle(c) {
  const { ufrag, pwd } = ice();
  if (c.ufrag !== ufrag) return; // gathered before a restart: stale
  const line = c.candidate ? 'a=' + c.candidate : 'a=end-of-candidates';
  const res = await patch(whip.etags[whip.etags.length - 1],
    'a=ice-ufrag:' + ufrag + '\\r\\na=ice-pwd:' + pwd + '\\r\\n' + section() + line + '\\r\\n');
  if (res.status !== 204) whip.errors.push('trickle PATCH ' + line + ': ' + res.status + ' ' + (await res.text()));
}

function pump() {
  if (sending) return sending;
  sending = (async () => {
    await null; // after the assignment above, so that the finally clears it
    try {
      while (ready && queue.length) await trickle(queue.shift());
    } catch (e) {
      whip.errors.push('trickle: ' + e);
    } finally {
      sending = null;
    }
  })();
  return sending;
}

pc.onicecandidate = (ev) => {
  if (ev.candidate && !ev.candidate.candidate) return; // Chromium's empty one: the null follows
  const ufrag = (ev.candidate && ev.candidate.usernameFragment) || ice().ufrag;
  queue.push({ candidate: ev.candidate && ev.candidate.candidate, ufrag });
  pump();
};

async function start() {
  try {
    await pc.setLocalDescription(await pc.createOffer());
    whip.state = 'posting';
    const res = await fetch(endpoint, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    const answer = await res.text();
    if (res.status !== 201) throw new Error('POST ' + endpoint + ': ' + res.status + ' ' + answer);
    resource = new URL(res.headers.get('Location'), endpoint).href;
    whip.location = resource;
    whip.etags.push(res.headers.get('ETag'));
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    ready = true;
    pump();
  } catch (e) {
    whip.errors.push('start: ' + e);
  }
}

// An ICE restart by PATCH: our new credentials in, the server's new ones and ETag out.
whip.restart = async () => {
  ready = false;
  // The PATCH in flight (if any) finishes first; with ready false no other starts.
  if (sending) await sending;
  const r = {};
  try {
    pc.restartIce();
    await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
    const { ufrag, pwd } = ice();
    const res = await patch('*', 'a=ice-ufrag:' + ufrag + '\\r\\na=ice-pwd:' + pwd + '\\r\\n' + section());
    Object.assign(r, { status: res.status, etag: res.headers.get('ETag'), contentType: res.headers.get('Content-Type'), body: await res.text() });
    if (res.status !== 200) throw new Error('restart PATCH: ' + res.status + ' ' + r.body);
    const nu = /a=ice-ufrag:(\\S+)/.exec(r.body);
    const np = /a=ice-pwd:(\\S+)/.exec(r.body);
    if (!nu || !np) throw new Error('restart PATCH: no a=ice-ufrag/a=ice-pwd in ' + JSON.stringify(r.body));
    whip.etags.push(r.etag);
    const sdp = pc.remoteDescription.sdp
      .replace(/a=ice-ufrag:\\S+/g, 'a=ice-ufrag:' + nu[1])
      .replace(/a=ice-pwd:\\S+/g, 'a=ice-pwd:' + np[1]);
    await pc.setRemoteDescription({ type: 'answer', sdp });
  } catch (e) {
    r.error = String(e);
    whip.errors.push('restart: ' + e);
  }
  whip.restarts.push(r);
  ready = true;
  pump();
  return r;
};

start();
</script></body></html>
`;

// A one-page HTTP server on the veth address: another origin than the tessera server's.
async function servePage(html) {
  const port = await freePort();
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(html);
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, HOST_IP, resolve);
  });
  cleanups.push(() => new Promise((r) => srv.close(r)));
  return `http://${HOST_IP}:${port}`;
}

// Local and remote address of the WHIP page's selected candidate pair.
async function whipPair(page) {
  return page.evaluate(async () => {
    const stats = await window.whip.pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    if (!pair) return null;
    const l = stats.get(pair.localCandidateId);
    const r = stats.get(pair.remoteCandidateId);
    return {
      local: l && l.address, localType: l && `${l.protocol} ${l.candidateType}`,
      remote: r && `${r.protocol} ${r.candidateType} ${r.address}:${r.port}`, state: pair.state, bytesSent: pair.bytesSent,
    };
  });
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
    if (await runStep(results, name, fn)) return;
    for (const p of shown) if (p.page) await p.page.screenshot({ path: path.join(artifacts, `fail-${p.name}.png`) }).catch(() => {});
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
    // No username or credential: the server makes each client's from the secret.
    const iceServers = `[{ urls = ${JSON.stringify(urls)} }]`;
    // No ICE-TCP: Tia's only way in is the TURN server over TCP.
    const { port } = await startServer('server-turn', { iceServers, turnSecret: TURN_SECRET });
    const people = TURN_PEOPLE.map((p) => ({ ...p }));
    shown = people;
    await launchPeople(people, port);
    await joinAndSeeEachOther(people, port, 'turn-room');
    for (const p of people) {
      const servers = await p.page.evaluate(() => window.tessera.pc.getConfiguration().iceServers
        .map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })));
      log(`  ${p.name}'s ICE servers: ${JSON.stringify(servers.map((s) => ({ ...s, credential: s.credential && `${s.credential.length} chars` })))}`);
      const want = new RegExp(`^\\d+:${p.name}$`);
      assert(servers.length === 1 && want.test(servers[0].username || '') && servers[0].credential,
        `${p.name}'s RTCPeerConnection has no TURN REST username of its own (${want}): ${JSON.stringify(servers)}`);
      const expiry = Number(servers[0].username.split(':')[0]);
      assert(expiry > Date.now() / 1000, `${p.name}'s TURN username ${servers[0].username} has expired already`);
    }
    for (const p of people) {
      // Uma has both a UDP and a TCP relay candidate: Chromium may nominate the TCP one
      // first (its check answered first) and move to the UDP one, which it prefers, a
      // moment later. Wait for the pair it settles on.
      const r = await pollUntil(async () => {
        const pair = await selectedPair(p.page);
        return { ok: !!pair && / relay/.test(pair.local) && pair.relayProtocol === p.relay, detail: pair };
      }, 15_000, 500);
      const pair = r.detail;
      log(`  ${p.name}'s selected pair: local ${pair && pair.local} (relayed over ${pair && pair.relayProtocol}), remote ${pair && pair.remote}`);
      assert(r.ok, `${p.name} is not relayed over ${p.relay} within 15 s: ${JSON.stringify(pair)}`);
    }
  });

  await report('paths: a WHIP publisher page on another origin publishes with trickle ICE, and keeps its picture after its address changes and it restarts ICE by PATCH', async () => {
    // This test wants UDP: lift the namespace's block (the tests above needed it; this one
    // runs last).
    inNs('nft', ['delete', 'table', 'inet', 'noudp']);
    const { port } = await startServer('server-whip');
    const room = 'whip-room';
    const tessera = `http://${HOST_IP}:${port}`;
    const origin = await servePage(WHIP_PAGE);
    log(`  the WHIP page is on ${origin}, another origin than ${tessera}`);

    // CORS: a preflight from the page's origin, as a browser sends before its POST and PATCH.
    const pre = await fetch(`${tessera}/whip/${room}`, {
      method: 'OPTIONS',
      headers: { Origin: origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type,if-match' },
      signal: AbortSignal.timeout(5000),
    });
    const h = (k) => pre.headers.get(k);
    log(`  preflight: ${pre.status}, allow-origin ${h('access-control-allow-origin')}, allow-methods ${h('access-control-allow-methods')}, allow-headers ${h('access-control-allow-headers')}`);
    assert(pre.status === 204, `the preflight got ${pre.status}, not 204`);
    assert(h('access-control-allow-origin'), 'the preflight has no Access-Control-Allow-Origin');
    assert(/\bPATCH\b/.test(h('access-control-allow-methods') || ''), `the preflight's Access-Control-Allow-Methods lacks PATCH: ${h('access-control-allow-methods')}`);
    assert(h('link') === null, `a preflight must not hand out the ICE servers: Link ${h('link')}`);

    const wes = { name: 'Wes', ns: true, hex: '2850d6', rgb: [0x28, 0x50, 0xd6] };
    // A viewer on the host (the web client): the room composes only for receivers.
    const vic = { name: 'Vic', hex: 'd62828', tone: 300 };
    shown = [wes, vic];
    await launchBrowser(wes, origin);
    await wes.page.goto(`${origin}/?server=${encodeURIComponent(tessera)}&room=${room}&name=${wes.name}&colour=${wes.hex}`, { timeout: 30_000 });
    await launchBrowser(vic);
    await vic.page.goto(`http://127.0.0.1:${port}/?room=${room}&name=${vic.name}&fake=colour&colour=${vic.hex}&tone=${vic.tone}`, { timeout: 30_000 });
    const whipState = () => wes.page.evaluate(() => {
      const w = window.whip;
      return { state: w.state, states: w.states, errors: w.errors, patches: w.patches, etags: w.etags, location: w.location };
    });
    const connected = await pollUntil(async () => {
      const st = await whipState();
      return { ok: st.state === 'connected', detail: st };
    }, 30_000, 300);
    assert(connected.ok, `the WHIP page did not connect: ${JSON.stringify(connected.detail)}`);
    // Both come from response headers the page can read only as CORS exposes them.
    assert(connected.detail.location && /^"[^"]+"$/.test(connected.detail.etags[0] || ''),
      `the page could not read Location and ETag: ${JSON.stringify(connected.detail)}`);
    log(`  the page is connected: ${JSON.stringify(connected.detail)}`);
    const firstPair = await whipPair(wes.page);
    log(`  its selected pair: ${JSON.stringify(firstPair)}`);

    // The server takes the publisher's frames and tiles it; the viewer sees its colour.
    const wesOnServer = async () => {
      const info = JSON.parse(await getText(`http://127.0.0.1:${port}/api/rooms/${room}`));
      const p = info.participants.find((x) => x.name === wes.name);
      const tier = p && info.tiers.find((t) => (t.tiles || []).some((tile) => tile.id === p.id));
      let seen = null;
      if (tier) {
        const vicState = await vic.page.evaluate(() => window.tessera && window.tessera.state);
        const got = vicState === 'connected' && await tileColours(vic.page, tier.tiles, tier.width, tier.height);
        const tile = got && got.find((t) => t.id === p.id);
        seen = tile ? tile.rgb.map(Math.round) : null;
      }
      return {
        p, tiled: !!tier, frames: p ? p.video_frames_in : 0, fps: p && p.video_fps_in, seen, seenOk: !!seen && dist(seen, wes.rgb) <= 80,
      };
    };
    let base = null;
    const publishing = await pollUntil(async () => {
      const w = await wesOnServer();
      if (!w.p) return { ok: false, detail: 'Wes is not in the room' };
      if (base === null) base = w.frames;
      return {
        ok: w.tiled && w.seenOk && w.frames >= base + 15,
        detail: { id: w.p.id, kind: w.p.kind, frames: w.frames, from: base, fps: w.fps, tiled: w.tiled, vicSees: w.seen },
      };
    }, 30_000, 500);
    assert(publishing.ok, `the server does not take and show Wes's picture: ${JSON.stringify(publishing.detail)}`);
    log(`  the server takes Wes's frames, tiles it, and Vic sees its colour: ${JSON.stringify(publishing.detail)}`);
    const trickled = await pollUntil(async () => {
      const st = await whipState();
      return { ok: (st.patches[204] || 0) >= 1, detail: st };
    }, 10_000, 300);
    assert(trickled.ok, `no trickle PATCH got 204: ${JSON.stringify(trickled.detail)}`);
    assert(trickled.detail.errors.length === 0, `the page saw errors: ${JSON.stringify(trickled.detail.errors)}`);
    log(`  trickle PATCHes by status: ${JSON.stringify(trickled.detail.patches)}`);

    // The namespace moves to another address: the old one, and the path on it, are gone.
    // (promote_secondaries keeps the new address when the old, primary one goes.)
    inNs('sysctl', ['-qw', `net.ipv4.conf.${NS_IF}.promote_secondaries=1`]);
    sh('ip', ['-n', NS, 'addr', 'add', `${NS_IP_MOVED}/24`, 'dev', NS_IF]);
    sh('ip', ['-n', NS, 'addr', 'del', `${NS_IP}/24`, 'dev', NS_IF]);
    const addrs = sh('ip', ['-n', NS, '-4', '-br', 'addr', 'show', 'dev', NS_IF]).stdout.trim();
    log(`  ${NS_IF} now: ${addrs}`);
    assert(addrs.includes(NS_IP_MOVED) && !addrs.includes(`${NS_IP}/`), `the namespace's address did not move: ${addrs}`);
    const restart = await withTimeout(wes.page.evaluate(() => window.whip.restart()), 20_000, 'the ICE restart PATCH');
    log(`  restart PATCH: ${JSON.stringify(restart)}`);
    assert(restart.status === 200 && !restart.error, `the ICE restart failed: ${JSON.stringify(restart)}`);
    const firstEtag = connected.detail.etags[0];
    assert(restart.etag && restart.etag !== firstEtag, `the restart's ETag ${restart.etag} is not new (was ${firstEtag})`);
    const restarted = (await wesOnServer()).frames;
    const restartedAt = Date.now();
    // Frames the server counted and lost (and the page's frames sent/keyframes/PLIs/bytes),
    // by seconds since the restart.
    const timeline = [];

    const back = await pollUntil(async () => {
      const st = await whipState();
      const pair = await whipPair(wes.page);
      return {
        ok: st.state === 'connected' && !!pair && pair.local === NS_IP_MOVED && pair.state === 'succeeded',
        detail: { state: st.state, states: st.states, pair },
      };
    }, 30_000, 300);
    assert(back.ok, `the page is not connected from ${NS_IP_MOVED} again: ${JSON.stringify(back.detail)}`);
    log(`  connected again: ${JSON.stringify(back.detail)}`);
    const resumed = await pollUntil(async () => {
      const w = await wesOnServer();
      const out = await wes.page.evaluate(async () => {
        let o = null;
        (await window.whip.pc.getStats()).forEach((r) => { if (r.type === 'outbound-rtp') o = r; });
        return o && `${o.framesSent}/${o.keyFramesEncoded}k/${o.pliCount}pli/${o.bytesSent}B`;
      });
      timeline.push(`${((Date.now() - restartedAt) / 1000).toFixed(1)}s:${w.frames}/${w.p && w.p.net.video_frames_lost}lost(${out})`);
      return {
        ok: w.frames >= restarted + 30 && w.tiled && w.seenOk,
        detail: { frames: w.frames, atRestart: restarted, fps: w.fps, tiled: w.tiled, vicSees: w.seen, timeline: timeline.join(' ') },
      };
    }, 30_000, 500);
    assert(resumed.ok, `Wes's frames did not flow again after the restart: ${JSON.stringify(resumed.detail)}`);
    log(`  the server takes Wes's frames again: ${JSON.stringify(resumed.detail)}`);
    const st = await whipState();
    log(`  PATCHes by status: ${JSON.stringify(st.patches)}, ETags ${JSON.stringify(st.etags)}`);
    assert(st.errors.length === 0, `the page saw errors: ${JSON.stringify(st.errors)}`);
    const serverLog = fs.readFileSync(path.join(artifacts, 'server-whip.log'), 'utf8');
    const line = serverLog.split('\n').find((l) => l.includes('ICE restart'));
    log(`  server log: ${line && line.trim()}`);
    assert(line, 'the server log has no "ICE restart" line');
  });
  return results;
}

await runScript('paths', main, { timeoutMs: RUN_TIMEOUT_MS, cleanups });
