//! Recordings of a live room through the admin API, checked by decoding the files with
//! ffmpeg: duration, each publisher's colour in its tile and its tone in the mix at a point
//! in the middle; a recording whose disk fills up stops with an error while the room goes on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tessera_codec::VideoFrame;
use tessera_mixer::analysis::goertzel_power;
use tessera_server::client::Client;
use tessera_types::VideoCodec;

use crate::live::{distance, http, load_media, room_tiles, settle, start_server, tile_colour};
use crate::{fixtures, scratch, Fixture};

const ADMIN: &str = "admin-token-0123456789";

fn config(dir: &Path) -> String {
    format!(
        "[auth]\nadmin_token = \"{ADMIN}\"\n[recording]\ndir = \"{}\"\nkeyframe_interval_secs = 1\n",
        dir.display()
    )
}

async fn admin(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (st, body) = http(base, method, path, Some(ADMIN), body).await;
    (st, serde_json::from_slice(&body).unwrap_or_default())
}

/// An admin call on `room`'s recordings or streams: `rest` is `recordings`, `streams/r2`...
async fn egress(
    base: &str,
    method: &str,
    room: &str,
    rest: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    admin(
        base,
        method,
        &format!("/api/admin/rooms/{room}/{rest}"),
        body,
    )
    .await
}

/// The room's canvas size and tiles, once it has two.
async fn two_tiles(
    base: &str,
    room: &str,
) -> (
    u32,
    u32,
    std::collections::HashMap<String, tessera_codec::Rect>,
) {
    let (w, h, tiles) = settle(Duration::from_secs(30), || async {
        let t = room_tiles(base, room).await;
        (t.2.len() == 2, t)
    })
    .await;
    assert_eq!(tiles.len(), 2, "two tiles: {tiles:?}");
    (w, h, tiles)
}

/// Two publishers (VP8) in `room`, each showing its fixture colour and tone.
async fn two_publishers(base: &str, room: &str) -> (Vec<Client>, Vec<Fixture>) {
    let (_, list) = fixtures();
    let people: Vec<Fixture> = list[..2].to_vec();
    let mut clients = Vec::new();
    for fx in &people {
        let c = tokio::time::timeout(
            Duration::from_secs(20),
            Client::join(base, room, &fx.name, load_media(fx, VideoCodec::Vp8)),
        )
        .await
        .expect("join in time")
        .expect("join");
        clients.push(c);
    }
    (clients, people)
}

fn ffprobe(file: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            entries,
            "-of",
            "default=nw=1:nk=1",
        ])
        .arg(file)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn duration_of(file: &Path) -> Option<f64> {
    ffprobe(file, "format=duration").trim().parse().ok()
}

/// The picture at `at` seconds, decoded by ffmpeg.
fn frame_at(file: &Path, at: f64, w: u32, h: u32) -> VideoFrame {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at:.2}"), "-i"])
        .arg(file)
        .args([
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ])
        .output()
        .expect("run ffmpeg");
    let (cw, ch) = (w.div_ceil(2) as usize, h.div_ceil(2) as usize);
    let y = (w * h) as usize;
    assert_eq!(
        out.stdout.len(),
        y + 2 * cw * ch,
        "{}: no {w}x{h} frame at {at} s: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let b = &out.stdout;
    VideoFrame::from_planes(
        w,
        h,
        &b[..y],
        w as usize,
        &b[y..y + cw * ch],
        cw,
        &b[y + cw * ch..],
        cw,
    )
}

/// Two seconds of the mix around `at`, decoded by ffmpeg as 48 kHz mono.
fn audio_at(file: &Path, at: f64) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-ss",
            &format!("{:.2}", at - 1.0),
            "-t",
            "2",
            "-i",
        ])
        .arg(file)
        .args(["-vn", "-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("run ffmpeg");
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Checks a finished recording: its duration, and at its middle every publisher's colour
/// in its tile and its tone in the mix.
fn check_file(
    file: &Path,
    want_secs: f64,
    tiles: &[(tessera_codec::Rect, &Fixture)],
    (w, h): (u32, u32),
) {
    let streams = ffprobe(file, "stream=codec_name");
    let dur =
        duration_of(file).unwrap_or_else(|| panic!("{}: no duration ({streams})", file.display()));
    assert!(
        (dur - want_secs).abs() < 1.5,
        "{}: plays {dur:.2} s, the recording lasted {want_secs:.2} s",
        file.display()
    );
    // Both streams start together: ffmpeg zeroes each input, so audio written before the
    // first keyframe would put the video early.
    let starts: Vec<f64> = ffprobe(file, "stream=start_time")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    // (A stream pulled back joins mid-way: its video waits for the next keyframe.)
    let pulled = file.extension().is_some_and(|e| e == "flv");
    assert!(
        pulled || (starts.len() == 2 && (starts[0] - starts[1]).abs() < 0.05),
        "{}: stream start times {starts:?}",
        file.display()
    );
    let mid = dur / 2.0;
    let frame = frame_at(file, mid, w, h);
    for (rect, fx) in tiles {
        let got = tile_colour(&frame, *rect);
        assert!(
            distance(got, fx.rgb) < 60,
            "{}: {}'s tile at {mid:.1} s is {got:?}, want {:?}",
            file.display(),
            fx.name,
            fx.rgb
        );
    }
    let pcm = audio_at(file, mid);
    assert!(
        pcm.len() > 48_000,
        "{}: {} samples of audio",
        file.display(),
        pcm.len()
    );
    let floor = goertzel_power(&pcm, 2500.0, 48_000).max(1e-12);
    for (_, fx) in tiles {
        let p = goertzel_power(&pcm, fx.tone_hz, 48_000);
        assert!(
            p > floor * 100.0,
            "{}: {}'s {} Hz tone is not in the mix at {mid:.1} s ({p:e} vs floor {floor:e})",
            file.display(),
            fx.name,
            fx.tone_hz
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webm_and_mp4_recordings_decode_with_each_publishers_colour_and_tone() {
    let dir = scratch("recordings");
    // on_complete: run without a shell, the file's path last: copies each finished file.
    let done = dir.join("done");
    std::fs::create_dir_all(&done).unwrap();
    let base = start_server(&format!(
        "{}on_complete = [\"cp\", \"-t\", \"{}\"]\n",
        config(&dir),
        done.display()
    ))
    .await;
    let room = "rec-room";
    let (clients, people) = two_publishers(&base, room).await;
    let (w, h, tiles) = two_tiles(&base, room).await;

    let mut started = Vec::new();
    for (format, codecs) in [("webm", "vp8\nopus\n"), ("mp4", "h264\nopus\n")] {
        let body = format!(r#"{{"format":"{format}"}}"#);
        let (st, v) = egress(&base, "POST", room, "recordings", Some(&body)).await;
        assert_eq!(st, 201, "{format}: {v}");
        let id = v["id"].as_str().unwrap().to_string();
        let file = PathBuf::from(v["file"].as_str().unwrap());
        assert!(
            file.starts_with(&dir),
            "{format}: {} is outside recording.dir",
            file.display()
        );
        started.push((id, file, codecs));
    }
    // The room lists them (and not as participants); wait for 6 s of media in each.
    let room_json = settle(Duration::from_secs(30), || async {
        let (_, body) = http(&base, "GET", &format!("/api/rooms/{room}"), None, None).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let recs = v["recordings"].as_array().cloned().unwrap_or_default();
        let long = recs.len() == 2
            && recs.iter().all(|r| {
                r["state"] == "recording"
                    && r["duration_secs"].as_f64().unwrap_or(0.0) >= 6.0
                    && r["bytes"].as_u64().unwrap_or(0) > 0
            });
        (long, v)
    })
    .await;
    let recs = room_json["recordings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        recs.len() == 2
            && recs
                .iter()
                .all(|r| r["duration_secs"].as_f64().unwrap_or(0.0) >= 6.0),
        "{room_json}"
    );
    let names: Vec<&str> = room_json["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the recorders are not participants: {names:?}"
    );
    let (_, metrics) = http(&base, "GET", "/metrics", None, None).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("tessera_recordings_active 2"), "{metrics}");

    let mut reports = Vec::new();
    for (id, file, _) in &started {
        let (st, v) = egress(&base, "DELETE", room, &format!("recordings/{id}"), None).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["state"], "done", "{v}");
        assert_eq!(v["file"].as_str(), Some(file.to_str().unwrap()), "{v}");
        assert!(v["bytes"].as_u64().unwrap_or(0) > 10_000, "{v}");
        reports.push(v);
    }
    let rects: Vec<(tessera_codec::Rect, &Fixture)> = clients
        .iter()
        .zip(&people)
        .map(|(c, fx)| (tiles[&c.id], fx))
        .collect();
    for ((_, file, codecs), report) in started.iter().zip(&reports) {
        // on_complete runs once the file is reported complete: wait for its copy.
        let copy = done.join(file.file_name().unwrap());
        let want = std::fs::metadata(file).map(|m| m.len()).ok();
        let got = settle(Duration::from_secs(20), || async {
            let got = std::fs::metadata(&copy).map(|m| m.len()).ok();
            (got == want, got)
        })
        .await;
        assert_eq!(
            got,
            want,
            "on_complete did not copy {} to {}",
            file.display(),
            done.display()
        );
        assert_eq!(
            &ffprobe(file, "stream=codec_name"),
            codecs,
            "{}",
            file.display()
        );
        check_file(
            file,
            report["duration_secs"].as_f64().unwrap(),
            &rects,
            (w, h),
        );
    }
    let (st, _) = egress(&base, "DELETE", room, "recordings/r99", None).await;
    assert_eq!(st, 404);
    // Bad requests name what is wrong; a request never names a path.
    for (bad, why) in [
        (r#"{"format":"avi"}"#, "avi"),
        (r#"{"tier":"nope"}"#, "nope"),
        (r#"{"file":"/etc/x"}"#, "file"),
    ] {
        let (st, v) = egress(&base, "POST", room, "recordings", Some(bad)).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(why),
            "{bad}: {v}"
        );
    }
    // The room closing (everyone gone) finishes a recording too.
    let (st, v) = egress(
        &base,
        "POST",
        room,
        "recordings",
        Some(r#"{"format":"mkv"}"#),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (id, file) = (
        v["id"].as_str().unwrap().to_string(),
        PathBuf::from(v["file"].as_str().unwrap()),
    );
    settle(Duration::from_secs(20), || async {
        let (_, v) = egress(&base, "GET", room, "recordings", None).await;
        let secs = v
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == id.as_str()).cloned());
        (
            secs.is_some_and(|r| r["duration_secs"].as_f64().unwrap_or(0.0) >= 2.0),
            (),
        )
    })
    .await;
    for c in clients {
        c.leave().await;
    }
    let r = settle(Duration::from_secs(20), || async {
        let (_, v) = egress(&base, "GET", room, "recordings", None).await;
        let r = v
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == id.as_str()).cloned())
            .unwrap_or_default();
        (r["state"] == "done", r)
    })
    .await;
    assert_eq!(
        r["state"], "done",
        "the room closed but the recording did not finish: {r}"
    );
    assert!(
        duration_of(&file).is_some_and(|d| d >= 1.5),
        "{}",
        file.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_recording_with_an_error_and_the_room_goes_on() {
    let dir = scratch("recording-full-disk");
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=96k",
            "tessera-test",
            dir.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIP a_full_disk_stops_the_recording: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let base = start_server(&config(&dir)).await;
    let room = "full-room";
    let (clients, _) = two_publishers(&base, room).await;
    let (st, v) = egress(&base, "POST", room, "recordings", None).await;
    assert_eq!(st, 201, "{v}");
    let rec = settle(Duration::from_secs(60), || async {
        let (_, body) = http(&base, "GET", &format!("/api/rooms/{room}"), None, None).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let r = v["recordings"][0].clone();
        (r["state"] == "failed", r)
    })
    .await;
    assert_eq!(rec["state"], "failed", "{rec}");
    let error = rec["error"].as_str().unwrap_or("");
    assert!(
        error.contains("No space left on device"),
        "the error says why: {rec}"
    );
    // The room goes on: both publishers still in, and their composite still flowing.
    let before: Vec<usize> = clients
        .iter()
        .map(|c| c.received.lock().unwrap().video.len())
        .collect();
    settle(Duration::from_secs(20), || async {
        let more = clients
            .iter()
            .zip(&before)
            .all(|(c, b)| c.received.lock().unwrap().video.len() > b + 15);
        (more, ())
    })
    .await;
    for (c, b) in clients.iter().zip(&before) {
        assert!(
            c.received.lock().unwrap().video.len() > b + 15,
            "{}'s composite stopped",
            c.id
        );
    }
    let (_, metrics) = http(&base, "GET", "/metrics", None, None).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("tessera_recordings_failed_total 1"),
        "{metrics}"
    );
    for c in clients {
        c.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_by_sigkill_of_the_server_and_ffmpeg_still_plays_up_to_the_kill() {
    let dir = scratch("recording-sigkill");
    let cfg = dir.join("t.toml");
    let files = dir.join("files");
    std::fs::write(
        &cfg,
        format!(
            "[rooms]\ndefault_tier = \"t\"\n[tiers.t]\nwidth = 320\nheight = 180\nfps = 15\nbitrate_kbps = 300\ncodec = \"vp8\"\n{}",
            config(&files)
        ),
    )
    .unwrap();
    let (mut child, base, _log) = crate::security::spawn_serve(&cfg).await;
    let room = "kill-room";
    let (clients, _) = two_publishers(&base, room).await;
    let (st, v) = egress(
        &base,
        "POST",
        room,
        "recordings",
        Some(r#"{"format":"mkv"}"#),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let file = PathBuf::from(v["file"].as_str().unwrap());
    let recorded = settle(Duration::from_secs(30), || async {
        let (_, body) = http(&base, "GET", &format!("/api/rooms/{room}"), None, None).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let secs = v["recordings"][0]["duration_secs"].as_f64().unwrap_or(0.0);
        (secs >= 6.0, secs)
    })
    .await;
    assert!(recorded >= 6.0, "only {recorded} s recorded");
    // The harshest case: the server and its ffmpeg both killed at once (a power cut, the
    // OOM killer), so nothing finishes the file. Clusters of a second, each flushed as it
    // is written, still play up to a second or two before the kill.
    let ffmpeg = Command::new("pkill")
        .args(["-KILL", "-f"])
        .arg(file.to_str().unwrap())
        .status()
        .unwrap();
    child.kill().await.unwrap();
    assert!(
        ffmpeg.success(),
        "no ffmpeg writing {} to kill",
        file.display()
    );
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(
        last >= recorded - 2.0,
        "{}: video up to {last:.2} s of the {recorded:.2} s recorded before the kill",
        file.display()
    );
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for c in clients {
        c.leave().await;
    }
}

fn told_recording(c: &Client) -> Option<bool> {
    c.received
        .lock()
        .unwrap()
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            tessera_proto::ServerMessage::Recording { recording, .. } => Some(*recording),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_room_is_recorded_across_a_reconnect_into_one_file() {
    let dir = scratch("recording-declared");
    let base = start_server(&format!(
        "{}empty_close_secs = 3\n[rooms.declared.board]\nrecord = true\n",
        config(&dir)
    ))
    .await;
    let (_, list) = fixtures();
    let join = |fx: Fixture| {
        let base = base.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                Client::join(&base, "board", &fx.name, load_media(&fx, VideoCodec::Vp8)),
            )
            .await
            .expect("join in time")
            .expect("join")
        }
    };
    let recordings = || async {
        let (_, v) = egress(&base, "GET", "board", "recordings", None).await;
        v.as_array().cloned().unwrap_or_default()
    };
    let recorded = |at_least: f64| async move {
        settle(Duration::from_secs(30), || async {
            let r = recordings().await;
            let secs = r
                .first()
                .and_then(|r| r["duration_secs"].as_f64())
                .unwrap_or(0.0);
            (r.len() == 1 && secs >= at_least, r)
        })
        .await
    };

    // The first person in starts the recording, and is told.
    let ann = join(list[0].clone()).await;
    let r = recorded(4.0).await;
    assert!(r.len() == 1 && r[0]["state"] == "recording", "{r:?}");
    let (id, file) = (
        r[0]["id"].clone(),
        PathBuf::from(r[0]["file"].as_str().unwrap()),
    );
    settle(Duration::from_secs(10), || async {
        (told_recording(&ann) == Some(true), ())
    })
    .await;
    assert_eq!(
        told_recording(&ann),
        Some(true),
        "Ann was not told the room is recorded"
    );
    // Ann drops and Bo comes in within empty_close_secs: the same recording goes on.
    ann.leave().await;
    // The room thread closes when empty; the recording waits for the next one.
    let gone = settle(Duration::from_secs(10), || async {
        let (st, _) = http(&base, "GET", "/api/rooms/board", None, None).await;
        (st == 404, st)
    })
    .await;
    assert_eq!(gone, 404, "the empty room did not close");
    let bo = join(list[1].clone()).await;
    let r = recorded(8.0).await;
    assert!(
        r.len() == 1 && r[0]["id"] == id && r[0]["state"] == "recording",
        "one recording across the reconnect: {r:?}"
    );
    let total = r[0]["duration_secs"].as_f64().unwrap();
    bo.leave().await;
    // Empty for empty_close_secs: the file is finished.
    let r = settle(Duration::from_secs(20), || async {
        let r = recordings().await;
        (r.first().is_some_and(|r| r["state"] == "done"), r)
    })
    .await;
    assert_eq!(r[0]["state"], "done", "{r:?}");
    let dur = duration_of(&file).expect("a finished file has a duration");
    assert!(
        (dur - total).abs() < 2.0,
        "plays {dur:.2} s, recorded {total:.2} s and more"
    );
    // Ann's colour in the first part, Bo's in the second: one file, both stretches.
    let full = tessera_codec::Rect {
        x: 0,
        y: 0,
        w: 640,
        h: 360,
    };
    for (at, fx) in [(1.5, &list[0]), (dur - 1.5, &list[1])] {
        let got = tile_colour(&frame_at(&file, at, 640, 360), full);
        assert!(
            distance(got, fx.rgb) < 60,
            "at {at:.1} s the picture is {got:?}, want {}'s {:?}",
            fx.name,
            fx.rgb
        );
    }
}

/// A private nginx with the RTMP module on 127.0.0.1:`port` (killed when dropped), or
/// `None` (with the reason) where nginx or the module is missing.
fn rtmp_server(dir: &Path, port: u16) -> Result<std::process::Child, String> {
    let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
    if !Path::new(module).exists() {
        return Err(format!(
            "{module} is missing (make setup-test installs libnginx-mod-rtmp)"
        ));
    }
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {module};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; }} }} }}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run nginx: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pulls `secs` of the stream back from the RTMP server into `file` (stream copy).
fn pull(url: &str, file: &Path, secs: u32) -> bool {
    Command::new("timeout")
        .args([
            "30",
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            url,
            "-t",
            &secs.to_string(),
            "-c",
            "copy",
        ])
        .arg(file)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && duration_of(file).is_some_and(|d| d >= secs as f64 - 1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reaches_a_real_rtmp_server_survives_its_restart_and_never_logs_the_key() {
    let dir = scratch("stream-rtmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nginx = match rtmp_server(&dir.join("nginx"), port) {
        Ok(c) => Killed(c),
        Err(why) => {
            eprintln!("SKIP a_stream_reaches_a_real_rtmp_server: {why}");
            return;
        }
    };
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "[rooms]\ndefault_tier = \"t\"\n[tiers.t]\nwidth = 640\nheight = 360\nfps = 15\nbitrate_kbps = 600\ncodec = \"vp8\"\n{}",
            config(&dir.join("files"))
        ),
    )
    .unwrap();
    let (mut child, base, log) = crate::security::spawn_serve(&cfg).await;
    let room = "live-room";
    let (clients, people) = two_publishers(&base, room).await;
    let key = "stream-key-7f3a9c";
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
    let body = format!(r#"{{"url":"{url}"}}"#);
    let (st, v) = egress(&base, "POST", room, "streams", Some(&body)).await;
    assert_eq!(st, 201, "{v}");
    assert!(!v.to_string().contains(key), "the key is not echoed: {v}");
    let id = v["id"].as_str().unwrap().to_string();
    for (bad, why) in [
        (r#"{"url":"http://example.org/live/x"}"#, "rtmp://"),
        (r#"{"url":"rtmp://host-only"}"#, "rtmp://host"),
        (r#"{"tier":"t"}"#, "url"),
    ] {
        let (st, v) = egress(&base, "POST", room, "streams", Some(bad)).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(why),
            "{bad}: {v}"
        );
    }

    // Pulled back from the RTMP server: H.264 and AAC, both publishers in their tiles and
    // their tones in the mix.
    let (w, h, tiles) = two_tiles(&base, room).await;
    let pulled = dir.join("pulled.flv");
    assert!(
        pull(&url, &pulled, 4),
        "could not pull 4 s of the stream back"
    );
    assert_eq!(ffprobe(&pulled, "stream=codec_name"), "h264\naac\n");
    let rects: Vec<(tessera_codec::Rect, &Fixture)> = clients
        .iter()
        .zip(&people)
        .map(|(c, fx)| (tiles[&c.id], fx))
        .collect();
    check_file(&pulled, duration_of(&pulled).unwrap(), &rects, (w, h));

    // The RTMP server restarts: the stream says so, then reconnects by itself.
    drop(nginx);
    let r = settle(Duration::from_secs(30), || async {
        let (_, v) = egress(&base, "GET", room, "streams", None).await;
        let r = v[0].clone();
        (r["state"] == "reconnecting" && r["error"].is_string(), r)
    })
    .await;
    assert_eq!(r["state"], "reconnecting", "{r}");
    let _nginx = Killed(rtmp_server(&dir.join("nginx"), port).unwrap());
    let r = settle(Duration::from_secs(60), || async {
        let (_, v) = egress(&base, "GET", room, "streams", None).await;
        let r = v[0].clone();
        (
            r["state"] == "streaming" && r["reconnects"].as_u64().unwrap_or(0) >= 1,
            r,
        )
    })
    .await;
    assert_eq!(r["state"], "streaming", "{r}");
    assert!(!r.to_string().contains(key), "{r}");
    let again = dir.join("again.flv");
    assert!(
        pull(&url, &again, 3),
        "no stream after the RTMP server came back"
    );
    let (_, metrics) = http(&base, "GET", "/metrics", None, None).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("tessera_streams_active 1"), "{metrics}");

    let (st, v) = egress(&base, "DELETE", room, &format!("streams/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "done", "{v}");
    for c in clients {
        c.leave().await;
    }
    child.kill().await.unwrap();
    let log = log.await.unwrap();
    assert!(
        log.contains("live/***"),
        "the stream is logged, redacted: {log}"
    );
    assert!(!log.contains(key), "the stream key reached the log");
}
