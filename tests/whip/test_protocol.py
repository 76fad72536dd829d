#!/usr/bin/env python3
"""WHIP/WHEP to the letter (RFC 9725 and the WHEP draft): raw HTTP against `tessera serve`,
with aiortc for the real offers and media.

    target/venv/bin/python tests/whip/test_protocol.py [-v]

One server, with join tokens, `server.cors_origins = ["https://studio.example"]` and
`network.turn_secret`. It checks:
- OPTIONS: Accept-Post, Allow; ICE servers as Link headers (TURN ones with per-client TURN
  REST credentials, checked against HMAC-SHA1 of the secret) only with a valid token and
  never on a CORS preflight; preflights for allowed and refused origins; no CORS on the
  admin API; CORS headers on errors too.
- An OBS-shaped publisher (no candidates, a=setup:actpass, H.264 + Opus, no trickle) gets 201
  with Location, ETag, Link and Accept-Patch, connects, and its colour is in the composite.
- PATCH on its session: 401/403 for tokens, 415, 428, 412, 400, 422, 204 (a trickled
  candidate), 405 on the endpoint, 404 for an unknown session; it keeps publishing.
- A WHEP viewer whose offer says sendrecv is answered sendonly; an ICE restart by PATCH
  (If-Match: *) answers 200 with new credentials and a new ETag; the old ETag then gets 412;
  DELETE needs the token of the session's name.
- An ffmpeg-WHIP-shaped publisher (no candidates, a=setup:passive, H.264 with RTX, Opus)
  gets a=setup:active back, connects and is decoded.
Exit code 0 when every check passed. Server output goes to target/tmp/whip-test/.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aioice.ice  # noqa: E402
from aiortc import RTCSessionDescription  # noqa: E402
from aiortc.rtcrtpsender import RTCRtpSender  # noqa: E402

import test_whip_whep as w  # noqa: E402
from test_whip_whep import Abort, Server  # noqa: E402

ROOT = w.ROOT
OUT = w.OUT
ROOM = "proto"
SECRET = "protocol-test-secret-0123456789abcdef"
TURN_SECRET = "protocol-turn-secret-0123"
TTL = 600
ORIGIN = "https://studio.example"
SDP = {"Content-Type": "application/sdp"}
FRAG = "application/trickle-ice-sdpfrag"
TOTAL_TIMEOUT = 120.0

CONFIG = f"""# Written by tests/whip/test_protocol.py.
[rooms]
default_tier = "test"

[tiers.test]
width = 640
height = 360
fps = 15
bitrate_kbps = 600
codec = "vp8"

[server]
cors_origins = ["{ORIGIN}"]

[auth]
token_secret = "{SECRET}"

[network]
ice_disconnected_timeout_ms = 1000
ice_failed_timeout_ms = 2000
turn_secret = "{TURN_SECRET}"
turn_credential_ttl_secs = {TTL}
ice_servers = [
  {{ urls = ["stun:stun.example.org:3478"] }},
  {{ urls = ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp"], username = "static", credential = "static" }},
]
"""


def request(port, method, path, body=None, headers=None):
    """(status, [(header, value)] with lower-case names, body): repeated headers kept."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=w.HTTP_TIMEOUT)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data
    finally:
        conn.close()


class Api:
    def __init__(self, port):
        self.port = port

    async def __call__(self, method, path, body=None, headers=None):
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(request, self.port, method, path, body, headers), w.HTTP_TIMEOUT + 2
            )
        except (OSError, http.client.HTTPException, asyncio.TimeoutError) as e:
            raise Abort(f"{method} {path}: no HTTP reply: {e!r}") from e


def one(headers, name):
    vals = [v for k, v in headers if k == name]
    return vals[0] if vals else None


def all_of(headers, name):
    return [v for k, v in headers if k == name]


def links(headers):
    """Link header values (each may hold several comma-separated links) as dicts."""
    out = []
    for value in all_of(headers, "link"):
        for part in re.findall(r"<[^>]*>[^<]*", value):
            m = re.match(r"<([^>]*)>(.*)", part.strip().rstrip(","))
            params = dict(re.findall(r';\s*([\w-]+)="([^"]*)"', m.group(2)))
            out.append({"url": m.group(1), **params})
    return out


def token(config, name, perms):
    r = subprocess.run(
        [str(BINARY), "token", "--config", str(config), "--room", ROOM, "--name", name, "--perms", perms, "--ttl", "1h"],
        capture_output=True, text=True, timeout=30,
    )
    if r.returncode != 0:
        raise Abort(f"tessera token: {r.stderr.strip()}")
    return r.stdout.strip()


def bearer(t):
    return {"Authorization": f"Bearer {t}"}


def strip_candidates(sdp):
    return "".join(
        line + "\r\n" for line in sdp.splitlines()
        if line and not line.startswith("a=candidate:") and line != "a=end-of-candidates"
    )


def attr(sdp, name):
    m = re.search(rf"^a={name}:(\S+)", sdp, re.M)
    return m.group(1) if m else None


async def frames_in(api, name):
    status, _, body = await api("GET", f"/api/rooms/{ROOM}")
    if status != 200:
        return None
    people = [p for p in w.find_participants(json.loads(body)) if p.get("name") == name]
    return people[0].get("video_frames_in") if people else None


async def wait_frames(api, name, at_least, timeout=20.0):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = await frames_in(api, name)
        if got is not None and got >= at_least:
            return got
        await asyncio.sleep(0.2)
    return got


async def publisher(api, name, tok, *, setup, rtx, pcs):
    """An aiortc publisher whose offer is shaped like OBS's or ffmpeg's: H.264 + Opus, no
    candidates (no trickle), `a=setup:` as given. Returns (pc, status, headers, answer)."""
    pc = w.new_pc()
    pcs.append(pc)
    video = pc.addTransceiver(w.ColourTrack(w.COLOUR, w.PUB_W, w.PUB_H), direction="sendonly")
    audio = pc.addTransceiver(w.ToneTrack(w.TONE_HZ), direction="sendonly")
    caps = RTCRtpSender.getCapabilities("video").codecs
    h264 = [c for c in caps if c.mimeType.lower() == "video/h264"]
    rtx_codecs = [c for c in caps if c.mimeType.lower() == "video/rtx"] if rtx else []
    video.setCodecPreferences(h264 + rtx_codecs)
    w.prefer_codec(audio, RTCRtpSender.getCapabilities("audio"), "audio/opus")
    await pc.setLocalDescription(await pc.createOffer())
    offer = strip_candidates(pc.localDescription.sdp).replace("a=setup:actpass", f"a=setup:{setup}")
    (OUT / f"proto-{name}-offer.sdp").write_text(offer)
    status, headers, body = await api("POST", f"/whip/{ROOM}?name={name}", offer, {**SDP, **bearer(tok), "Origin": ORIGIN})
    answer = body.decode("utf-8", "replace")
    (OUT / f"proto-{name}-answer.sdp").write_text(answer)
    return pc, offer, status, headers, answer


async def options_checks(c, api, config):
    status, h, _ = await api("OPTIONS", f"/whip/{ROOM}")
    c.ok(status in (200, 204), "OPTIONS /whip/{room} -> 204", f"got {status}")
    c.ok(one(h, "accept-post") == "application/sdp", "OPTIONS has Accept-Post: application/sdp", str(one(h, "accept-post")))
    c.ok("POST" in (one(h, "allow") or ""), "OPTIONS has Allow with POST", str(one(h, "allow")))
    c.ok(not links(h), "no Link headers without the token tokens require", str(links(h)))

    pub = token(config, "Pub", "publish")
    before = int(time.time())
    status, h, _ = await api("OPTIONS", f"/whip/{ROOM}?name=Pub", headers=bearer(pub))
    ls = links(h)
    c.ok(status in (200, 204) and len(ls) == 3, "OPTIONS with a valid token -> one Link per ICE server URL",
         f"{status}: {ls}")
    stun = [x for x in ls if x["url"].startswith("stun:")]
    turn = [x for x in ls if x["url"].startswith("turn:")]
    c.ok(len(stun) == 1 and "username" not in stun[0] and stun[0].get("rel") == "ice-server",
         'the STUN server: rel="ice-server", no credentials', str(stun))
    for t in turn:
        user, cred = t.get("username", ""), t.get("credential", "")
        m = re.fullmatch(r"(\d+):Pub", user)
        expect = base64.b64encode(hmac.new(TURN_SECRET.encode(), user.encode(), hashlib.sha1).digest()).decode()
        c.ok(m is not None and before + TTL - 5 <= int(m.group(1)) <= time.time() + TTL + 5,
             f"TURN {t['url']}: username EXPIRY:Pub expiring in turn_credential_ttl_secs", user)
        c.ok(cred == expect and t.get("credential-type") == "password",
             f"TURN {t['url']}: credential = base64(HMAC-SHA1(turn_secret, username)), not the static one",
             f"{cred!r} vs {expect!r}, type {t.get('credential-type')!r}")

    other = subprocess.run(
        [str(BINARY), "token", "--config", str(config), "--room", "elsewhere", "--name", "Pub", "--perms", "publish"],
        capture_output=True, text=True, timeout=30,
    ).stdout.strip()
    status, h, _ = await api("OPTIONS", f"/whip/{ROOM}?name=Pub", headers=bearer(other))
    c.ok(status in (200, 204) and not links(h), "OPTIONS with another room's token: no Link", f"{status}: {links(h)}")

    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type,if-match"}
    status, h, _ = await api("OPTIONS", f"/whip/{ROOM}?name=Pub", headers={**pre, **bearer(pub)})
    c.ok(status in (200, 204), "CORS preflight from an allowed origin -> 204", f"got {status}")
    c.ok(one(h, "access-control-allow-origin") == ORIGIN and "origin" in (one(h, "vary") or "").lower(),
         "preflight: Access-Control-Allow-Origin echoes the origin, Vary: Origin",
         f"{one(h, 'access-control-allow-origin')}, vary {one(h, 'vary')}")
    methods = (one(h, "access-control-allow-methods") or "").upper()
    c.ok(all(m in methods for m in ("POST", "PATCH", "DELETE", "OPTIONS")),
         "preflight allows POST, PATCH, DELETE, OPTIONS", methods)
    allowed = (one(h, "access-control-allow-headers") or "").lower()
    c.ok(all(x in allowed for x in ("authorization", "content-type", "if-match")),
         "preflight allows Authorization, Content-Type, If-Match", allowed)
    c.ok(not links(h), "a preflight never gets Link headers, even with a token", str(links(h)))
    status, h, _ = await api("OPTIONS", f"/whep/{ROOM}/p1", headers=pre)
    c.ok(status in (200, 204) and one(h, "access-control-allow-origin") == ORIGIN,
         "preflight on a session URL -> 204 with CORS", f"{status}")

    status, h, _ = await api("OPTIONS", f"/whip/{ROOM}", headers={**pre, "Origin": "https://evil.example"})
    c.ok(status == 403 and one(h, "access-control-allow-origin") is None,
         "preflight from an origin not in server.cors_origins -> 403 without CORS headers", f"{status}")
    status, h, _ = await api("OPTIONS", "/api/admin/rooms", headers=pre)
    c.ok(one(h, "access-control-allow-origin") is None, "the admin API gets no CORS headers", f"{status}")
    status, h, _ = await api("POST", f"/whip/{ROOM}?name=Pub", "not sdp", {**SDP, **bearer(pub), "Origin": ORIGIN})
    c.ok(status == 400 and one(h, "access-control-allow-origin") == ORIGIN,
         "an error reply carries CORS headers too (the page can read it)", f"{status}")


async def patch_checks(c, api, config, loc, etag, offer, pub):
    frag = {"Content-Type": FRAG}
    ufrag, pwd = attr(offer, "ice-ufrag"), attr(offer, "ice-pwd")
    mid = attr(offer, "mid")
    cand = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\n"
            "a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n")
    cases = [
        ("no token", {**frag, "If-Match": etag}, cand, 401),
        ("a token for another name", {**frag, "If-Match": etag, **bearer(token(config, "Other", "publish"))}, cand, 403),
        ("Content-Type text/plain", {"Content-Type": "text/plain", "If-Match": etag, **bearer(pub)}, cand, 415),
        ("no If-Match", {**frag, **bearer(pub)}, cand, 428),
        ("a stale If-Match", {**frag, "If-Match": '"not-the-etag"', **bearer(pub)}, cand, 412),
        ("a body that is no fragment", {**frag, "If-Match": etag, **bearer(pub)}, "hello\r\n", 400),
        ("another ICE generation's ufrag", {**frag, "If-Match": etag, **bearer(pub)},
         cand.replace(f"a=ice-ufrag:{ufrag}", "a=ice-ufrag:zzzz"), 422),
        ("a trickled candidate and end-of-candidates", {**frag, "If-Match": etag, **bearer(pub)}, cand, 204),
    ]
    for what, headers, body, want in cases:
        status, h, text = await api("PATCH", loc, body, headers)
        c.ok(status == want, f"PATCH with {what} -> {want}", f"got {status} {text[:120]!r}")
        if want == 415:
            c.ok(one(h, "accept-patch") == FRAG, "415 says Accept-Patch", str(one(h, "accept-patch")))
    status, h, _ = await api("PATCH", f"/whip/{ROOM}", cand, {**frag, "If-Match": etag, **bearer(pub)})
    c.ok(status == 405 and "POST" in (one(h, "allow") or ""), "PATCH on the endpoint -> 405 with Allow",
         f"{status}, Allow {one(h, 'allow')}")
    status, _, _ = await api("PATCH", f"/whip/{ROOM}/p999999", cand, {**frag, "If-Match": etag, **bearer(pub)})
    c.ok(status == 404, "PATCH on an unknown session -> 404", f"got {status}")
    bare = loc.rsplit("-", 1)[0]
    status, _, _ = await api("PATCH", bare, cand, {**frag, "If-Match": etag, **bearer(pub)})
    c.ok(status == 404, "PATCH on the session's id without its URL secret -> 404", f"{bare}: got {status}")
    status, _, _ = await api("DELETE", bare, headers=bearer(pub))
    c.ok(status == 404, "DELETE without the URL secret -> 404", f"{bare}: got {status}")
    wrong_pwd = cand.replace(f"a=ice-pwd:{pwd}", "a=ice-pwd:not-the-password")
    status, _, _ = await api("PATCH", loc, wrong_pwd, {**frag, "If-Match": etag, **bearer(pub)})
    c.ok(status == 422, "PATCH with the right ufrag and another a=ice-pwd -> 422", f"got {status}")
    status, _, _ = await api("PATCH", loc.replace("/whip/", "/whep/"), cand, {**frag, "If-Match": etag, **bearer(pub)})
    c.ok(status == 404, "PATCH on the session under the other endpoint's path -> 404", f"got {status}")


async def whep_checks(c, api, config, pcs):
    sub = token(config, "Viewer", "subscribe")
    pc = w.new_pc()
    pcs.append(pc)
    pc.addTransceiver("video", direction="sendrecv")
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    c.ok(w.sdp_direction(offer) == ["sendrecv", "sendrecv"], "the viewer's offer says sendrecv", str(w.sdp_direction(offer)))
    status, h, body = await api("POST", f"/whep/{ROOM}", offer, {**SDP, **bearer(sub)})
    answer = body.decode("utf-8", "replace")
    if not c.ok(status == 201, "POST /whep (sendrecv offer) -> 201", f"{status} {answer[:200]!r}"):
        raise Abort("WHEP refused")
    c.ok(w.sdp_direction(answer) == ["sendonly", "sendonly"], "WHEP answers sendonly", str(w.sdp_direction(answer)))
    loc, etag = one(h, "location"), one(h, "etag")
    c.ok(etag == f'"{attr(answer, "ice-ufrag")}"', "WHEP ETag is the answer's ICE session", f"{etag}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await w.wait_connected(pc, "WHEP viewer")
    # The composite exists once somebody receives it: the snapshot must show the OBS-shaped
    # publisher's colour.
    deadline = time.monotonic() + 15
    frac = 0.0
    while time.monotonic() < deadline and frac < w.COLOUR_MIN_FRACTION:
        status, _, png = await api("GET", f"/api/rooms/{ROOM}/snapshot.png")
        if status == 200:
            frac = w.colour_fraction(w.decode_png(png))
        await asyncio.sleep(0.3)
    c.ok(frac >= w.COLOUR_MIN_FRACTION, "the composite shows the OBS-shaped publisher's colour", f"{frac:.0%}")

    frag = {"Content-Type": FRAG, **bearer(sub)}
    new_ufrag, new_pwd = secrets.token_hex(4), secrets.token_hex(12)
    body = f"a=ice-ufrag:{new_ufrag}\r\na=ice-pwd:{new_pwd}\r\n"
    status, h, text = await api("PATCH", loc, body, {**frag, "If-Match": "*"})
    text = text.decode("utf-8", "replace")
    ok = c.ok(status == 200, "ICE restart by PATCH (If-Match: *) -> 200", f"got {status} {text[:200]!r}")
    if ok:
        server_ufrag = attr(text, "ice-ufrag")
        c.ok(one(h, "content-type", ).startswith(FRAG), "the restart answer is a trickle-ice-sdpfrag", one(h, "content-type"))
        c.ok(server_ufrag and f'"{server_ufrag}"' != etag and attr(text, "ice-pwd"),
             "it holds the server's new a=ice-ufrag and a=ice-pwd", text.replace("\r\n", " | ")[:300])
        c.ok(one(h, "etag") == f'"{server_ufrag}"', "and a new ETag naming the new ICE session", f"{one(h, 'etag')}")
        c.ok("a=candidate:" in text and "a=end-of-candidates" in text, "and the server's candidates", "")
        status, _, _ = await api("PATCH", loc, f"a=ice-ufrag:{new_ufrag}\r\na=ice-pwd:{new_pwd}\r\n"
                                 "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n", {**frag, "If-Match": etag})
        c.ok(status == 412, "a trickle with the ETag from before the restart -> 412", f"got {status}")
        status, _, _ = await api("PATCH", loc, body, {**frag, "If-Match": "*"})
        c.ok(status == 422, "a restart that repeats the current ufrag -> 422", f"got {status}")
    status, _, _ = await api("PATCH", loc, f"a=ice-ufrag:{secrets.token_hex(4)}\r\n", {**frag, "If-Match": "*"})
    c.ok(status == 422, "a restart without a=ice-pwd -> 422", f"got {status}")
    status, _, _ = await api("DELETE", loc, headers=bearer(token(config, "Other", "subscribe")))
    c.ok(status == 403, "DELETE with a token for another name -> 403", f"got {status}")
    status, _, _ = await api("DELETE", loc)
    c.ok(status == 401, "DELETE without a token -> 401", f"got {status}")
    status, _, _ = await api("DELETE", loc, headers=bearer(sub))
    c.ok(status == 200, "DELETE with the session's token -> 200", f"got {status}")
    status, _, _ = await api("PATCH", loc, body, {**frag, "If-Match": "*"})
    c.ok(status == 404, "PATCH after DELETE -> 404", f"got {status}")


async def run(c, server, config):
    api = Api(server.port)
    pcs = []
    try:
        print("OPTIONS and CORS", flush=True)
        await options_checks(c, api, config)

        print("OBS-shaped publisher", flush=True)
        pub = token(config, "Pub", "publish")
        pc, offer, status, h, answer = await publisher(api, "Pub", pub, setup="actpass", rtx=False, pcs=pcs)
        if not c.ok(status == 201, "OBS-shaped offer (no candidates, actpass, H.264 + Opus) -> 201",
                    f"got {status} {answer[:300]!r}"):
            raise Abort("publish refused")
        loc, etag = one(h, "location"), one(h, "etag")
        c.ok(bool(loc) and re.fullmatch(rf"/whip/{ROOM}/p\d+-[0-9a-f]{{32}}", loc) is not None,
             "201 has Location /whip/{room}/{id}-{secret}", str(loc))
        c.ok(etag == f'"{attr(answer, "ice-ufrag")}"', "201 has an ETag naming the ICE session", f"{etag}")
        c.ok(one(h, "accept-patch") == FRAG, "201 has Accept-Patch: application/trickle-ice-sdpfrag", str(one(h, "accept-patch")))
        c.ok(len(links(h)) == 3 and all(x.get("username", "").endswith(":Pub") for x in links(h) if x["url"].startswith("turn:")),
             "201 has the ICE servers as Link headers, TURN with Pub's credentials", str(links(h)))
        c.ok(one(h, "access-control-allow-origin") == ORIGIN, "201 to an allowed origin has Access-Control-Allow-Origin",
             str(one(h, "access-control-allow-origin")))
        exposed = (one(h, "access-control-expose-headers") or "").lower()
        c.ok(all(x in exposed for x in ("location", "link", "etag", "accept-patch")),
             "and exposes Location, Link, ETag, Accept-Patch", exposed)
        c.ok("a=candidate:" in answer and w.sdp_direction(answer) == ["recvonly", "recvonly"],
             "the answer has the server's candidates and says recvonly", str(w.sdp_direction(answer)))
        c.ok("H264" in w.sdp_codecs(answer), "the answer takes H.264", w.sdp_codecs(answer))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await w.wait_connected(pc, "OBS-shaped publisher")
        got = await wait_frames(api, "Pub", 10)
        c.ok(got is not None and got >= 10, "the server decodes the OBS-shaped publisher's H.264", f"video_frames_in {got}")

        print("PATCH on the publisher's session", flush=True)
        await patch_checks(c, api, config, loc, etag, offer, pub)
        before = await frames_in(api, "Pub") or 0
        got = await wait_frames(api, "Pub", before + 15)
        c.ok(got is not None and got >= before + 15, "the publisher keeps publishing after the PATCHes",
             f"video_frames_in {before} -> {got}")
        print("WHEP viewer: direction, ICE restart by PATCH, DELETE", flush=True)
        await whep_checks(c, api, config, pcs)

        print("ffmpeg-shaped publisher", flush=True)
        ff_tok = token(config, "FF", "publish")
        pc2, offer2, status, h, answer2 = await publisher(api, "FF", ff_tok, setup="passive", rtx=True, pcs=pcs)
        c.ok("rtx/90000" in offer2 and "a=setup:passive" in offer2, "the ffmpeg-shaped offer has RTX and setup:passive", "")
        if c.ok(status == 201, "ffmpeg-shaped offer (no candidates, passive, H.264 + RTX, Opus) -> 201",
                f"got {status} {answer2[:300]!r}"):
            c.ok("a=setup:active" in answer2, "the server answers a=setup:active (it is the DTLS client)",
                 str(re.findall(r"a=setup:\w+", answer2)))
            await pc2.setRemoteDescription(RTCSessionDescription(sdp=answer2, type="answer"))
            await w.wait_connected(pc2, "ffmpeg-shaped publisher")
            got = await wait_frames(api, "FF", 10)
            c.ok(got is not None and got >= 10, "the server decodes the ffmpeg-shaped publisher", f"video_frames_in {got}")
            status, _, _ = await api("DELETE", one(h, "location"), headers=bearer(ff_tok))
            c.ok(status == 200, "DELETE the ffmpeg-shaped publisher -> 200", f"got {status}")
        status, _, _ = await api("DELETE", loc, headers=bearer(pub))
        c.ok(status == 200, "DELETE the OBS-shaped publisher -> 200", f"got {status}")
    finally:
        for pc in pcs:
            try:
                await asyncio.wait_for(pc.close(), 5)
            except Exception:
                pass
    c.ok(server.alive(), "server still running at the end", f"exit code {server.proc.poll()}")


BINARY = Path(os.environ.get("TESSERA_BIN", ROOT / "target" / "debug" / "tessera"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="aiortc/aioice debug logs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # aioice never offers 127.0.0.1; this test talks to a server on loopback only.
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]
    OUT.mkdir(parents=True, exist_ok=True)
    config = OUT / "protocol.toml"
    config.write_text(CONFIG)
    server = Server(BINARY, config=config, log_name="protocol-server.log")
    return w.run_checks(
        "whip-protocol", server, lambda checks, server: run(checks, server, config), TOTAL_TIMEOUT
    )

if __name__ == "__main__":
    sys.exit(main())
