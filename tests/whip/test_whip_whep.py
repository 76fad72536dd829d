#!/usr/bin/env python3
"""WHIP/WHEP end-to-end test of `tessera serve` with aiortc, an independent WebRTC stack.

    scripts/setup-python.sh                 # once: target/venv with tests/whip/requirements.txt
    cargo build -p tessera                  # target/debug/tessera (or set TESSERA_BIN)
    target/venv/bin/python tests/whip/test_whip_whep.py [-v]

It starts the server on a free loopback port with tests/whip/test.toml, publishes a solid
#2850d6 picture and a 600 Hz tone over WHIP, watches the room over WHEP and checks that the
composite shows the colour and the mix carries the tone; then the HTTP API, DELETE of both
resources, and the WHIP error replies (400, 415, 404); then, on a server of its own, a screen
share's text and sound (share_psnr.py: the share in the big tile, letterboxed, PSNR above a
floor, the tab's tone in the mix).
Exit code 0 when every check passed.
Server output, SDPs and the last received frame go to target/tmp/whip-test/.
"""

import argparse
import asyncio
import fractions
import http.client
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from pathlib import Path

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "whip" / "test.toml"
OUT = ROOT / "target" / "tmp" / "whip-test"
ROOM = "whip-room"
PUB_NAME = "Pub"

COLOUR = (0x28, 0x50, 0xD6)  # what the publisher sends
BACKGROUND = (0x1C, 0x1F, 0x26)  # [video] background of the default config
PUB_W, PUB_H = 640, 360
TONE_HZ = 600.0
RATE = 48000

COLOUR_TOL = 40  # max |channel difference| of a pixel that counts as the colour
COLOUR_MIN_FRACTION = 0.25  # of the canvas; a lone 16:9 tile in a 16:9 canvas covers ~0.9
COLOUR_FRAMES = 5  # decoded composite frames that must show it (the stream keeps going)

TOTAL_TIMEOUT = 110.0  # the whole run, server start included
SERVER_START_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0
CONNECT_TIMEOUT = 15.0
MEDIA_TIMEOUT = 15.0  # from the WHEP answer to both colour and tone seen

log = logging.getLogger("whip-test")


# ----------------------------------------------------------------------------- results


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def ok(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print(f"  ok    {what}" + (f"  ({detail})" if detail else ""), flush=True)
        else:
            self.failed.append(f"{what}: {detail}" if detail else what)
            print(f"  FAIL  {what}" + (f"  ({detail})" if detail else ""), flush=True)
        return cond


class Abort(Exception):
    """A failed check that later steps depend on."""


# ----------------------------------------------------------------------------- server


class Server:
    def __init__(self, binary, config=CONFIG, log_name="server.log"):
        self.binary = binary
        self.config = config
        self.proc = None
        self.port = None
        self.log_path = OUT / log_name
        self._port_found = threading.Event()
        self._lines = []

    def start(self):
        if not os.access(self.binary, os.X_OK):
            raise Abort(f"server binary {self.binary} not found (cargo build -p tessera, or set TESSERA_BIN)")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        cmd = [str(self.binary), "serve", "--config", str(self.config), "--listen", "127.0.0.1:0", "--udp-port", "0", "--tcp-port", "0"]
        print(f"starting: {' '.join(cmd)}  (RUST_LOG={env['RUST_LOG']}, log {self.log_path})", flush=True)
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._port_found.wait(SERVER_START_TIMEOUT):
            code = self.proc.poll()
            state = f"exited with {code}" if code is not None else "still running"
            raise Abort(
                f"no 'listening on http://127.0.0.1:PORT' line within {SERVER_START_TIMEOUT:.0f} s "
                f"(server {state}); last output:\n{self.tail()}"
            )
        print(f"server listening on 127.0.0.1:{self.port} (pid {self.proc.pid})", flush=True)

    def _pump(self):
        pat = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
        with open(self.log_path, "w", encoding="utf-8", errors="replace") as f:
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace")
                f.write(line)
                f.flush()
                self._lines.append(line.rstrip("\n"))
                del self._lines[:-200]
                if self.port is None:
                    m = pat.search(line)
                    if m:
                        self.port = int(m.group(1))
                        self._port_found.set()

    def tail(self, n=40):
        return "\n".join("    | " + line for line in self._lines[-n:]) or "    | (no output)"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# ----------------------------------------------------------------------------- HTTP


class Http:
    def __init__(self, port):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def _request(self, method, path, body, headers):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    async def request(self, method, path, body=None, headers=None):
        if isinstance(body, str):
            body = body.encode()
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._request, method, path, body, headers), HTTP_TIMEOUT + 2
            )
        except (OSError, http.client.HTTPException, asyncio.TimeoutError) as e:
            raise Abort(f"{method} {path}: no HTTP reply: {e!r}") from e

    def resource_path(self, location):
        """A Location header (relative or absolute) as a path on this server."""
        url = urllib.parse.urljoin(self.base + "/", location)
        parts = urllib.parse.urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")


# ----------------------------------------------------------------------------- media


class ColourTrack(VideoStreamTrack):
    """A solid-colour picture at aiortc's default 30 fps."""

    def __init__(self, rgb, width, height):
        super().__init__()
        img = np.empty((height, width, 3), np.uint8)
        img[:] = rgb
        self._yuv = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p").to_ndarray()

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self._yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneTrack(MediaStreamTrack):
    """A sine tone, mono s16 at 48 kHz in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, freq, amplitude=0.3):
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self._n = 0
        self._start = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        samples = RATE // 50
        if self._start is None:
            self._start = time.time()
        else:
            wait = self._start + self._n / RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        t = np.arange(self._n, self._n + samples) / RATE
        pcm = (self.amplitude * 32767 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += samples
        return frame


class DecodeFailures(logging.Handler):
    """Counts aiortc's "failed to decode" warnings, before and after the first decoded frame."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.first_frame_seen = False
        self.before = 0
        self.after = 0

    def emit(self, record):
        if "failed to decode" in record.getMessage():
            if self.first_frame_seen:
                self.after += 1
            else:
                self.before += 1


DECODE_FAILURES = DecodeFailures()


def colour_fraction(rgb):
    diff = np.abs(rgb.astype(np.int16) - np.array(COLOUR, np.int16)).max(axis=2)
    return float((diff <= COLOUR_TOL).mean())


def background_fraction(rgb):
    diff = np.abs(rgb.astype(np.int16) - np.array(BACKGROUND, np.int16)).max(axis=2)
    return float((diff <= COLOUR_TOL).mean())


def audio_to_mono(frame):
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = arr.reshape(channels, -1).mean(axis=0)
    else:
        mono = arr.reshape(-1, channels).mean(axis=1)
    if np.issubdtype(arr.dtype, np.integer):
        mono = mono / float(np.iinfo(arr.dtype).max + 1)
    return mono.astype(np.float64)


def tone_analysis(x, rate, hz=TONE_HZ):
    """(peak frequency in Hz, level in dBFS, share of the energy within ±10 Hz of `hz`)."""
    x = x - x.mean()
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    level = 20 * np.log10(max(rms, 1e-12))
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    spec[freqs < 20] = 0
    total = float(spec.sum()) or 1e-30
    peak = float(freqs[int(np.argmax(spec))])
    band = float(spec[np.abs(freqs - hz) <= 10].sum())
    return peak, level, band / total


def prefer_codec(transceiver, capabilities, mime):
    codecs = capabilities.codecs
    first = [c for c in codecs if c.mimeType.lower() == mime.lower()]
    if not first:
        raise Abort(f"aiortc has no {mime}")
    transceiver.setCodecPreferences(first + [c for c in codecs if c not in first])


def sdp_codecs(sdp):
    """{kind: [first payload type's rtpmap, ...]} of each m-line of an SDP."""
    out = []
    kind, pts, rtpmap = None, [], {}
    for line in sdp.splitlines() + ["m=end 0 x"]:
        if line.startswith("m="):
            if kind is not None:
                names = [rtpmap.get(p, p) for p in pts]
                out.append(f"{kind}: {', '.join(names) if names else '(none)'}")
            fields = line[2:].split()
            kind, pts, rtpmap = fields[0], fields[3:], {}
        elif line.startswith("a=rtpmap:"):
            pt, name = line[len("a=rtpmap:"):].split(" ", 1)
            rtpmap[pt] = name
    return "; ".join(out)


def sdp_direction(sdp):
    return [l[2:] for l in sdp.splitlines() if l in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")]


async def wait_connected(pc, what):
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while time.monotonic() < deadline:
        if pc.connectionState == "connected":
            return
        if pc.connectionState in ("failed", "closed"):
            break
        await asyncio.sleep(0.1)
    raise Abort(
        f"{what}: connectionState {pc.connectionState} (ICE {pc.iceConnectionState}) "
        f"after {CONNECT_TIMEOUT:.0f} s"
    )


def new_pc():
    # No STUN: aiortc's default would ask stun.l.google.com. Only loopback candidates.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def find_participants(room_json):
    """Every dict with a "name" field in the room JSON (the layout is the server's)."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            if isinstance(v.get("name"), str):
                found.append(v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(room_json.get("participants", room_json) if isinstance(room_json, dict) else room_json)
    return found


# ----------------------------------------------------------------------------- the test


async def publish(checks, api, pcs, name=None):
    name = name or PUB_NAME
    pc = new_pc()
    pcs.append(pc)
    video = pc.addTransceiver(ColourTrack(COLOUR, PUB_W, PUB_H), direction="sendonly")
    audio = pc.addTransceiver(ToneTrack(TONE_HZ), direction="sendonly")
    prefer_codec(video, RTCRtpSender.getCapabilities("video"), "video/VP8")
    prefer_codec(audio, RTCRtpSender.getCapabilities("audio"), "audio/opus")
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers ICE here
    checks.ok(pc.iceGatheringState == "complete", "publisher ICE gathering complete")
    offer = pc.localDescription.sdp
    (OUT / "whip-offer.sdp").write_text(offer)

    status, headers, body = await api.request(
        "POST", f"/whip/{ROOM}?name={name}", offer, {"Content-Type": "application/sdp"}
    )
    text = body.decode("utf-8", "replace")
    (OUT / "whip-answer.sdp").write_text(text)
    if not checks.ok(status == 201, "POST /whip -> 201", f"got {status}: {text[:300]!r}" if status != 201 else ""):
        raise Abort("WHIP publish refused")
    location = headers.get("location")
    checks.ok(bool(location), "POST /whip has Location", location or "missing")
    ctype = headers.get("content-type", "")
    checks.ok(ctype.startswith("application/sdp"), "WHIP answer Content-Type application/sdp", ctype)
    print(f"    WHIP answer: {sdp_codecs(text)}; directions {sdp_direction(text)}", flush=True)
    if location:
        checks.ok(
            re.fullmatch(rf"/whip/{ROOM}/[^/?]+", api.resource_path(location)) is not None,
            "WHIP Location is /whip/{room}/{id}", location,
        )
    await pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
    await wait_connected(pc, "publisher")
    checks.ok(True, "publisher connected")
    return pc, location


async def watch(checks, api, pcs):
    pc = new_pc()
    pcs.append(pc)
    tracks = {}

    @pc.on("track")
    def on_track(track):
        tracks[track.kind] = track

    video = pc.addTransceiver("video", direction="recvonly")
    audio = pc.addTransceiver("audio", direction="recvonly")
    prefer_codec(video, RTCRtpReceiver.getCapabilities("video"), "video/VP8")
    prefer_codec(audio, RTCRtpReceiver.getCapabilities("audio"), "audio/opus")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    (OUT / "whep-offer.sdp").write_text(offer)

    status, headers, body = await api.request(
        "POST", f"/whep/{ROOM}", offer, {"Content-Type": "application/sdp"}
    )
    text = body.decode("utf-8", "replace")
    (OUT / "whep-answer.sdp").write_text(text)
    if not checks.ok(status == 201, "POST /whep -> 201", f"got {status}: {text[:300]!r}" if status != 201 else ""):
        raise Abort("WHEP refused")
    location = headers.get("location")
    checks.ok(bool(location), "POST /whep has Location", location or "missing")
    print(f"    WHEP answer: {sdp_codecs(text)}; directions {sdp_direction(text)}", flush=True)
    if location:
        checks.ok(
            re.fullmatch(rf"/whep/{ROOM}/[^/?]+", api.resource_path(location)) is not None,
            "WHEP Location is /whep/{room}/{id}", location,
        )
    await pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
    answered = time.monotonic()
    await wait_connected(pc, "WHEP viewer")
    checks.ok(True, "WHEP viewer connected")

    stats = {
        "frames": 0, "sizes": set(), "best_fraction": 0.0, "best_bg": 0.0, "first_frame_s": None,
        "colour_s": None, "colour_frames": 0, "audio_frames": 0, "audio_rates": set(), "tone_s": None, "last_tone": None,
    }
    done = {"video": asyncio.Event(), "audio": asyncio.Event()}
    deadline = answered + MEDIA_TIMEOUT

    async def read_video():
        track = None
        while track is None and time.monotonic() < deadline:
            track = tracks.get("video")
            await asyncio.sleep(0.05)
        while track is not None and not done["video"].is_set():
            frame = await track.recv()
            rgb = frame.to_ndarray(format="rgb24")
            stats["frames"] += 1
            stats["sizes"].add(f"{frame.width}x{frame.height}")
            if stats["first_frame_s"] is None:
                stats["first_frame_s"] = time.monotonic() - answered
                DECODE_FAILURES.first_frame_seen = True
            frac = colour_fraction(rgb)
            if frac >= stats["best_fraction"]:
                stats["best_fraction"] = frac
                stats["best_bg"] = background_fraction(rgb)
                stats["best_rgb"] = rgb
            stats["last_rgb"] = rgb
            if frac >= COLOUR_MIN_FRACTION:
                stats["colour_frames"] += 1
                if stats["colour_frames"] >= COLOUR_FRAMES:
                    stats["colour_s"] = time.monotonic() - answered
                    done["video"].set()

    async def read_audio():
        track = None
        while track is None and time.monotonic() < deadline:
            track = tracks.get("audio")
            await asyncio.sleep(0.05)
        chunks, have, rate = [], 0, None
        while track is not None and not done["audio"].is_set():
            frame = await track.recv()
            stats["audio_frames"] += 1
            rate = frame.sample_rate
            stats["audio_rates"].add(rate)
            mono = audio_to_mono(frame)
            chunks.append(mono)
            have += len(mono)
            if have >= rate:  # analyse each new second on its own
                window = np.concatenate(chunks)[-rate:]
                chunks, have = [], 0
                peak, level, share = tone_analysis(window, rate)
                stats["last_tone"] = (peak, level, share)
                if abs(peak - TONE_HZ) <= 5 and level > -40 and share >= 0.5:
                    stats["tone_s"] = time.monotonic() - answered
                    stats["tone_pcm"] = window
                    done["audio"].set()

    readers = [asyncio.ensure_future(read_video()), asyncio.ensure_future(read_audio())]
    try:
        remaining = max(0.1, deadline - time.monotonic())
        await asyncio.wait_for(
            asyncio.gather(done["video"].wait(), done["audio"].wait()), remaining
        )
    except asyncio.TimeoutError:
        pass
    finally:
        for r in readers:
            r.cancel()
        results = await asyncio.gather(*readers, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, (asyncio.CancelledError, MediaStreamError)):
            print(f"    reader error: {r!r}", flush=True)

    img = stats.get("best_rgb", stats.get("last_rgb"))
    if img is not None:
        save_png(img, OUT / "whep-frame.png")
    checks.ok("video" in tracks and "audio" in tracks, "WHEP viewer got a video and an audio track",
              f"tracks: {sorted(tracks)}")
    checks.ok(
        stats["colour_s"] is not None,
        f"composite shows the publisher's colour #{'%02x%02x%02x' % COLOUR}",
        f"{stats['frames']} frames {sorted(stats['sizes'])}, first after "
        f"{fmt_s(stats['first_frame_s'])}, {stats['colour_frames']} with the colour, "
        f"{COLOUR_FRAMES} after {fmt_s(stats['colour_s'])}; best frame "
        f"{stats['best_fraction']:.0%} colour, {stats['best_bg']:.0%} background "
        f"(need {COLOUR_MIN_FRACTION:.0%}); frame saved to {OUT / 'whep-frame.png'}",
    )
    if DECODE_FAILURES.before:
        print(f"    note: aiortc could not decode {DECODE_FAILURES.before} VP8 frame(s) before the first "
              f"good one (the stream did not start with a keyframe it received)", flush=True)
    checks.ok(DECODE_FAILURES.after == 0, "no VP8 decode failures after the first decoded frame",
              f"{DECODE_FAILURES.after} failures")
    checks.ok(
        sorted(stats["sizes"]) == ["640x360"], "composite is the test tier's 640x360", f"{sorted(stats['sizes'])}"
    )
    tone = stats["last_tone"]
    tone_txt = (f"peak {tone[0]:.0f} Hz, {tone[1]:.1f} dBFS, {tone[2]:.0%} of the energy at {TONE_HZ:.0f} Hz"
                if tone else "no full second of audio")
    checks.ok(
        stats["tone_s"] is not None,
        f"mix carries the {TONE_HZ:.0f} Hz tone",
        f"{stats['audio_frames']} audio frames at {sorted(stats['audio_rates'])} Hz, tone after "
        f"{fmt_s(stats['tone_s'])}; last second: {tone_txt}",
    )
    return pc, location


def fmt_s(v):
    return "never" if v is None else f"{v:.1f} s"


def save_png(rgb, path):
    try:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        with av.open(str(path), "w", format="image2") as out:
            st = out.add_stream("png")
            st.width, st.height, st.pix_fmt = frame.width, frame.height, "rgb24"
            for p in st.encode(frame):
                out.mux(p)
            for p in st.encode(None):
                out.mux(p)
    except Exception as e:  # only a debugging aid
        print(f"    (could not save {path}: {e})", flush=True)


def decode_png(data):
    with av.open(io.BytesIO(data), format="png_pipe") as c:
        for frame in c.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise ValueError("no frame in PNG")


async def check_api(checks, api):
    status, _, body = await api.request("GET", f"/api/rooms/{ROOM}")
    text = body.decode("utf-8", "replace")
    (OUT / "room.json").write_text(text)
    if checks.ok(status == 200, f"GET /api/rooms/{ROOM} -> 200", f"got {status}" if status != 200 else ""):
        try:
            room = json.loads(text)
        except ValueError as e:
            checks.ok(False, "room JSON parses", f"{e}: {text[:200]!r}")
        else:
            people = find_participants(room)
            pub = [p for p in people if p.get("name") == PUB_NAME]
            checks.ok(bool(pub), f"room lists the publisher {PUB_NAME!r}",
                      f"participants: {[(p.get('name'), p.get('kind')) for p in people]}")
            if pub and "kind" in pub[0]:
                checks.ok(pub[0]["kind"] == "whip", "publisher's kind is whip", f"kind {pub[0]['kind']!r}")
            print(f"    room: {text[:600]}{'...' if len(text) > 600 else ''}", flush=True)

    status, headers, body = await api.request("GET", "/api/rooms")
    checks.ok(status == 200 and ROOM in body.decode("utf-8", "replace"), "GET /api/rooms lists the room",
              f"{status}: {body[:200]!r}")

    status, headers, body = await api.request("GET", f"/api/rooms/{ROOM}/snapshot.png")
    (OUT / "snapshot.png").write_bytes(body)
    is_png = status == 200 and body.startswith(b"\x89PNG\r\n\x1a\n")
    checks.ok(is_png, "snapshot.png -> 200 PNG",
              f"{status}, {headers.get('content-type')}, {len(body)} bytes, starts {body[:8]!r}")
    if is_png:
        checks.ok(headers.get("content-type", "").startswith("image/png"), "snapshot Content-Type image/png",
                  headers.get("content-type", "missing"))
        try:
            rgb = decode_png(body)
        except Exception as e:
            checks.ok(False, "snapshot decodes", repr(e))
        else:
            frac = colour_fraction(rgb)
            checks.ok(frac >= COLOUR_MIN_FRACTION, "snapshot shows the publisher's colour",
                      f"{rgb.shape[1]}x{rgb.shape[0]}, {frac:.0%} colour, {background_fraction(rgb):.0%} background; "
                      f"saved to {OUT / 'snapshot.png'}")


async def delete_and_check_gone(checks, api, whip_loc, whep_loc):
    for what, loc in (("WHIP", whip_loc), ("WHEP", whep_loc)):
        if not loc:
            continue
        path = api.resource_path(loc)
        status, _, body = await api.request("DELETE", path)
        checks.ok(status in (200, 204), f"DELETE {what} {path} -> 200/204", f"got {status} {body[:200]!r}")

    deadline = time.monotonic() + 5
    last = None
    while time.monotonic() < deadline:
        status, _, body = await api.request("GET", f"/api/rooms/{ROOM}")
        last = (status, body[:300])
        if status == 404:
            break
        if status == 200:
            try:
                names = [p.get("name") for p in find_participants(json.loads(body))]
            except ValueError:
                names = None
            if names is not None and PUB_NAME not in names:
                break
        await asyncio.sleep(0.2)
    else:
        checks.ok(False, "publisher gone after DELETE", f"after 5 s GET /api/rooms/{ROOM}: {last}")
        return
    checks.ok(True, "publisher gone after DELETE", f"GET /api/rooms/{ROOM} -> {last[0]}")

    status, _, body = await api.request("DELETE", api.resource_path(whip_loc)) if whip_loc else (None, None, b"")
    if whip_loc:
        checks.ok(status == 404, "second DELETE of the WHIP resource -> 404", f"got {status}")


VANISH_NAME = "Vanisher"


async def names_in_room(api):
    status, _, body = await api.request("GET", f"/api/rooms/{ROOM}")
    if status != 200:
        return []
    try:
        return [p.get("name") for p in find_participants(json.loads(body))]
    except ValueError:
        return []


async def refusals(api, limit):
    _, _, body = await api.request("GET", "/metrics")
    m = re.search(rf'^tessera_limit_refusals_total{{limit="{limit}"}} (\d+)', body.decode(), re.M)
    return int(m.group(1)) if m else None


async def vanishing_publisher(checks, api, port):
    """A WHIP publisher in another process is SIGKILLed: no DELETE, no DTLS close, its
    network simply disappears. The server must remove it after its ICE timeouts."""
    before = await refusals(api, "ice_timeout")
    child = subprocess.Popen([sys.executable, __file__, "--vanish", str(port)],
                             stdout=subprocess.PIPE, text=True)
    try:
        def wait_line():
            lines = []
            for line in child.stdout:  # the child's own check lines come first
                lines.append(line.strip())
                if line.strip() == "connected":
                    break
            return lines
        lines = await asyncio.wait_for(asyncio.to_thread(wait_line), 30)
        if not checks.ok(lines[-1:] == ["connected"], "vanishing publisher connected", repr(lines[-3:])):
            return
        checks.ok(VANISH_NAME in await names_in_room(api), "vanishing publisher listed in the room")
    finally:
        child.kill()
        child.wait()
    killed = time.monotonic()
    # ice_disconnected_timeout_ms + ice_failed_timeout_ms in test.toml, plus slack.
    deadline = killed + 3 + 15
    while time.monotonic() < deadline and VANISH_NAME in await names_in_room(api):
        await asyncio.sleep(0.2)
    gone = VANISH_NAME not in await names_in_room(api)
    checks.ok(gone, "killed publisher removed after the ICE timeout",
              f"after {time.monotonic() - killed:.1f} s")
    after = await refusals(api, "ice_timeout")
    checks.ok(before is not None and after == before + 1, "ice_timeout counted in /metrics", f"{before} -> {after}")


async def vanish_child(port):
    """Child mode: publish, say so, then wait to be killed."""
    checks = Checks()
    api = Http(port)
    await publish(checks, api, [], name=VANISH_NAME)
    print("connected", flush=True)
    await asyncio.sleep(3600)


async def negatives(checks, api, valid_offer):
    sdp = {"Content-Type": "application/sdp"}
    status, h, body = await api.request("POST", f"/whip/{ROOM}?name=Bad", "this is not an SDP offer\r\n", sdp)
    checks.ok(status == 400, "POST /whip garbage SDP -> 400", f"got {status} {body[:200]!r}")
    if status == 201 and h.get("location"):
        await api.request("DELETE", api.resource_path(h["location"]))

    status, h, body = await api.request("POST", f"/whep/{ROOM}", "v=0\r\ngarbage\r\n", sdp)
    checks.ok(status == 400, "POST /whep garbage SDP -> 400", f"got {status} {body[:200]!r}")
    if status == 201 and h.get("location"):
        await api.request("DELETE", api.resource_path(h["location"]))

    status, h, body = await api.request("POST", f"/whip/{ROOM}?name=Bad", valid_offer, {"Content-Type": "text/plain"})
    checks.ok(status == 415, "POST /whip with Content-Type text/plain -> 415", f"got {status} {body[:200]!r}")
    if status == 201 and h.get("location"):
        await api.request("DELETE", api.resource_path(h["location"]))

    status, h, body = await api.request("POST", f"/whip/{ROOM}?name=Bad", valid_offer)
    checks.ok(status == 415, "POST /whip without Content-Type -> 415", f"got {status} {body[:200]!r}")
    if status == 201 and h.get("location"):
        await api.request("DELETE", api.resource_path(h["location"]))

    for path in (f"/whip/{ROOM}/no-such-resource", f"/whep/{ROOM}/no-such-resource"):
        status, _, body = await api.request("DELETE", path)
        checks.ok(status == 404, f"DELETE {path} -> 404", f"got {status} {body[:200]!r}")

    status, _, body = await api.request("GET", "/api/rooms/no-such-room-here")
    checks.ok(status == 404, "GET /api/rooms/<unknown> -> 404", f"got {status}")


async def run(checks, server):
    api = Http(server.port)
    status, _, body = await api.request("GET", "/healthz")
    checks.ok(status == 200, "GET /healthz -> 200", f"{status} {body[:50]!r}")

    pcs = []
    whip_loc = whep_loc = None
    try:
        print("WHIP publisher", flush=True)
        _, whip_loc = await publish(checks, api, pcs)
        valid_offer = (OUT / "whip-offer.sdp").read_text()
        print("WHEP viewer", flush=True)
        _, whep_loc = await watch(checks, api, pcs)
        print("HTTP API", flush=True)
        await check_api(checks, api)
        print("DELETE", flush=True)
        await delete_and_check_gone(checks, api, whip_loc, whep_loc)
        whip_loc = whep_loc = None
        print("vanishing publisher", flush=True)
        await vanishing_publisher(checks, api, server.port)
    finally:
        for pc in pcs:
            try:
                await asyncio.wait_for(pc.close(), 5)
            except Exception:
                pass
        for loc in (whip_loc, whep_loc):  # after an abort: leave the room tidy
            if loc and server.alive():
                try:
                    await api.request("DELETE", api.resource_path(loc))
                except Exception:
                    pass
    print("errors", flush=True)
    await negatives(checks, api, valid_offer)
    checks.ok(server.alive(), "server still running at the end", f"exit code {server.proc.poll()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="aiortc/aioice debug logs")
    ap.add_argument("--vanish", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    receiver_log = logging.getLogger("aiortc.rtcrtpreceiver")
    receiver_log.addHandler(DECODE_FAILURES)
    if not args.verbose:
        receiver_log.propagate = False  # counted and summarised instead

    # aioice never offers 127.0.0.1; this test talks to a server on loopback only.
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

    if args.vanish:
        sys.stdout = open(sys.stdout.fileno(), "w", buffering=1, closefd=False)
        asyncio.run(vanish_child(args.vanish))
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    binary = Path(os.environ.get("TESSERA_BIN", ROOT / "target" / "debug" / "tessera"))
    code = run_checks("whip", Server(binary), lambda checks, server: run(checks, server), TOTAL_TIMEOUT)
    # A screen share's text through the server: its own server and config (share_psnr.py).
    import share_psnr

    share_psnr.setup_logging(args.verbose)
    return code | share_psnr.run_test(binary)


def run_checks(label, server, body, timeout):
    """Starts `server`, runs `body(checks, server)` (a coroutine) within `timeout` seconds of
    the start, stops the server and prints the summary line `LABEL: N passed, M failed`.
    Returns the exit code."""
    checks = Checks()
    started = time.monotonic()
    try:
        server.start()
        asyncio.run(asyncio.wait_for(body(checks, server), timeout - (time.monotonic() - started)))
    except Abort as e:
        checks.failed.append(str(e))
        print(f"  ABORT {e}", flush=True)
    except asyncio.TimeoutError:
        checks.failed.append(f"the run took over {timeout:.0f} s")
        print(f"  ABORT the run took over {timeout:.0f} s", flush=True)
    except Exception:
        checks.failed.append("unexpected error in the test")
        traceback.print_exc()
    finally:
        server.stop()

    print(f"\n{len(checks.failed) and 'FAILED' or 'OK'} in {time.monotonic() - started:.1f} s")
    if checks.failed:
        print("failures:")
        for f in checks.failed:
            print(f"  - {f}")
        print(f"server output (full log {server.log_path}):\n{server.tail()}")
    print(f"{label}: {checks.passed} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0

if __name__ == "__main__":
    # share_psnr.py imports this file's helpers as `test_whip_whep`: the same module, not a copy.
    sys.modules.setdefault("test_whip_whep", sys.modules[__name__])
    sys.exit(main())
