#!/usr/bin/env python3
"""Text sharpness of a screen share through `tessera serve`: PSNR on luma.

    target/venv/bin/python tests/whip/share_psnr.py [--settle 10] [--font-px 20]
        [--send-size WxH] [--offline] [-v]

Generates a 1920x1080 page of black text on white (ffmpeg drawtext, at run time, into
target/tmp/whip-test/), publishes it over WHIP as a screen share (`kind=screen`, aiortc's
own VP8 encoder, 5 fps), watches the room over WHEP at the default tier (1280x720 25 fps
VP8 1500 kbit/s), waits until the share is in the presenter layout's big tile, then
compares the share's letterboxed picture in a few received composites with the page scaled
to the same rectangle. Two references:

  server scaler  the page through the compositor's own scaler (Debian's libyuv, called
                 through ctypes, with the filter `tessera-compose` picks): what the media
                 path (aiortc's encode, the server's decode, the tier's encode) loses;
  area           the page through swscale's area filter, an independent downscale (what
                 a viewer would call the ideal picture): adds what the server's scaler
                 loses or shifts.

and three stages: the server's canvas before the tier encode (`/api/rooms/{room}/
snapshot.png`), the composite as the WHEP viewer decoded it, and the two against each other
(the tier encode alone). `--send-size WxH` publishes the page already scaled to WxH (swscale
area), as a browser following its `send_hint` would; `--offline` also runs the page through
aiortc's VP8 encoder at the server's REMB and back, at full size (the publisher alone).

The config (written next to the page): labels off (they would sit on the text), bandwidth
adaptation off (so the viewer stays on the default tier), everything else the defaults.
The share also carries the tab's sound (a 1000 Hz tone on its audio m-line); the viewer's
mix must carry it. `test_whip_whep.py` runs `check()`, which waits for the picture to
sharpen instead of a fixed settle, with a generous floor (`--test` runs those checks alone).
"""

import argparse
import asyncio
import ctypes
import fractions
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aioice.ice  # noqa: E402
import av  # noqa: E402
import numpy as np  # noqa: E402
from aiortc import RTCSessionDescription, VideoStreamTrack  # noqa: E402
from aiortc.rtcrtpreceiver import RTCRtpReceiver  # noqa: E402
from aiortc.rtcrtpsender import RTCRtpSender  # noqa: E402

import test_whip_whep as w  # noqa: E402
from test_whip_whep import Abort, Http, Server  # noqa: E402

ROOM = "share-psnr"
NAME = "Sam"
SHARE_W, SHARE_H = 1920, 1080
SHARE_FPS = 5  # what rooms.share_fps asks for by default
TAB_TONE_HZ = 1000.0  # the shared tab's sound (the share's audio m-line)
TIER = "default"  # 1280x720 25 fps VP8 1500 kbit/s
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
PAGE = w.OUT / "share-page.png"
CONFIG_PATH = w.OUT / "share.toml"
CONFIG = """# Written by tests/whip/share_psnr.py: the defaults, without labels (they would cover
# text) and without bandwidth adaptation (the viewer stays on the default tier).
[labels]
enabled = false

[bandwidth]
enabled = false
"""

# The test's floor (the goal is 35 dB; see docs/performance.md, "Presenting").
PSNR_FLOOR_DB = 25.0
SHARE_TIMEOUT = 50.0  # the test's whole run, server start included
LAYOUT_TIMEOUT = 15.0  # from the WHEP answer to the share in the big tile, frames flowing

log = logging.getLogger("share-psnr")


# ----------------------------------------------------------------------------- the page

WORDS = (
    "the server decodes every camera and shares one composite picture per tier so a "
    "screen of text must keep its thin strokes through two encoders and a scaler while "
    "the viewer reads small letters at a glance, numbers like 1280 720 25 1500 and "
    "punctuation: commas, full stops; brackets (like these) and quotes \"here\""
).split()


def page_text(lines=34, width=132, seed=1):
    """Deterministic prose, `lines` lines of at most `width` characters."""
    rng = random.Random(seed)
    out, line = [], ""
    while len(out) < lines:
        word = rng.choice(WORDS)
        if len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join(out)


def make_page(path=PAGE, font_px=20):
    """A 1920x1080 PNG of black text on white; returns it as a yuv420p av.VideoFrame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = max(4, (SHARE_H - 80) // (font_px + font_px // 3))
    width = int((SHARE_W - 120) / (font_px * 0.58))
    text = path.with_suffix(".txt")
    text.write_text(page_text(lines, width))
    cmd = [
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=white:s={SHARE_W}x{SHARE_H}",
        "-frames:v", "1", "-vf",
        f"drawtext=fontfile={FONT}:textfile={text}:expansion=none:fontsize={font_px}"
        f":fontcolor=black:line_spacing={font_px // 3}:x=60:y=40",
        str(path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise Abort(f"ffmpeg drawtext failed: {r.stderr.strip()[:500]}")
    rgb = w.decode_png(path.read_bytes())
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


# ----------------------------------------------------------------------------- pictures


def luma(frame):
    """The Y plane of a yuv420p av.VideoFrame as a (h, w) uint8 array."""
    p = frame.planes[0]
    return np.frombuffer(p, np.uint8).reshape(frame.height, p.line_size)[:, : frame.width]


def rgb_to_luma(rgb):
    """BT.601 limited-range Y of an RGB picture (the server's snapshot PNG is its canvas
    converted with that matrix)."""
    rgb = rgb.astype(np.float64)
    y = 16 + (65.738 * rgb[..., 0] + 129.057 * rgb[..., 1] + 25.064 * rgb[..., 2]) / 256
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def even(x, y, w_, h_):
    """`tessera_codec::Rect::even`: the origin rounded up, the far edges down (chroma)."""
    ex, ey = x + (x & 1), y + (y & 1)
    return ex, ey, max(0, ((x + w_) & ~1) - ex), max(0, ((y + h_) & ~1) - ey)


FILTER_NONE, FILTER_BILINEAR, FILTER_BOX = 0, 2, 3  # libyuv's FilterMode


def compositor_draw(src_w, src_h, tile):
    """How `tessera_compose::draw_fitted` (letterbox) and `scale_into` draw a src_w x src_h
    picture into `tile` (x, y, w, h): (source rect, canvas rect, libyuv filter)."""
    tx, ty, tw, th = tile
    if tw <= src_w <= tw * 105 // 100 and th <= src_h <= th * 105 // 100:
        # At most 5% larger than the tile: centre-cropped to it (`near_size`).
        return even((src_w - tw) // 2, (src_h - th) // 2, tw, th), even(*tile), FILTER_NONE
    # The largest rect with the source's aspect inside the tile, centred.
    if src_w * th > tw * src_h:
        fw, fh = tw, tw * src_h // src_w
    else:
        fw, fh = th * src_w // src_h, th
    dst = even(tx + (tw - fw) // 2, ty + (th - fh) // 2, fw, fh)
    return even(0, 0, src_w, src_h), dst, FILTER_BOX if src_w > 2 * fw else FILTER_BILINEAR


def scaled_luma(page, w_, h_, interpolation="AREA"):
    """`page` (a yuv420p av.VideoFrame) scaled by swscale to w_ x h_: its Y plane."""
    return luma(page.reformat(width=w_, height=h_, format="yuv420p", interpolation=interpolation))


_LIBYUV = None


def libyuv_scale(y, w_, h_, mode):
    """libyuv's ScalePlane, the scaler the compositor runs (Debian's libyuv0, which the
    server links), on one plane."""
    global _LIBYUV
    if _LIBYUV is None:
        _LIBYUV = ctypes.CDLL("libyuv.so.0")
    y = np.ascontiguousarray(y)
    out = np.empty((h_, w_), np.uint8)
    _LIBYUV.ScalePlane(y.ctypes.data_as(ctypes.c_void_p), y.shape[1], y.shape[1], y.shape[0],
                       out.ctypes.data_as(ctypes.c_void_p), w_, w_, h_, mode)
    return out


def server_scaled(y, draw):
    """Y plane `y` as the compositor draws it (`draw` from `compositor_draw`)."""
    src, dst, mode = draw
    part = crop(y, src)
    if (src[2], src[3]) == (dst[2], dst[3]):
        return part  # libyuv copies a plane it need not scale
    return libyuv_scale(part, dst[2], dst[3], mode)


def crop(y, rect):
    x, yy, w_, h_ = rect
    return y[yy : yy + h_, x : x + w_]


# ----------------------------------------------------------------------------- media


class ScreenTrack(VideoStreamTrack):
    """One still picture sent as a video at `fps`."""

    def __init__(self, frame, fps):
        super().__init__()
        self._yuv = frame
        self._fps = fps
        self._n = 0
        self._start = None

    async def recv(self):
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._n / self._fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.VideoFrame.from_ndarray(self._yuv.to_ndarray(), format="yuv420p")
        frame.pts = self._n * 90000 // self._fps
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


class Remb(logging.Handler):
    """REMB values aiortc's sender received (it logs each at debug level)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.values = []

    def emit(self, record):
        msg = record.getMessage()
        if "receiver estimated maximum bitrate" in msg:
            try:
                self.values.append(int(msg.split("bitrate")[1].split()[0]))
            except (IndexError, ValueError):
                pass


REMB = Remb()


async def post_sdp(api, path, pc, what):
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await api.request("POST", path, pc.localDescription.sdp, {"Content-Type": "application/sdp"})
    if status != 201:
        raise Abort(f"POST {path} -> {status}: {body[:300]!r}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
    await w.wait_connected(pc, what)
    return headers.get("location")


async def publish_screen(api, pcs, page, room, name):
    pc = w.new_pc()
    pcs.append(pc)
    t = pc.addTransceiver(ScreenTrack(page, SHARE_FPS), direction="sendonly")
    w.prefer_codec(t, RTCRtpSender.getCapabilities("video"), "video/VP8")
    # The tab's sound: a share's audio joins the room's mix.
    pc.addTransceiver(w.ToneTrack(TAB_TONE_HZ), direction="sendonly")
    await post_sdp(api, f"/whip/{room}?name={name}&kind=screen", pc, "screen share")
    return pc, t.sender


async def watch_composite(api, pcs, room, frames, audio):
    """A WHEP viewer; appends (monotonic time, yuv420p av.VideoFrame) to `frames` and
    (sample rate, mono samples) of the mix to `audio`."""
    pc = w.new_pc()
    pcs.append(pc)
    got = asyncio.Event()
    reader = []

    @pc.on("track")
    def on_track(track):
        if track.kind == "audio":

            async def hear():
                while True:
                    f = await track.recv()
                    audio.append((f.sample_rate, w.audio_to_mono(f)))
                    del audio[:-100]

            reader.append(asyncio.ensure_future(hear()))
            return

        async def read():
            while True:
                f = await track.recv()
                frames.append((time.monotonic(), f))
                del frames[:-60]
                got.set()

        reader.append(asyncio.ensure_future(read()))

    t = pc.addTransceiver("video", direction="recvonly")
    w.prefer_codec(t, RTCRtpReceiver.getCapabilities("video"), "video/VP8")
    pc.addTransceiver("audio", direction="recvonly")
    await post_sdp(api, f"/whep/{room}?name=Viewer", pc, "WHEP viewer")
    return pc, got, reader


async def room_json(api, room):
    status, _, body = await api.request("GET", f"/api/rooms/{room}")
    if status != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def share_tile(room, tier):
    """(share participant, its tile (x, y, w, h) on `tier`, whether that is the largest
    tile there, the tier's report) from /api/rooms JSON, or None."""
    share = next((p for p in room.get("participants", []) if p.get("kind") == "screen"), None)
    t = next((t for t in room.get("tiers", []) if t.get("name") == tier), None)
    if share is None or t is None:
        return None
    tiles = t.get("tiles", [])
    mine = next((x for x in tiles if x.get("id") == share.get("id")), None)
    if mine is None:
        return None
    biggest = max(x["w"] * x["h"] for x in tiles)
    rect = (mine["x"], mine["y"], mine["w"], mine["h"])
    return share, rect, mine["w"] * mine["h"] == biggest, t


async def outbound_bytes(sender):
    stats = await sender.getStats()
    return sum(s.bytesSent for s in stats.values() if getattr(s, "type", "") == "outbound-rtp")


def encoder_target(sender):
    enc = getattr(sender, "_RTCRtpSender__encoder", None)
    return getattr(enc, "target_bitrate", None)


# ----------------------------------------------------------------------------- measure


async def measure(api, page, settle, samples=8, original=None, room=ROOM, until_db=None):
    """Publishes `page` (a yuv420p av.VideoFrame), watches, waits for the big tile and
    `settle` seconds, then measures (the bench: a fixed time in the tile). With `until_db`
    (the test) it waits instead until the newest received share reaches that PSNR against
    the page through the server's scaler, `settle` seconds at most. `original`: the
    full-size page `page` was scaled from, if it was. Returns a dict of results (raises
    Abort when the share never reaches the big tile)."""
    pcs, readers = [], []
    frames = []
    audio = []
    try:
        pub_pc, sender = await publish_screen(api, pcs, page, room, NAME)
        t_pub = time.monotonic()
        view_pc, got, readers = await watch_composite(api, pcs, room, frames, audio)
        deadline = time.monotonic() + LAYOUT_TIMEOUT
        placed = None
        last = None
        while time.monotonic() < deadline:
            last = await room_json(api, room)
            placed = share_tile(last, TIER) if last else None
            if placed and placed[2] and last.get("sharing") and frames:
                break
            await asyncio.sleep(0.2)
        else:
            (w.OUT / "share-room.json").write_text(json.dumps(last, indent=1))
            raise Abort(
                f"within {LAYOUT_TIMEOUT:.0f} s: share tile {placed and placed[1]}, largest "
                f"{placed and placed[2]}, sharing {last and last.get('sharing')!r}, {len(frames)} frames "
                f"received; room JSON in {w.OUT / 'share-room.json'}"
            )
        in_big_tile_s = time.monotonic() - t_pub
        if until_db is None:
            await asyncio.sleep(settle)
        else:
            draw = compositor_draw(page.width, page.height, placed[1])
            ref = server_scaled(luma(page), draw)
            until = time.monotonic() + settle
            while time.monotonic() < until:
                f = frames[-1][1]
                if (f.width, f.height) == (placed[3]["width"], placed[3]["height"]) and \
                        psnr(crop(luma(f), draw[1]), ref) >= until_db:
                    break
                await asyncio.sleep(0.25)

        # The window: bitrates in and out over `samples` frames a few apart.
        b0, t0 = await outbound_bytes(sender), time.monotonic()
        rx0 = await inbound_bytes(view_pc)
        picked = []
        seen = None
        while len(picked) < samples:
            await asyncio.sleep(0.25)
            if frames and frames[-1][1] is not seen:
                seen = frames[-1][1]
                picked.append(seen)
        snap_status, _, snap_body = await api.request("GET", f"/api/rooms/{room}/snapshot.png")
        b1, t1 = await outbound_bytes(sender), time.monotonic()
        rx1 = await inbound_bytes(view_pc)
        target = encoder_target(sender)
        room_now = await room_json(api, room)
        (w.OUT / "share-room.json").write_text(json.dumps(room_now, indent=1))
        share, tile, biggest, tier = share_tile(room_now, TIER)
    finally:
        for r in readers:
            r.cancel()
        for pc in pcs:
            try:
                await asyncio.wait_for(pc.close(), 5)
            except Exception:
                pass

    draw = compositor_draw(page.width, page.height, tile)
    fit = draw[1]
    res = {
        "tile": tile, "fit": fit, "biggest": biggest, "canvas": (tier["width"], tier["height"]),
        "sent_size": (page.width, page.height), "in_big_tile_s": in_big_tile_s,
        "sent_kbps": (b1 - b0) * 8 / 1000 / (t1 - t0),
        "remb_kbps": [v / 1000 for v in REMB.values],
        "encoder_target_kbps": (target or 0) / 1000,
        "hint": share.get("send_hint"), "server_in_kbps": share.get("video_kbps_in"),
        "server_in_fps": share.get("video_fps_in"),
        "tier_kbps_out": tier.get("kbps_out"), "received_kbps": (rx1 - rx0) * 8 / 1000 / (t1 - t0),
        "sizes": sorted({f"{f.width}x{f.height}" for f in picked}),
        "tab_tone": tab_tone(audio),
    }
    fw, fh = fit[2], fit[3]
    refs = {
        "server": server_scaled(luma(page), draw),
        "area": scaled_luma(original or page, fw, fh, "AREA"),
    }
    res["scaler_vs_area"] = psnr(refs["server"], refs["area"])
    received = [crop(luma(f), fit) for f in picked if (f.width, f.height) == res["canvas"]]
    for name, ref in refs.items():
        res[f"received_{name}"] = [psnr(r, ref) for r in received]
    res["bars_luma"] = bars_luma(picked, tile, fit)
    if snap_status == 200:
        (w.OUT / "share-snapshot.png").write_bytes(snap_body)
        snap = crop(rgb_to_luma(w.decode_png(snap_body)), fit)
        for name, ref in refs.items():
            res[f"snapshot_{name}"] = psnr(snap, ref)
        res["tier_only"] = [psnr(r, snap) for r in received]
    if picked:
        w.save_png(picked[-1].to_ndarray(format="rgb24"), w.OUT / "share-received.png")
    return res


def tab_tone(audio):
    """The last second of the viewer's mix: `tone_analysis` at TAB_TONE_HZ, or None."""
    if not audio:
        return None
    rate = audio[-1][0]
    x = np.concatenate([a for _, a in audio])[-rate:]
    return w.tone_analysis(x, rate, TAB_TONE_HZ) if len(x) == rate else None


def bars_luma(picked, tile, fit):
    """Mean luma of the letterbox bars above and below the picture in the last frame."""
    if not picked:
        return None
    y = luma(picked[-1])
    tx, ty, tw, th = tile
    fx, fy, fw, fh = fit
    top = y[ty:fy, fx : fx + fw]
    bottom = y[fy + fh : ty + th, fx : fx + fw]
    both = np.concatenate([top.ravel(), bottom.ravel()])
    return float(both.mean()) if both.size else None


async def inbound_bytes(pc):
    stats = await pc.getStats()
    # aiortc's inbound-rtp has no byte count; the viewer receives video only, so the
    # transport's bytes are the composite's (plus a little RTCP).
    return sum(getattr(s, "bytesReceived", 0) for s in stats.values() if getattr(s, "type", "") == "transport")


def offline_encode(page, kbps, frames=25):
    """PSNR (full size, luma) of the page through aiortc's VP8 encoder at `kbps` and back, per
    frame: the publisher's encode alone, without the network, the server or a scaler."""
    from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload

    enc = Vp8Encoder()
    enc.target_bitrate = int(kbps * 1000)
    dec = av.CodecContext.create("libvpx", "r")
    ref = luma(page)
    out, sizes = [], []
    for n in range(frames):
        f = av.VideoFrame.from_ndarray(page.to_ndarray(), format="yuv420p")
        f.pts, f.time_base = n * 90000 // SHARE_FPS, fractions.Fraction(1, 90000)
        payloads, _ = enc.encode(f)
        data = b"".join(vp8_depayload(p) for p in payloads)
        sizes.append(len(data))
        for d in dec.decode(av.Packet(data)):
            out.append(psnr(luma(d.reformat(format="yuv420p")), ref))
    return out, sum(sizes) * 8 / 1000 / (frames / SHARE_FPS)


def fmt_list(v):
    return ", ".join(f"{x:.1f}" for x in v) if v else "-"


def median(v):
    return float(np.median(v)) if v else float("nan")


def report(res):
    tx, ty, tw, th = res["tile"]
    fx, fy, fw, fh = res["fit"]
    hint = res["hint"] or {}
    sw, sh = res["sent_size"]
    print(f"share tile on {TIER} ({res['canvas'][0]}x{res['canvas'][1]}): {tw}x{th} at ({tx},{ty}), "
          f"the largest: {res['biggest']}; the {sw}x{sh} share letterboxed to {fw}x{fh} at ({fx},{fy}); "
          f"there {res['in_big_tile_s']:.1f} s after the WHIP answer")
    print(f"share in: aiortc sent {res['sent_kbps']:.0f} kbit/s over the window (its encoder's target "
          f"{res['encoder_target_kbps']:.0f}, aiortc clamps it to 250..1500); REMB from the server "
          f"{fmt_list(res['remb_kbps'])} kbit/s; hint {hint.get('width')}x{hint.get('height')}@{hint.get('fps')} "
          f"max {(hint.get('max_bitrate_bps') or 0) / 1000:.0f} kbit/s; the server counts "
          f"{res['server_in_kbps']:.0f} kbit/s (last second), {res['server_in_fps']:.1f} fps")
    print(f"composite out: tier {res['tier_kbps_out']:.0f} kbit/s (last second), viewer received "
          f"{res['received_kbps']:.0f} kbit/s over the window; frames {res['sizes']}")
    if res["bars_luma"] is not None:
        print(f"letterbox bars: mean luma {res['bars_luma']:.1f}")
    print("PSNR (luma, dB) of the share's picture:")
    print(f"  {'reference':48} {'snapshot (before tier encode)':>30} {'received (median; frames)':>30}")
    for name, what in (("server", "the page through the server's scaler (libyuv)"),
                       ("area", "the page through swscale area (independent)")):
        snap = res.get(f"snapshot_{name}")
        snap = "-" if snap is None else f"{snap:.2f}"
        got = res[f"received_{name}"]
        print(f"  {what:48} {snap:>30} {median(got):>11.2f} ({fmt_list(got)})")
    if "tier_only" in res:
        print(f"  tier encode alone (received vs snapshot): median {median(res['tier_only']):.2f} "
              f"({fmt_list(res['tier_only'])})")
    print(f"  the server's scaler alone (no encode) vs swscale area: {res['scaler_vs_area']:.2f}")
    if "offline" in res:
        v, kbps, target = res["offline"]
        print(f"  the page through aiortc's VP8 alone at {target:.0f} kbit/s (sent {kbps:.0f}), full size: "
              f"frame 1 {v[0]:.2f}, frame {len(v)} {v[-1]:.2f}")


# ----------------------------------------------------------------------------- test


async def check(checks, server, settle=15.0):
    """The test in `make test`: the share fills the big tile of the default tier,
    letterboxed, and its text arrives at PSNR >= PSNR_FLOOR_DB against the page through the
    server's own scaler (measured once the newest frame is a few dB past the floor, or
    after `settle` seconds in the tile)."""
    page = make_page()
    res = await measure(Http(server.port), page, settle, samples=5, until_db=PSNR_FLOOR_DB + 5)
    report(res)
    tw, th = res["tile"][2:]
    cw, ch = res["canvas"]
    checks.ok(res["biggest"] and tw * th * 2 > cw * ch,
              "the share is in the big tile (over half the canvas)", f"{tw}x{th} of {cw}x{ch}")
    checks.ok(res["bars_luma"] is not None and res["bars_luma"] < 60,
              "the share is letterboxed (dark bars above and below the white page)",
              f"bars' mean luma {res['bars_luma']}")
    tone = res["tab_tone"]
    checks.ok(tone is not None and abs(tone[0] - TAB_TONE_HZ) <= 5 and tone[1] > -40 and tone[2] >= 0.5,
              f"the share's sound (a {TAB_TONE_HZ:.0f} Hz tone) is in the viewer's mix",
              f"last second: peak {tone[0]:.0f} Hz, {tone[1]:.1f} dBFS, {tone[2]:.0%} of the energy at "
              f"{TAB_TONE_HZ:.0f} Hz" if tone else "no full second of audio")
    value = median(res["received_server"])
    checks.ok(value >= PSNR_FLOOR_DB,
              f"share's text PSNR >= {PSNR_FLOOR_DB:.0f} dB against the page through the server's scaler",
              f"median {value:.2f} dB over {len(res['received_server'])} frames (goal 35; against "
              f"swscale area {median(res['received_area']):.2f})")


def share_server(binary):
    w.OUT.mkdir(parents=True, exist_ok=True)
    CONFIG_PATH.write_text(CONFIG)
    return Server(binary, config=CONFIG_PATH, log_name="share-server.log")


def run_test(binary):
    """Exit code of the share test (test_whip_whep.py's main runs it after its own)."""
    return w.run_checks("whip-share", share_server(binary), check, SHARE_TIMEOUT)


def setup_logging(verbose):
    sender_log = logging.getLogger("aiortc.rtcrtpsender")
    sender_log.setLevel(logging.DEBUG)
    sender_log.addHandler(REMB)
    if not verbose:
        sender_log.propagate = False
    # aioice never offers 127.0.0.1; this talks to a server on loopback only.
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]


def size(text):
    wd, _, ht = text.partition("x")
    wd, ht = int(wd), int(ht)
    if wd % 2 or ht % 2 or wd < 2 or ht < 2:
        raise argparse.ArgumentTypeError("an even width and height (yuv420p)")
    return wd, ht


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settle", type=float, default=10.0, help="seconds in the big tile before measuring")
    ap.add_argument("--samples", type=int, default=8, help="received frames to compare")
    ap.add_argument("--font-px", type=int, default=20, help="text size on the 1920x1080 page")
    ap.add_argument("--send-size", type=size, metavar="WxH",
                    help="publish the page scaled to this size (swscale area), as a sender following its hint")
    ap.add_argument("--offline", action="store_true",
                    help="also the page through aiortc's VP8 encoder alone, at the REMB the server sent")
    ap.add_argument("--test", action="store_true", help="run the test's checks instead")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    setup_logging(args.verbose)
    binary = Path(os.environ.get("TESSERA_BIN", w.ROOT / "target" / "debug" / "tessera"))
    if args.test:
        return run_test(binary)
    server = share_server(binary)
    try:
        server.start()
        page = make_page(font_px=args.font_px)
        sent, original = page, None
        if args.send_size:
            sent, original = page.reformat(width=args.send_size[0], height=args.send_size[1],
                                           format="yuv420p", interpolation="AREA"), page
        res = asyncio.run(measure(Http(server.port), sent, args.settle, args.samples, original))
    finally:
        server.stop()
    if args.offline:
        target = max(250.0, min(1500.0, res["remb_kbps"][-1] if res["remb_kbps"] else 500.0))
        v, kbps = offline_encode(sent, target, frames=int(SHARE_FPS * (args.settle + 3)))
        res["offline"] = (v, kbps, target)
    print(f"page: {PAGE} ({args.font_px} px DejaVu Sans), server {binary}, log {server.log_path}")
    report(res)
    print(f"share PSNR: {median(res['received_server']):.2f} dB against the page through the server's "
          f"scaler, {median(res['received_area']):.2f} dB against swscale area")
    return 0


if __name__ == "__main__":
    sys.exit(main())
