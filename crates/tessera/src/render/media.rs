//! Input files as timed events: one [`Source`] per file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tessera_codec::resample::resample_clip;
use tessera_codec::{VideoCodec, FRAME_SAMPLES, SAMPLE_RATE_HZ};
use tessera_container::{downmix_to_mono, AnnexBReader, IvfReader, OggOpusReader, WavReader};
use tessera_engine::Input;
use tessera_types::ParticipantId;

/// One timed piece of a participant's media.
pub enum Event {
    Video { codec: VideoCodec, data: Vec<u8> },
    Audio(Vec<u8>),
    Pcm(Vec<i16>),
}

impl Event {
    pub fn into_input(self, id: ParticipantId) -> Input {
        match self {
            Event::Video { codec, data } => Input::Video { id, codec, data },
            Event::Audio(packet) => Input::Audio { id, packet },
            Event::Pcm(samples) => Input::AudioPcm { id, samples },
        }
    }
}

enum Reader {
    Ivf(IvfReader<BufReader<File>>, u64, u64),
    AnnexB(AnnexBReader<BufReader<File>>, u32),
    Ogg(OggOpusReader<BufReader<File>>, u64),
    /// WAV is read whole, resampled to 48 kHz and cut into 20 ms frames up front.
    Pcm(VecDeque<Vec<i16>>),
}

/// A file's events, read lazily, in time order.
pub struct Source {
    pub participant: ParticipantId,
    pub duration_hint: Duration,
    path: String,
    reader: Reader,
    index: u64,
    pending: Option<(Duration, Event)>,
    done: bool,
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

pub fn open_video(participant: ParticipantId, path: &Path, fps: u32) -> Result<Source> {
    Source::new(participant, path, || video_reader(path, fps))
}

pub fn open_audio(participant: ParticipantId, path: &Path) -> Result<Source> {
    Source::new(participant, path, || audio_reader(path))
}

fn video_reader(path: &Path, fps: u32) -> Result<Reader> {
    Ok(match extension(path).as_str() {
        "ivf" => {
            let r = IvfReader::open(path)?;
            let h = r.header().clone();
            if &h.fourcc != b"VP80" {
                bail!(
                    "{}: IVF holds {:?}, only VP8 (VP80) is supported",
                    path.display(),
                    String::from_utf8_lossy(&h.fourcc)
                );
            }
            Reader::Ivf(r, h.timebase_num as u64, h.timebase_den as u64)
        }
        "h264" | "264" => Reader::AnnexB(AnnexBReader::open(path)?, fps),
        other => bail!(
            "{}: unknown video type .{other}: expected .ivf (VP8) or .h264 (Annex-B)",
            path.display()
        ),
    })
}

fn audio_reader(path: &Path) -> Result<Reader> {
    Ok(match extension(path).as_str() {
        "ogg" | "opus" => {
            let r = OggOpusReader::open(path)?;
            let pre_skip = r.head().pre_skip as u64;
            Reader::Ogg(r, pre_skip)
        }
        "wav" => {
            let wav = WavReader::open(path)?;
            let (rate, channels) = (wav.info().sample_rate_hz, wav.info().channels);
            let mono = downmix_to_mono(&wav.read_all()?, channels);
            let pcm = resample_clip(&mono, rate, SAMPLE_RATE_HZ)
                .with_context(|| format!("{}: resampling from {rate} Hz", path.display()))?;
            Reader::Pcm(
                pcm.chunks(FRAME_SAMPLES)
                    .map(|c| {
                        let mut v = c.to_vec();
                        v.resize(FRAME_SAMPLES, 0);
                        v
                    })
                    .collect(),
            )
        }
        other => bail!(
            "{}: unknown audio type .{other}: expected .ogg/.opus (Ogg Opus) or .wav",
            path.display()
        ),
    })
}

impl Source {
    /// Opens the file twice: once to measure how long it plays, once to read it.
    fn new(
        participant: ParticipantId,
        path: &Path,
        reader: impl Fn() -> Result<Reader>,
    ) -> Result<Source> {
        let mut s = Source {
            participant,
            duration_hint: Duration::ZERO,
            path: path.display().to_string(),
            reader: reader()?,
            index: 0,
            pending: None,
            done: false,
        };
        s.duration_hint = match &s.reader {
            Reader::Pcm(frames) => Duration::from_millis(frames.len() as u64 * 20),
            _ => {
                let mut probe = Source {
                    reader: reader()?,
                    index: 0,
                    pending: None,
                    done: false,
                    path: s.path.clone(),
                    ..s.shallow()
                };
                let mut last = Duration::ZERO;
                let mut step = Duration::ZERO;
                while let Some(at) = probe.peek_time()? {
                    if at > last {
                        step = at - last;
                    }
                    last = at;
                    probe.take()?;
                }
                last + step
            }
        };
        Ok(s)
    }

    fn shallow(&self) -> Source {
        Source {
            participant: self.participant,
            duration_hint: Duration::ZERO,
            path: String::new(),
            reader: Reader::Pcm(VecDeque::new()),
            index: 0,
            pending: None,
            done: true,
        }
    }

    /// Time of the next event; `None` at the end. A corrupt file ends where it breaks.
    pub fn peek_time(&mut self) -> Result<Option<Duration>> {
        if self.pending.is_none() && !self.done {
            match self.read_next() {
                Ok(Some(ev)) => self.pending = Some(ev),
                Ok(None) => self.done = true,
                Err(e) => {
                    tracing::warn!(file = %self.path, error = %e, "input ends early: {e:#}");
                    self.done = true;
                }
            }
        }
        Ok(self.pending.as_ref().map(|(t, _)| *t))
    }

    pub fn take(&mut self) -> Result<Option<Event>> {
        self.peek_time()?;
        Ok(self.pending.take().map(|(_, e)| e))
    }

    fn read_next(&mut self) -> Result<Option<(Duration, Event)>> {
        let i = self.index;
        self.index += 1;
        Ok(match &mut self.reader {
            Reader::Ivf(r, num, den) => r.next_frame()?.map(|f| {
                let at = Duration::from_nanos(
                    f.pts.saturating_mul(*num * 1_000_000_000) / (*den).max(1),
                );
                (
                    at,
                    Event::Video {
                        codec: VideoCodec::Vp8,
                        data: f.data,
                    },
                )
            }),
            Reader::AnnexB(r, fps) => r.next_access_unit()?.map(|au| {
                (
                    Duration::from_nanos(i * 1_000_000_000 / *fps as u64),
                    Event::Video {
                        codec: VideoCodec::H264,
                        data: au.data,
                    },
                )
            }),
            // Packet pts count from the start of decoding; playback starts after pre-skip.
            Reader::Ogg(r, pre_skip) => r.next_packet()?.map(|p| {
                let at = p.pts.saturating_sub(*pre_skip);
                (
                    Duration::from_nanos(at * 1_000_000_000 / 48_000),
                    Event::Audio(p.data),
                )
            }),
            Reader::Pcm(frames) => frames
                .pop_front()
                .map(|f| (Duration::from_millis(i * 20), Event::Pcm(f))),
        })
    }
}
