//! Output files: the composite video and the full mix.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use tessera_codec::{AudioDecoder, EncodedVideo, VideoCodec};
use tessera_container::{AnnexBWriter, IvfWriter, OggOpusWriter, WavWriter, DEFAULT_PRE_SKIP};
use tessera_engine::TierSettings;

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(BufWriter::new(File::create(path).with_context(|| {
        format!("cannot create {}", path.display())
    })?))
}

pub enum VideoSink {
    Ivf(Option<IvfWriter<BufWriter<File>>>, u64),
    AnnexB(Option<AnnexBWriter<BufWriter<File>>>, u64),
}

impl VideoSink {
    pub fn create(path: &Path, tier: &TierSettings) -> Result<VideoSink> {
        let file = create(path)?;
        Ok(match tier.id.codec {
            VideoCodec::Vp8 => VideoSink::Ivf(
                Some(IvfWriter::new(
                    file,
                    tier.width as u16,
                    tier.height as u16,
                    1,
                    90_000,
                )?),
                0,
            ),
            VideoCodec::H264 => VideoSink::AnnexB(Some(AnnexBWriter::new(file)), 0),
        })
    }

    pub fn write(&mut self, frame: &EncodedVideo) -> Result<()> {
        match self {
            VideoSink::Ivf(Some(w), n) => {
                w.write_frame(frame.pts_90k, &frame.data)?;
                *n += 1;
            }
            VideoSink::AnnexB(Some(w), n) => {
                w.write_access_unit(&frame.data)?;
                *n += 1;
            }
            _ => anyhow::bail!("video output already finished"),
        }
        Ok(())
    }

    /// Flushes the file; returns the number of frames written.
    pub fn finish(&mut self) -> Result<u64> {
        Ok(match self {
            VideoSink::Ivf(w, n) => {
                if let Some(w) = w.take() {
                    use std::io::Write;
                    w.finish()?.flush()?;
                }
                *n
            }
            VideoSink::AnnexB(w, n) => {
                if let Some(w) = w.take() {
                    use std::io::Write;
                    w.finish()?.flush()?;
                }
                *n
            }
        })
    }
}

pub enum AudioSink {
    Ogg(Option<OggOpusWriter<BufWriter<File>>>, u64),
    /// WAV gets what a listener would hear: the Opus packets decoded again.
    Wav(
        Option<WavWriter<BufWriter<File>>>,
        Box<dyn AudioDecoder>,
        Vec<i16>,
        u64,
    ),
}

impl AudioSink {
    pub fn create(path: &Path) -> Result<AudioSink> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "ogg" | "opus" => AudioSink::Ogg(
                Some(OggOpusWriter::new(create(path)?, 1, DEFAULT_PRE_SKIP)?),
                0,
            ),
            "wav" => AudioSink::Wav(
                Some(WavWriter::new(create(path)?, 48_000, 1)?),
                tessera_codec::new_audio_decoder()?,
                Vec::new(),
                0,
            ),
            _ => anyhow::bail!(
                "--audio-out {}: expected a .ogg/.opus (Ogg Opus) or .wav file",
                path.display()
            ),
        })
    }

    /// Appends one 20 ms packet; the room's audio clock has no gaps, so order is timing.
    pub fn write(&mut self, packet: &[u8]) -> Result<()> {
        match self {
            AudioSink::Ogg(Some(w), n) => {
                w.write_packet(packet)?;
                *n += 1;
            }
            AudioSink::Wav(Some(w), dec, pcm, n) => {
                dec.decode(packet, pcm)?;
                w.write_samples(pcm)?;
                *n += 1;
            }
            _ => anyhow::bail!("audio output already finished"),
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<u64> {
        Ok(match self {
            AudioSink::Ogg(w, n) => {
                if let Some(w) = w.take() {
                    use std::io::Write;
                    w.finish()?.flush()?;
                }
                *n
            }
            AudioSink::Wav(w, _, _, n) => {
                if let Some(w) = w.take() {
                    use std::io::Write;
                    w.finish()?.flush()?;
                }
                *n
            }
        })
    }
}
