//! Recordings and live streams (RTMP) of a room's composite and full audio mix.
//!
//! A recording is one more receiver of a tier: a room member of kind `recorder` that gets
//! the tier's encoded frames (in the codec variant its format needs: a variant that already
//! has receivers costs no extra encode) and the full mix's Opus packets, like a WHEP viewer
//! with no network. A writer thread hands them, without re-encoding, to an ffmpeg child
//! process that muxes the file: the video as IVF on its stdin, the audio as Ogg Opus on
//! fd 3 (both written by `tessera-container`). ffmpeg writes clusters (webm, mkv) or
//! fragments (mp4) of about a second and flushes each; if the server dies, ffmpeg sees its
//! inputs end and finishes the file itself.
//!
//! A stream is the same with ffmpeg sending FLV (H.264 copied, the mix transcoded to AAC)
//! to an RTMP(S) URL; when the connection breaks, a new ffmpeg takes over after a backoff
//! while the room goes on. Stream keys (the URL's path after the application) are never
//! logged or shown: the API and logs show `rtmp://host/app/***`.
//!
//! Timing: the tier's 90 kHz pts and the mix's 48 kHz pts both count from the room's start.
//! ffmpeg starts each input at zero, so an output begins at a keyframe with the audio from
//! that instant; a gap in the audio (none is expected) is filled with Opus silence so the
//! two stay in step. A stream's new ffmpeg (after a reconnect) starts a new timeline.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tessera_container::{IvfWriter, OggOpusWriter, DEFAULT_PRE_SKIP, VP8_FOURCC};
use tessera_engine::{JoinOptions, TierId};
use tessera_types::{ParticipantId, VideoCodec};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::media::{MediaTx, PeerKey};
use crate::room::{Command, JoinRequest, MediaOut, MemberKind, RoomHandle, Sink, TierCaps};
use crate::Server;

/// 20 ms of CELT silence (TOC 0xf8: fullband, 20 ms, mono, one frame).
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
const AUDIO_STEP: u64 = 960;
/// Frames and packets waiting for the writer; more is a stalled ffmpeg, and the room drops
/// them (a lost frame holds the recorder until the tier's next keyframe).
const QUEUE: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Webm,
    Mp4,
    Mkv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "webm" => Some(Format::Webm),
            "mp4" => Some(Format::Mp4),
            "mkv" => Some(Format::Mkv),
            _ => None,
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Format::Webm => "webm",
            Format::Mp4 => "mp4",
            Format::Mkv => "mkv",
        }
    }

    /// The codecs the format takes, in order of preference.
    fn codecs(self) -> &'static [&'static str] {
        match self {
            Format::Webm => &["VP8"],
            Format::Mp4 => &["H264"],
            Format::Mkv => &["VP8", "H264"],
        }
    }

    /// ffmpeg's output options: a cluster or fragment about every second, each flushed.
    fn muxer_args(self) -> &'static [&'static str] {
        match self {
            Format::Webm => &["-f", "webm", "-cluster_time_limit", "1000"],
            Format::Mkv => &["-f", "matroska", "-cluster_time_limit", "1000"],
            Format::Mp4 => &[
                "-f",
                "mp4",
                "-movflags",
                "+frag_keyframe+empty_moov+delay_moov+default_base_moof",
                "-frag_duration",
                "1000000",
            ],
        }
    }
}

/// Where the composite goes.
#[derive(Clone, Debug)]
pub enum Target {
    File { path: PathBuf, format: Format },
    Rtmp { url: String },
}

impl Target {
    fn codecs(&self) -> &'static [&'static str] {
        match self {
            Target::File { format, .. } => format.codecs(),
            // FLV: H.264 (and AAC), what RTMP servers and platforms take.
            Target::Rtmp { .. } => &["H264"],
        }
    }

    fn kind(&self) -> MemberKind {
        match self {
            Target::File { .. } => MemberKind::Recorder,
            Target::Rtmp { .. } => MemberKind::Stream,
        }
    }

    /// ffmpeg's output: the codec options, the muxer and its options, and where.
    fn output_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(Into::into));
        match self {
            Target::File { path, format } => {
                push(&["-c", "copy"]);
                push(format.muxer_args());
                push(&["-flush_packets", "1"]);
                a.push(path.into());
            }
            Target::Rtmp { url } => {
                push(&[
                    "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
                ]);
                push(&["-f", "flv", "-flvflags", "no_duration_filesize"]);
                push(&["-rw_timeout", "10000000"]);
                a.push(url.into());
            }
        }
        a
    }

    /// What logs and the API may show: the file, or the URL without its stream key.
    fn shown(&self) -> String {
        match self {
            Target::File { path, .. } => path.display().to_string(),
            Target::Rtmp { url } => redact(url),
        }
    }

    /// `text` (ffmpeg's messages) with the stream key taken out.
    fn scrub(&self, text: &str) -> String {
        match self {
            Target::File { .. } => text.to_string(),
            Target::Rtmp { url } => {
                let mut t = text.replace(url.as_str(), &redact(url));
                if let Some(key) = stream_key(url).filter(|k| k.len() >= 3) {
                    t = t.replace(key, "***");
                }
                t
            }
        }
    }
}

/// `rtmp://host/app/***`: the URL without credentials, stream key or query.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next().unwrap_or("");
    let app = path
        .split('/')
        .next()
        .filter(|a| !a.is_empty() && path.contains('/'));
    match app {
        Some(app) => format!("{scheme}://{host}/{app}/***"),
        None => format!("{scheme}://{host}/***"),
    }
}

/// The part of an RTMP URL that is secret: everything after the application.
fn stream_key(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    match path.split_once('/') {
        Some((_, key)) => Some(key),
        None => Some(path),
    }
}

/// Checks a stream URL from a request: `rtmp://` or `rtmps://`, a host, an application and
/// a key, no spaces or control characters.
pub fn check_stream_url(url: &str) -> Result<(), String> {
    let ok_scheme = url.starts_with("rtmp://") || url.starts_with("rtmps://");
    let rest = url.split_once("://").map_or("", |r| r.1);
    let host = rest.split('/').next().unwrap_or("");
    if !ok_scheme {
        return Err(format!(
            "url must start with rtmp:// or rtmps:// (got {})",
            redact(url)
        ));
    }
    if host.is_empty() || !rest.contains('/') || stream_key(url).is_none_or(str::is_empty) {
        return Err("url must be rtmp://host[:port]/app/key".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.len() > 2048 {
        return Err("url has spaces or control characters, or is too long".into());
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Writing a file.
    Recording,
    /// Sending to the RTMP server.
    Streaming,
    /// The stream broke; a new connection is tried after a backoff.
    Reconnecting,
    Finishing,
    Done,
    Failed,
}

/// What the API says about a recording or stream.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub id: String,
    pub room: String,
    /// A recording's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// A stream's URL, without its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub tier: String,
    pub state: State,
    /// Bytes in the file, or sent to ffmpeg for the stream.
    pub bytes: u64,
    pub duration_secs: f64,
    /// A stream's reconnections so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_unix: u64,
}

struct Shared {
    state: State,
    error: Option<String>,
    duration_secs: f64,
    bytes: u64,
    reconnects: u64,
    /// A frame was written (a recording without one is no file).
    wrote_video: bool,
}

/// One stretch of a recording in one room thread: the recorder's place in it and its queue.
struct Segment {
    rx: mpsc::Receiver<(PeerKey, MediaOut)>,
}

pub struct Recording {
    pub id: String,
    pub room: String,
    pub target: Target,
    /// The tier it receives, in the codec its format needs.
    tier: TierId,
    /// Follows the room across reconnects (a declared room with `record = true`).
    durable: bool,
    /// The room thread it records now, and its member id there.
    current: Mutex<Option<(RoomHandle, ParticipantId)>>,
    /// Where a new room thread's segment goes; `None` once stopping.
    segments: Mutex<Option<std::sync::mpsc::Sender<Segment>>>,
    started_unix: u64,
    shared: Arc<Mutex<Shared>>,
    finished: watch::Receiver<bool>,
}

impl Recording {
    pub fn report(&self) -> Report {
        // The file's size is read before taking the lock the writer takes on every packet.
        let file_bytes = match &self.target {
            Target::File { path, .. } => std::fs::metadata(path).map(|m| m.len()).ok(),
            Target::Rtmp { .. } => None,
        };
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let (file, format, url, bytes, reconnects) = match &self.target {
            Target::File { path, format } => (
                Some(path.display().to_string()),
                Some(*format),
                None,
                file_bytes.unwrap_or(0),
                None,
            ),
            Target::Rtmp { url } => (None, None, Some(redact(url)), s.bytes, Some(s.reconnects)),
        };
        Report {
            id: self.id.clone(),
            room: self.room.clone(),
            file,
            format,
            url,
            tier: self.tier.to_string(),
            state: s.state.clone(),
            bytes,
            duration_secs: s.duration_secs,
            reconnects,
            error: s.error.clone(),
            started_unix: self.started_unix,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.target, Target::Rtmp { .. })
    }

    fn active(&self) -> bool {
        matches!(
            self.shared.lock().unwrap_or_else(|e| e.into_inner()).state,
            State::Recording | State::Streaming | State::Reconnecting | State::Finishing
        )
    }

    /// Joins `handle`'s room as the recorder and hands the writer the new segment.
    fn attach(&self, server: &Server, handle: RoomHandle) -> bool {
        let (media, rx) = MediaTx::channel(QUEUE);
        let (events, _) = mpsc::unbounded_channel();
        let member = server.new_id();
        let joined = handle.send(Command::Join(Box::new(JoinRequest {
            id: member,
            name: format!("Egress {}", self.id),
            kind: self.target.kind(),
            owner: None,
            options: JoinOptions {
                sends_video: false,
                sends_audio: false,
                receive_tier: Some(self.tier.clone()),
                receives_audio: true,
            },
            codec_out: Some(self.tier.codec),
            bandwidth: None,
            caps: TierCaps::default(),
            sink: Sink { media, events },
        })));
        // Under the segments lock, so that `stop` (which takes the sender first) always
        // finds the member it must take out.
        let segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        let sent = joined
            && segments
                .as_ref()
                .is_some_and(|tx| tx.send(Segment { rx }).is_ok());
        if sent {
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((handle, member));
        } else if joined {
            handle.send(Command::Leave { id: member });
        }
        sent
    }

    /// Takes the recorder out of the room it records now.
    fn leave(&self) {
        if let Some((h, id)) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.send(Command::Leave { id });
        }
    }

    /// Stops the recording and waits (up to `timeout`) for the file.
    pub async fn stop(&self, timeout: Duration) -> Report {
        self.segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.leave();
        let mut rx = self.finished.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
        self.report()
    }
}

/// Every recording this server runs, and the ones that finished lately.
#[derive(Default)]
pub struct Recordings {
    next: AtomicU64,
    list: Mutex<Vec<Arc<Recording>>>,
    pub started: AtomicU64,
    pub failed: AtomicU64,
    pub reconnects: AtomicU64,
}

#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Recordings (files) running, started and failed (streams included), bytes written.
    pub active: u64,
    pub started: u64,
    pub failed: u64,
    pub bytes: u64,
    pub streams_active: u64,
    pub stream_reconnects: u64,
}

/// Finished recordings kept for the API.
const KEEP_FINISHED: usize = 50;

/// Why a recording or stream could not start (each kind is an HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The request is wrong: format, tier or URL (400).
    #[error("{0}")]
    BadRequest(String),
    /// The room is gone (404).
    #[error("{0}")]
    RoomGone(String),
    /// The server failed: the directory, the file, ffmpeg, a thread (500).
    #[error("{0}")]
    Internal(String),
    /// The server is shutting down (503).
    #[error("{0}")]
    ShuttingDown(String),
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::BadRequest(_) => 400,
            Refused::RoomGone(_) => 404,
            Refused::Internal(_) => 500,
            Refused::ShuttingDown(_) => 503,
        }
    }
}

impl Recordings {
    /// The room's recordings (`streams` false) or streams (true).
    pub fn in_room(&self, room: &str, streams: bool) -> Vec<Report> {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.room == room && r.is_stream() == streams)
            .map(|r| r.report())
            .collect()
    }

    pub fn get(&self, room: &str, id: &str, streams: bool) -> Option<Arc<Recording>> {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.room == room && r.id == id && r.is_stream() == streams)
            .cloned()
    }

    /// For `/metrics`.
    pub fn counts(&self) -> Counts {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let active: Vec<Report> = list
            .iter()
            .filter(|r| r.active())
            .map(|r| r.report())
            .collect();
        let (streams, files): (Vec<&Report>, Vec<&Report>) =
            active.iter().partition(|r| r.url.is_some());
        Counts {
            active: files.len() as u64,
            started: self.started.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes: files.iter().map(|r| r.bytes).sum(),
            streams_active: streams.len() as u64,
            stream_reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Stops every recording and waits for the files (shutdown).
    pub async fn stop_all(&self, timeout: Duration) {
        let list: Vec<Arc<Recording>> = self
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.active())
            .cloned()
            .collect();
        let stops = list.iter().map(|r| r.stop(timeout));
        futures_util::future::join_all(stops).await;
    }

    fn add(&self, r: Arc<Recording>) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.push(r);
        while list.len() > KEEP_FINISHED {
            match list.iter().position(|r| !r.active()) {
                Some(i) => {
                    list.remove(i);
                }
                None => break,
            }
        }
    }
}

/// Starts recording `room` (which must be running here) in `format` from `tier`
/// (`None`: `recording.tier`, else the room's default tier). A `durable` recording outlives
/// the room thread: the room's next thread within `recording.empty_close_secs` continues it
/// ([`room_started`]).
pub fn start(
    server: &Arc<Server>,
    room: &str,
    handle: RoomHandle,
    format: Option<&str>,
    tier: Option<&str>,
    durable: bool,
) -> Result<Arc<Recording>, Refused> {
    let cfg = server.config();
    let rc = &cfg.recording;
    let format_name = format.unwrap_or(&rc.format);
    let format = Format::parse(format_name).ok_or_else(|| {
        Refused::BadRequest(format!(
            "format {format_name:?}: must be \"webm\", \"mp4\" or \"mkv\""
        ))
    })?;
    let dir = Path::new(&rc.dir);
    std::fs::create_dir_all(dir).map_err(|e| {
        Refused::Internal(format!(
            "recording.dir = {:?}: cannot create it: {e}",
            rc.dir
        ))
    })?;
    let id = server.recordings.new_id();
    let now = unix_now();
    let safe: String = room
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{safe}-{}-{id}.{}", utc_stamp(now), format.ext()));
    // The file is created here, so that an unwritable directory is a clear refusal.
    std::fs::File::create(&path).map_err(|e| {
        Refused::Internal(format!(
            "cannot create {}: {e} (recording.dir)",
            path.display()
        ))
    })?;
    let target = Target::File {
        path: path.clone(),
        format,
    };
    start_egress(server, room, handle, id, target, tier, durable).inspect_err(|_| {
        let _ = std::fs::remove_file(&path);
    })
}

/// Starts streaming `room` to `url` (RTMP or RTMPS) from `tier`'s H.264 variant.
pub fn start_stream(
    server: &Arc<Server>,
    room: &str,
    handle: RoomHandle,
    url: &str,
    tier: Option<&str>,
) -> Result<Arc<Recording>, Refused> {
    check_stream_url(url).map_err(Refused::BadRequest)?;
    let id = server.recordings.new_id();
    let target = Target::Rtmp {
        url: url.to_string(),
    };
    start_egress(server, room, handle, id, target, tier, false)
}

impl Recordings {
    fn new_id(&self) -> String {
        format!("r{}", self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What an ffmpeg child is fed through, and the child.
struct Output {
    child: Child,
    /// The thread reading ffmpeg's messages; it ends with the last lines.
    stderr: Option<std::thread::JoinHandle<String>>,
    video: IvfWriter<ChildStdin>,
    audio: OggOpusWriter<std::io::PipeWriter>,
}

/// How to start an ffmpeg for a target (again, after a stream broke).
struct Spawner {
    ffmpeg: String,
    target: Target,
    codec: VideoCodec,
    width: u16,
    height: u16,
}

impl Spawner {
    fn spawn(&self) -> Result<Output, String> {
        let (audio_read, audio_write) =
            std::io::pipe().map_err(|e| format!("cannot make a pipe for ffmpeg: {e}"))?;
        let audio_fd = audio_read.as_raw_fd();
        let mut cmd = Process::new(&self.ffmpeg);
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostats", "-y"])
            .args(["-thread_queue_size", "1024", "-f", "ivf"])
            .args(["-probesize", "32", "-analyzeduration", "0", "-i", "pipe:0"])
            .args(["-thread_queue_size", "1024", "-f", "ogg"])
            .args([
                "-probesize",
                "4096",
                "-analyzeduration",
                "0",
                "-i",
                "pipe:3",
            ])
            .args(["-map", "0:v:0", "-map", "1:a:0"])
            .args(self.target.output_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the server's terminal must not cut the
            // file; ffmpeg finishes it when its inputs end.
            .process_group(0);
        // SAFETY: between fork and exec only async-signal-safe calls: dup2 puts the audio
        // pipe's read end on fd 3 without close-on-exec (unlike the original); if it already
        // is fd 3, dup2 does nothing, so the flag is cleared by hand.
        unsafe {
            cmd.pre_exec(move || {
                let r = if audio_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(audio_fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {:?} (recording.ffmpeg): {e}", self.ffmpeg))?;
        drop(audio_read);
        // ffmpeg's messages are read as they come (a full pipe would stall it); the last
        // lines are kept for the reason it failed.
        let stderr = child.stderr.take().map(|e| {
            std::thread::spawn(move || {
                let mut last = std::collections::VecDeque::new();
                for line in
                    std::io::BufRead::lines(std::io::BufReader::new(e)).map_while(Result::ok)
                {
                    if last.len() == 5 {
                        last.pop_front();
                    }
                    last.push_back(line);
                }
                last.into_iter().collect::<Vec<_>>().join("; ")
            })
        });
        let stdin = child.stdin.take().expect("stdin is piped");
        let fourcc = match self.codec {
            VideoCodec::Vp8 => VP8_FOURCC,
            VideoCodec::H264 => *b"H264",
        };
        let io = |e: tessera_container::Error| e.to_string();
        let writers = IvfWriter::with_fourcc(stdin, fourcc, self.width, self.height, 1, 90_000)
            .and_then(|v| {
                let a = OggOpusWriter::new(audio_write, 1, DEFAULT_PRE_SKIP)?;
                Ok((v, a.with_packets_per_page(10)))
            });
        match writers {
            Ok((video, audio)) => Ok(Output {
                child,
                stderr,
                video,
                audio,
            }),
            Err(e) => {
                // ffmpeg is gone already: reap it rather than leave a zombie.
                let _ = child.kill();
                let _ = child.wait();
                Err(io(e))
            }
        }
    }
}

/// Waits for an ffmpeg whose inputs have ended: `Err` with its reason if it failed.
fn reap(
    mut child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    target: &Target,
) -> Result<(), String> {
    let status = child.wait();
    let last = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    let detail = target.scrub(last.trim());
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) if detail.is_empty() => Err(format!("ffmpeg exited with {s}")),
        Ok(s) => Err(format!("ffmpeg exited with {s}: {detail}")),
        Err(e) => Err(format!("ffmpeg: {e}")),
    }
}

fn start_egress(
    server: &Arc<Server>,
    room: &str,
    handle: RoomHandle,
    id: String,
    target: Target,
    tier: Option<&str>,
    durable: bool,
) -> Result<Arc<Recording>, Refused> {
    let cfg = server.config();
    let rc = &cfg.recording;
    let tier = tier.or((!rc.tier.is_empty()).then_some(rc.tier.as_str()));
    let codecs: Vec<String> = target.codecs().iter().map(|c| c.to_string()).collect();
    let (tier_id, _) = server.pick_tier(room, tier, &codecs).map_err(|e| match e {
        crate::JoinError::BadRequest(r) | crate::JoinError::Full(r) => Refused::BadRequest(r),
        crate::JoinError::Internal(r) => Refused::Internal(r),
        crate::JoinError::Shutdown => Refused::ShuttingDown("the server is shutting down".into()),
    })?;
    let (width, height) = cfg
        .tiers
        .get(&*tier_id.name)
        .map(|t| (t.width as u16, t.height as u16))
        .unwrap_or((0, 0));
    let spawner = Spawner {
        ffmpeg: rc.ffmpeg.clone(),
        target: target.clone(),
        codec: tier_id.codec,
        width,
        height,
    };
    let first = spawner.spawn().map_err(Refused::Internal)?;
    let state = match target {
        Target::File { .. } => State::Recording,
        Target::Rtmp { .. } => State::Streaming,
    };
    let shared = Arc::new(Mutex::new(Shared {
        state,
        error: None,
        duration_secs: 0.0,
        bytes: 0,
        reconnects: 0,
        wrote_video: false,
    }));
    let (done_tx, finished) = watch::channel(false);
    let (segments_tx, segments) = std::sync::mpsc::channel();
    let shown = target.shown();
    let rec = Arc::new(Recording {
        id: id.clone(),
        room: room.to_string(),
        target,
        tier: tier_id.clone(),
        durable,
        current: Mutex::new(None),
        segments: Mutex::new(Some(segments_tx)),
        started_unix: unix_now(),
        shared: shared.clone(),
        finished,
    });
    if !rec.attach(server, handle) {
        let mut child = first.child;
        let _ = child.kill();
        let _ = child.wait();
        return Err(Refused::RoomGone(format!("room {room:?} has closed")));
    }
    server.recordings.add(rec.clone());
    server.recordings.started.fetch_add(1, Ordering::Relaxed);
    info!(room, id = %id, to = %shown, tier = %tier_id, codec = %tier_id.codec, "egress started");
    let wait = if durable {
        Duration::from_secs(rc.empty_close_secs as u64)
    } else {
        Duration::ZERO
    };
    let on_complete = rc.on_complete.clone();
    let server = server.clone();
    let thread_rec = rec.clone();
    std::thread::Builder::new()
        .name(format!("egress-{id}"))
        .spawn(move || {
            let rec = thread_rec;
            let writer = Writer {
                spawner,
                shared: &shared,
                reconnects: &server.recordings.reconnects,
                segments_tx: &rec.segments,
            };
            let result = writer.run(first, segments, wait);
            // No more segments: a room that comes back now starts a new recording.
            rec.segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let wrote = shared.lock().unwrap_or_else(|e| e.into_inner()).wrote_video;
            let result = match (&rec.target, result) {
                // Stopped (or the room gone) before the first keyframe: no file to keep.
                (Target::File { path, .. }, Ok(())) if !wrote => {
                    let _ = std::fs::remove_file(path);
                    Err("nothing was recorded: it ended before the tier's first keyframe".into())
                }
                (_, r) => r,
            };
            let ok = finish(result, &shared, &rec.target);
            if !ok {
                server.recordings.failed.fetch_add(1, Ordering::Relaxed);
            }
            // The room goes on without it (after a failure it may still be in there).
            rec.leave();
            info!(room = %rec.room, id = %rec.id, failed = !ok, "egress finished");
            let _ = done_tx.send(true);
            // After the file is reported complete: an upload must not hold up a DELETE or
            // the server's shutdown.
            if ok {
                on_complete_run(&rec.target, &on_complete);
            }
        })
        .map_err(|e| Refused::Internal(format!("cannot start a writer thread: {e}")))?;
    Ok(rec)
}

/// A room thread just started: a declared room with `record = true` is recorded, continuing
/// its recording from before if the room was empty for less than
/// `recording.empty_close_secs`.
pub fn room_started(server: &Arc<Server>, room: &str, handle: RoomHandle) {
    let cfg = server.config();
    if !cfg.rooms.declared.get(room).is_some_and(|d| d.record) {
        return;
    }
    // Files and a fork: not on the async thread that handles the join.
    let (server, room) = (server.clone(), room.to_string());
    std::thread::spawn(move || record_declared(&server, &room, handle));
}

fn record_declared(server: &Arc<Server>, room: &str, handle: RoomHandle) {
    let parked = server
        .recordings
        .list
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|r| r.room == room && r.durable && r.active())
        .cloned();
    if let Some(r) = parked {
        if r.attach(server, handle.clone()) {
            info!(room, recording = %r.id, "recording continues in the room's new thread");
            return;
        }
    }
    if let Err(why) = start(server, room, handle, None, None, true) {
        error!(
            room,
            "cannot record the declared room (record = true): {why}"
        );
    }
}

/// Backoff before a stream's next try: 1, 2, 4 ... 30 s.
fn backoff(failures: u64) -> Duration {
    Duration::from_secs((1u64 << failures.min(5)).min(30))
}

/// A new ffmpeg of a stream counts as connected once it has taken our media this long.
const STREAM_UP: Duration = Duration::from_secs(10);

struct Writer<'a> {
    spawner: Spawner,
    shared: &'a Mutex<Shared>,
    reconnects: &'a AtomicU64,
    /// The recording's segment sender: taken when the writer decides to finish, so a room
    /// that comes back after that starts a new recording.
    segments_tx: &'a Mutex<Option<std::sync::mpsc::Sender<Segment>>>,
}

impl Writer<'_> {
    /// Writes each segment the room threads send until the last one ends and no other
    /// comes within `wait`. A file's ffmpeg failing ends it (`Err`); a stream's is replaced
    /// after a backoff. Returns how the last ffmpeg ended.
    fn run(
        self,
        first: Output,
        segments: std::sync::mpsc::Receiver<Segment>,
        wait: Duration,
    ) -> Result<(), String> {
        let stream = matches!(self.spawner.target, Target::Rtmp { .. });
        let mut out = Some(first);
        let mut t = Timeline::default();
        // What earlier ffmpegs of a stream carried, for the reported duration.
        let mut done_90k = 0u64;
        let mut first_segment = true;
        // A stream's failed tries in a row, when it last started an ffmpeg, and whether
        // that one is a reconnection not yet counted as up.
        let mut failures = 0u64;
        let mut up_since = std::time::Instant::now();
        let mut reconnecting = false;
        let mut retry_at: Option<std::time::Instant> = None;
        loop {
            let next = if first_segment {
                segments.recv().ok()
            } else {
                match segments.recv_timeout(wait) {
                    Ok(s) => Some(s),
                    Err(_) => {
                        // Finishing: no more segments from now on, but one that came in
                        // just before is still taken.
                        self.segments_tx
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take();
                        segments.try_recv().ok()
                    }
                }
            };
            let Some(Segment { mut rx }) = next else {
                break;
            };
            first_segment = false;
            t.new_segment();
            loop {
                let m = match retry_at {
                    // A broken stream: take what comes (and drop it) until the next try.
                    Some(at) => {
                        let now = std::time::Instant::now();
                        if now >= at {
                            retry_at = None;
                            match self.spawner.spawn() {
                                Ok(o) => {
                                    out = Some(o);
                                    done_90k += t.end_90k;
                                    t = Timeline::default();
                                    t.new_segment();
                                    up_since = now;
                                }
                                Err(e) => {
                                    failures += 1;
                                    retry_at = Some(now + backoff(failures));
                                    self.set_state(State::Reconnecting, Some(e));
                                }
                            }
                            continue;
                        }
                        match rx.try_recv() {
                            Ok(m) => m,
                            Err(mpsc::error::TryRecvError::Empty) => {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            Err(mpsc::error::TryRecvError::Disconnected) => break,
                        }
                    }
                    None => match rx.blocking_recv() {
                        Some(m) => m,
                        None => break,
                    },
                };
                let Some(o) = out.as_mut() else {
                    continue;
                };
                match self.write(o, &mut t, m.1, done_90k) {
                    Ok(()) => {
                        if reconnecting && up_since.elapsed() >= STREAM_UP {
                            reconnecting = false;
                            failures = 0;
                            self.reconnects.fetch_add(1, Ordering::Relaxed);
                            self.shared
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .reconnects += 1;
                            self.set_state(State::Streaming, None);
                            info!(to = %self.spawner.target.shown(), "stream reconnected");
                        }
                    }
                    Err(e) => {
                        let o = out.take().expect("checked above");
                        drop(o.video);
                        drop(o.audio);
                        let why = reap(o.child, o.stderr, &self.spawner.target)
                            .err()
                            .unwrap_or(e);
                        if !stream {
                            return Err(why);
                        }
                        // A connection that held counts as a break (retry soon); one that
                        // never did, as one more failed try.
                        if reconnecting || up_since.elapsed() < STREAM_UP {
                            failures += 1;
                        } else {
                            failures = 0;
                        }
                        reconnecting = true;
                        let delay = backoff(failures);
                        warn!(to = %self.spawner.target.shown(), "stream broke, reconnecting in {delay:?}: {why}");
                        self.set_state(State::Reconnecting, Some(why));
                        retry_at = Some(std::time::Instant::now() + delay);
                    }
                }
            }
        }
        self.set_state(State::Finishing, None);
        match out {
            Some(o) => {
                let closed = o.audio.finish().map(|_| ()).map_err(|e| e.to_string());
                // IVF's frame count cannot be patched in a pipe; ffmpeg does not need it.
                // Dropping the writer closes ffmpeg's stdin.
                drop(o.video);
                let reaped = reap(o.child, o.stderr, &self.spawner.target);
                reaped.and(closed)
            }
            // A stream that was down when it was stopped.
            None => Ok(()),
        }
    }

    fn set_state(&self, state: State, error: Option<String>) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.state = state;
        if error.is_some() {
            s.error = error;
        }
    }

    /// Writes one frame or packet at its place on the timeline.
    fn write(
        &self,
        o: &mut Output,
        t: &mut Timeline,
        m: MediaOut,
        done_90k: u64,
    ) -> Result<(), String> {
        let io = |e: tessera_container::Error| e.to_string();
        let bytes = match m {
            MediaOut::Video(frame, _) => match t.video(frame.pts_90k, frame.keyframe) {
                Some(pts) => {
                    o.video.write_frame(pts, &frame.data).map_err(io)?;
                    frame.data.len()
                }
                None => 0,
            },
            MediaOut::Audio(packet, pts_48k) => {
                let (silence, write) = t.audio(pts_48k);
                for _ in 0..silence {
                    o.audio.write_packet(&OPUS_SILENCE).map_err(io)?;
                }
                if write {
                    o.audio.write_packet(&packet).map_err(io)?;
                }
                packet.len()
            }
            _ => return Ok(()),
        };
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.duration_secs = (done_90k + t.end_90k) as f64 / 90_000.0;
        s.bytes += bytes as u64;
        s.wrote_video |= t.started;
        Ok(())
    }
}

/// Maps each segment's room clocks (90 kHz video, 48 kHz audio, both from the room
/// thread's start) onto one ffmpeg's timeline. ffmpeg starts each of its inputs at zero, so
/// an output starts with a keyframe and both streams from that instant: audio before the
/// first keyframe is dropped. A later segment (the room's next thread) starts where the
/// last ended, and its audio may lead its first keyframe, as within a segment.
#[derive(Default)]
struct Timeline {
    /// Where the current segment starts on the output, and its first pts on the room clock.
    base_90k: u64,
    origin_90k: Option<u64>,
    keyframe_seen: bool,
    /// The output has begun (its first keyframe was written), and its last video pts.
    started: bool,
    last_video_90k: Option<u64>,
    /// The next audio packet's place on the output (48 kHz).
    next_audio_48k: u64,
    /// The end of what was written.
    end_90k: u64,
}

impl Timeline {
    fn new_segment(&mut self) {
        self.base_90k = self.end_90k;
        self.origin_90k = None;
        self.keyframe_seen = false;
    }

    /// The output pts of a frame, or `None` to drop it (before the segment's first
    /// keyframe).
    fn video(&mut self, pts_90k: u64, keyframe: bool) -> Option<u64> {
        if !self.keyframe_seen && !keyframe {
            return None;
        }
        let origin = *self.origin_90k.get_or_insert(pts_90k);
        // A frame stamped a little before the segment's first audio packet (which came
        // first) sits at the segment's start; pts only grow.
        let pts = (self.base_90k + pts_90k.saturating_sub(origin))
            .max(self.last_video_90k.map_or(0, |p| p + 1));
        self.last_video_90k = Some(pts);
        self.keyframe_seen = true;
        self.started = true;
        // One frame's worth (at 30 fps) past it: where the next segment may start.
        self.end_90k = self.end_90k.max(pts + 3000);
        Some(pts)
    }

    /// How many 20 ms silences go before this packet, and whether it is written (not
    /// before the output's first keyframe, nor a late or repeated one).
    fn audio(&mut self, pts_48k: u64) -> (u64, bool) {
        if !self.started {
            return (0, false);
        }
        let origin = *self.origin_90k.get_or_insert(pts_48k * 90_000 / 48_000);
        let Some(rel) = pts_48k.checked_sub(origin * 48_000 / 90_000) else {
            return (0, false);
        };
        let at = self.base_90k * 48_000 / 90_000 + rel;
        if at + AUDIO_STEP / 2 < self.next_audio_48k {
            return (0, false);
        }
        let mut silence = 0;
        while self.next_audio_48k + AUDIO_STEP / 2 < at {
            self.next_audio_48k += AUDIO_STEP;
            silence += 1;
        }
        self.next_audio_48k += AUDIO_STEP;
        self.end_90k = self.end_90k.max(self.next_audio_48k * 90_000 / 48_000);
        (silence, true)
    }
}

/// Records how it ended; true when it ended well.
fn finish(result: Result<(), String>, shared: &Mutex<Shared>, target: &Target) -> bool {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(()) => {
            s.state = State::Done;
            true
        }
        Err(e) => {
            error!(to = %target.shown(), "egress failed: {e}");
            s.state = State::Failed;
            s.error = Some(e);
            false
        }
    }
}

/// Runs `recording.on_complete` on a finished file and logs how it ended.
fn on_complete_run(target: &Target, on_complete: &[String]) {
    let (Target::File { path, .. }, Some((program, args))) = (target, on_complete.split_first())
    else {
        return;
    };
    let shown = target.shown();
    let run = Process::new(program)
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match run {
        Ok(s) if s.success() => info!(file = %shown, "recording.on_complete ran: {s}"),
        Ok(s) => warn!(file = %shown, "recording.on_complete failed: {s}"),
        Err(e) => warn!(file = %shown, "recording.on_complete {program:?} did not run: {e}"),
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_stamp(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The recordings (`streams` false) or streams of `room` as JSON for the public
/// `GET /api/rooms/{room}`: a file by its name only (the admin API has the path).
pub fn json_for(server: &Server, room: &str, streams: bool) -> serde_json::Value {
    let mut list = server.recordings.in_room(room, streams);
    for r in &mut list {
        r.file = r.file.as_deref().map(|f| {
            Path::new(f)
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        });
    }
    serde_json::to_value(list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_796_083_200 + 3_723), "20261201-010203");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }

    #[test]
    fn segments_follow_each_other_on_one_timeline() {
        let mut t = Timeline::default();
        t.new_segment();
        // The room is 10 s old when recording starts. ffmpeg starts each input at zero, so
        // nothing is written before the first keyframe, which is the output's zero.
        assert_eq!(
            t.audio(480_000),
            (0, false),
            "audio before the first keyframe"
        );
        assert_eq!(t.video(900_000 + 3000, false), None, "no keyframe yet");
        assert_eq!(t.video(900_000 + 6000, true), Some(0));
        let k_48k = (900_000 + 6000) * 48 / 90;
        assert_eq!(t.audio(k_48k), (0, true));
        assert_eq!(t.audio(k_48k + 960), (0, true));
        // A 60 ms hole in the audio is filled with three silences.
        assert_eq!(t.audio(k_48k + 5 * 960), (3, true));
        assert_eq!(t.audio(k_48k + 960), (0, false), "late");
        assert_eq!(t.video(900_000 + 9000, false), Some(3000));
        let end = t.end_90k;
        // The room closes and comes back (its clocks restart): the output goes on from
        // `end`, audio may lead the segment's first keyframe.
        t.new_segment();
        let (silence, written) = t.audio(960);
        assert!(written && silence <= 2, "{silence}");
        assert_eq!(t.video(0, false), None);
        assert!(t.video(1500, true).is_some_and(|p| p >= end));
    }

    #[test]
    fn formats_name_their_codecs_and_files() {
        assert_eq!(Format::parse("webm"), Some(Format::Webm));
        assert_eq!(Format::parse("avi"), None);
        assert_eq!(Format::Mp4.codecs(), &["H264"]);
        assert_eq!(Format::Mkv.ext(), "mkv");
    }
}
