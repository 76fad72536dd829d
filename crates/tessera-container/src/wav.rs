//! RIFF WAVE: integer PCM (8/16/24/32-bit) and IEEE float (32/64-bit), read as i16.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{invalid, malformed, unsupported, Error, Format, Result};
use crate::source::{u16_le, u32_le, Source};

const F: Format = Format::Wav;
const TAG_PCM: u16 = 1;
const TAG_FLOAT: u16 = 3;
const TAG_EXTENSIBLE: u16 = 0xfffe;
/// A data size writers put when they cannot seek back to patch it.
const SIZE_UNKNOWN: u32 = u32::MAX;
const MAX_FMT_BYTES: u32 = 4096;

/// How samples are stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl SampleFormat {
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }

    /// One sample as i16: integers keep their top 16 bits, floats are clamped to [-1, 1].
    fn to_i16(self, b: &[u8]) -> i16 {
        let float = |x: f64| (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        match self {
            SampleFormat::U8 => ((i16::from(b[0])) - 128) << 8,
            SampleFormat::I16 => i16::from_le_bytes([b[0], b[1]]),
            SampleFormat::I24 => i16::from_le_bytes([b[1], b[2]]),
            SampleFormat::I32 => i16::from_le_bytes([b[2], b[3]]),
            SampleFormat::F32 => float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            SampleFormat::F64 => {
                let mut x = [0u8; 8];
                x.copy_from_slice(&b[..8]);
                float(f64::from_le_bytes(x))
            }
        }
    }
}

/// What the `fmt ` and `data` chunks say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WavInfo {
    pub sample_rate_hz: u32,
    pub channels: u16,
    pub sample_format: SampleFormat,
    /// Samples per channel in the data chunk; `None` when its size was left open
    /// (0xffffffff, from a writer that could not seek), in which case data runs to the end.
    pub frames: Option<u64>,
}

/// Reads a WAV file's samples as interleaved i16. Chunks other than `fmt ` and `data`
/// (`LIST`, `fact`, ...) are skipped, odd-sized ones with their pad byte.
pub struct WavReader<R> {
    src: Source<R>,
    info: WavInfo,
    /// Bytes of sample data not yet read; `None` when unknown (read to the end).
    remaining: Option<u64>,
    scratch: Vec<u8>,
}

impl WavReader<BufReader<File>> {
    /// Opens a WAV file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::File {
            action: "open",
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufReader::new(file))
    }
}

impl<R: Read> WavReader<R> {
    /// Reads the headers up to the start of the sample data.
    pub fn new(reader: R) -> Result<Self> {
        let mut src = Source::new(reader, F);
        let mut riff = [0u8; 12];
        src.read_exact(&mut riff, "RIFF header")?;
        match &riff[0..4] {
            b"RIFF" => {}
            b"RIFX" | b"RF64" | b"BW64" => {
                let id = String::from_utf8_lossy(&riff[0..4]).into_owned();
                return Err(unsupported(F, "RIFF variant", 0, id));
            }
            other => {
                return Err(malformed(
                    F,
                    "RIFF header",
                    0,
                    format!("expected \"RIFF\", found {other:02x?}"),
                ));
            }
        }
        if &riff[8..12] != b"WAVE" {
            return Err(malformed(
                F,
                "RIFF form type",
                8,
                format!("expected \"WAVE\", found {:02x?}", &riff[8..12]),
            ));
        }
        let mut fmt: Option<(SampleFormat, u16, u32)> = None;
        loop {
            let chunk_at = src.offset;
            let mut h = [0u8; 8];
            if !src.read_exact_or_end(&mut h, "chunk header")? {
                return Err(malformed(F, "file", chunk_at, "no data chunk"));
            }
            let size = u32_le(&h, 4);
            match &h[0..4] {
                b"fmt " => {
                    if !(16..=MAX_FMT_BYTES).contains(&size) {
                        return Err(malformed(F, "fmt chunk", chunk_at, format!("size {size}")));
                    }
                    let body = src.read_vec(u64::from(size), "fmt chunk")?;
                    fmt = Some(parse_fmt(&body, chunk_at)?);
                    src.skip(u64::from(size & 1), "fmt chunk padding")?;
                }
                b"data" => {
                    let Some((sample_format, channels, sample_rate_hz)) = fmt else {
                        return Err(malformed(
                            F,
                            "data chunk",
                            chunk_at,
                            "comes before the fmt chunk",
                        ));
                    };
                    let block = sample_format.bytes() as u64 * u64::from(channels);
                    let remaining = (size != SIZE_UNKNOWN).then_some(u64::from(size));
                    return Ok(WavReader {
                        src,
                        info: WavInfo {
                            sample_rate_hz,
                            channels,
                            sample_format,
                            frames: remaining.map(|r| r / block),
                        },
                        remaining,
                        scratch: Vec::new(),
                    });
                }
                _ => src.skip(u64::from(size) + u64::from(size & 1), "chunk")?,
            }
        }
    }

    pub fn info(&self) -> &WavInfo {
        &self.info
    }

    /// Fills `out` with interleaved samples, whole frames only; returns how many samples
    /// were written: 0 at the end of the data (or when `out` holds less than one frame).
    pub fn read_samples(&mut self, out: &mut [i16]) -> Result<usize> {
        let channels = usize::from(self.info.channels);
        let bytes = self.info.sample_format.bytes();
        let block = bytes * channels;
        let mut want = (out.len() / channels) as u64 * block as u64;
        if let Some(left) = self.remaining {
            // A size that is not a whole number of frames leaves a stub we ignore.
            want = want.min(left - left % block as u64);
        }
        let want = want as usize;
        self.scratch.resize(want, 0);
        let got = self.src.read_some(&mut self.scratch[..want])?;
        if got < want && (self.remaining.is_some() || got % block != 0) {
            return Err(self.src.truncated("sample data"));
        }
        if let Some(left) = &mut self.remaining {
            *left -= got as u64;
        }
        for (o, s) in out.iter_mut().zip(self.scratch[..got].chunks_exact(bytes)) {
            *o = self.info.sample_format.to_i16(s);
        }
        Ok(got / bytes)
    }

    /// Every remaining sample, interleaved.
    pub fn read_all(mut self) -> Result<Vec<i16>> {
        let mut all = Vec::new();
        // About 64k samples per read, whatever the (untrusted) channel count.
        let channels = usize::from(self.info.channels);
        let mut buf = vec![0i16; channels * (65_536 / channels).max(1)];
        loop {
            let n = self.read_samples(&mut buf)?;
            if n == 0 {
                return Ok(all);
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.src.into_inner()
    }
}

fn parse_fmt(b: &[u8], at: u64) -> Result<(SampleFormat, u16, u32)> {
    let mut tag = u16_le(b, 0);
    let channels = u16_le(b, 2);
    let rate = u32_le(b, 4);
    let block_align = u16_le(b, 12);
    let bits = u16_le(b, 14);
    if tag == TAG_EXTENSIBLE {
        if b.len() < 40 {
            return Err(malformed(
                F,
                "fmt chunk",
                at,
                "WAVE_FORMAT_EXTENSIBLE shorter than 40 bytes",
            ));
        }
        // The sub-format GUID starts with the plain format tag.
        tag = u16_le(b, 24);
    }
    let format = match (tag, bits) {
        (TAG_PCM, 8) => SampleFormat::U8,
        (TAG_PCM, 16) => SampleFormat::I16,
        (TAG_PCM, 24) => SampleFormat::I24,
        (TAG_PCM, 32) => SampleFormat::I32,
        (TAG_FLOAT, 32) => SampleFormat::F32,
        (TAG_FLOAT, 64) => SampleFormat::F64,
        (TAG_PCM | TAG_FLOAT, _) => {
            return Err(unsupported(
                F,
                "sample size",
                at + 8 + 14,
                format!("{bits} bits"),
            ));
        }
        _ => {
            return Err(unsupported(
                F,
                "format tag",
                at + 8,
                format!("{tag:#06x} (only PCM and float)"),
            ));
        }
    };
    if channels == 0 {
        return Err(malformed(F, "fmt chunk", at + 8 + 2, "0 channels"));
    }
    if rate == 0 {
        return Err(malformed(F, "fmt chunk", at + 8 + 4, "sample rate 0"));
    }
    if usize::from(block_align) != format.bytes() * usize::from(channels) {
        return Err(malformed(
            F,
            "fmt chunk",
            at + 8 + 12,
            format!("block align {block_align} for {channels} channels of {bits} bits"),
        ));
    }
    Ok((format, channels, rate))
}

/// Averages interleaved frames of `channels` samples into one channel.
pub fn downmix_to_mono(interleaved: &[i16], channels: u16) -> Vec<i16> {
    let channels = usize::from(channels.max(1));
    interleaved
        .chunks_exact(channels)
        .map(|frame| {
            let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
            (sum / channels as i32) as i16
        })
        .collect()
}

/// Writes 16-bit PCM WAV. The RIFF and data sizes are patched by [`WavWriter::finish`],
/// which therefore needs `Seek`.
pub struct WavWriter<W: Write> {
    out: W,
    offset: u64,
    channels: u16,
    data_bytes: u64,
}

impl WavWriter<BufWriter<File>> {
    /// Creates (or truncates) a WAV file.
    pub fn create(path: impl AsRef<Path>, sample_rate_hz: u32, channels: u16) -> Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| Error::File {
            action: "create",
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufWriter::new(file), sample_rate_hz, channels)
    }
}

impl<W: Write> WavWriter<W> {
    /// Writes the header for mono (1) or stereo (2) 16-bit PCM.
    pub fn new(out: W, sample_rate_hz: u32, channels: u16) -> Result<Self> {
        if !(1..=2).contains(&channels) {
            return Err(invalid(
                F,
                format!("{channels} channels; only mono and stereo are written"),
            ));
        }
        if sample_rate_hz == 0 {
            return Err(invalid(F, "sample rate 0"));
        }
        let block = 2 * channels;
        let mut h = Vec::with_capacity(44);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&SIZE_UNKNOWN.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&TAG_PCM.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&sample_rate_hz.to_le_bytes());
        h.extend_from_slice(&(sample_rate_hz * u32::from(block)).to_le_bytes());
        h.extend_from_slice(&block.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&SIZE_UNKNOWN.to_le_bytes());
        let mut w = WavWriter {
            out,
            offset: 0,
            channels,
            data_bytes: 0,
        };
        w.put(&h)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|source| Error::Io {
            format: F,
            offset: self.offset,
            source,
        })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends interleaved samples (a whole number of frames).
    pub fn write_samples(&mut self, interleaved: &[i16]) -> Result<()> {
        if !interleaved.len().is_multiple_of(usize::from(self.channels)) {
            return Err(invalid(
                F,
                format!(
                    "{} samples is not a whole number of {}-channel frames",
                    interleaved.len(),
                    self.channels
                ),
            ));
        }
        let bytes = interleaved.len() as u64 * 2;
        if 36 + self.data_bytes + bytes >= u64::from(SIZE_UNKNOWN) {
            return Err(invalid(
                F,
                "data would exceed the 4 GiB a WAV file can hold",
            ));
        }
        let mut buf = Vec::with_capacity(interleaved.len() * 2);
        for s in interleaved {
            buf.extend_from_slice(&s.to_le_bytes());
        }
        self.put(&buf)?;
        self.data_bytes += bytes;
        Ok(())
    }
}

impl<W: Write + Seek> WavWriter<W> {
    /// Patches the RIFF and data sizes, flushes, and gives back the writer positioned at
    /// the end.
    pub fn finish(mut self) -> Result<W> {
        let io = |offset, source| Error::Io {
            format: F,
            offset,
            source,
        };
        let end = self.offset;
        let pos = self.out.stream_position().map_err(|e| io(end, e))?;
        let start = pos.saturating_sub(end);
        let data = self.data_bytes as u32;
        self.out
            .seek(SeekFrom::Start(start + 4))
            .map_err(|e| io(4, e))?;
        self.out
            .write_all(&(36 + data).to_le_bytes())
            .map_err(|e| io(4, e))?;
        self.out
            .seek(SeekFrom::Start(start + 40))
            .map_err(|e| io(40, e))?;
        self.out
            .write_all(&data.to_le_bytes())
            .map_err(|e| io(40, e))?;
        self.out
            .seek(SeekFrom::Start(pos))
            .map_err(|e| io(end, e))?;
        self.out.flush().map_err(|e| io(end, e))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn written(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), rate, channels).unwrap();
        w.write_samples(samples).unwrap();
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn round_trip_mono_and_stereo() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 61 % 65536 - 32768) as i16).collect();
        for (rate, channels) in [(16_000, 1), (44_100, 2), (48_000, 1)] {
            let bytes = written(rate, channels, &samples);
            assert_eq!(bytes.len(), 44 + 2000);
            let r = WavReader::new(&bytes[..]).unwrap();
            assert_eq!(
                r.info(),
                &WavInfo {
                    sample_rate_hz: rate,
                    channels,
                    sample_format: SampleFormat::I16,
                    frames: Some(1000 / u64::from(channels))
                }
            );
            assert_eq!(r.read_all().unwrap(), samples);
        }
    }

    /// A WAV file built by hand: `fmt_body` then extra chunks then data.
    fn handmade(
        fmt_body: &[u8],
        extra: &[(&[u8; 4], &[u8])],
        data: &[u8],
        data_size: u32,
    ) -> Vec<u8> {
        let mut b = b"RIFF\0\0\0\0WAVE".to_vec();
        let mut chunk = |id: &[u8; 4], body: &[u8], size: u32| {
            b.extend_from_slice(id);
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(body);
            if body.len() % 2 == 1 {
                b.push(0);
            }
        };
        for (id, body) in extra {
            chunk(id, body, body.len() as u32);
        }
        chunk(b"fmt ", fmt_body, fmt_body.len() as u32);
        chunk(b"data", data, data_size);
        b
    }

    fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        f.extend_from_slice(&block.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    fn extensible(sub_tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut f = fmt(TAG_EXTENSIBLE, channels, rate, bits);
        f.extend_from_slice(&22u16.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&sub_tag.to_le_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71]);
        f
    }

    #[test]
    fn reads_every_sample_format_as_i16() {
        // (fmt, data bytes for samples [0.5, -1.0], expected i16)
        let cases: Vec<(Vec<u8>, Vec<u8>, [i16; 2])> = vec![
            (
                fmt(TAG_PCM, 1, 8000, 8),
                vec![0xc0, 0x00],
                [0x4000, -0x8000],
            ),
            (
                fmt(TAG_PCM, 1, 8000, 16),
                vec![0x00, 0x40, 0x00, 0x80],
                [0x4000, -0x8000],
            ),
            (
                fmt(TAG_PCM, 1, 8000, 24),
                vec![0x12, 0x00, 0x40, 0x00, 0x00, 0x80],
                [0x4000, -0x8000],
            ),
            (
                extensible(TAG_PCM, 1, 8000, 24),
                vec![0x12, 0x00, 0x40, 0x00, 0x00, 0x80],
                [0x4000, -0x8000],
            ),
            (
                fmt(TAG_PCM, 1, 8000, 32),
                vec![0, 0x34, 0x00, 0x40, 0, 0, 0x00, 0x80],
                [0x4000, -0x8000],
            ),
            (
                fmt(TAG_FLOAT, 1, 8000, 32),
                [0.5f32.to_le_bytes(), (-1.5f32).to_le_bytes()].concat(),
                [16384, -32767],
            ),
            (
                extensible(TAG_FLOAT, 1, 8000, 64),
                [0.5f64.to_le_bytes(), (-1.0f64).to_le_bytes()].concat(),
                [16384, -32767],
            ),
        ];
        for (f, data, want) in cases {
            let bytes = handmade(&f, &[(b"LIST", b"odd")], &data, data.len() as u32);
            let r = WavReader::new(&bytes[..]).unwrap_or_else(|e| panic!("{e} for fmt {f:02x?}"));
            assert_eq!(r.read_all().unwrap(), want, "fmt {f:02x?}");
        }
    }

    #[test]
    fn open_ended_data_runs_to_the_end_of_file() {
        let bytes = handmade(
            &fmt(TAG_PCM, 2, 8000, 16),
            &[],
            &[1, 0, 2, 0, 3, 0, 4, 0],
            SIZE_UNKNOWN,
        );
        let r = WavReader::new(&bytes[..]).unwrap();
        assert_eq!(r.info().frames, None);
        assert_eq!(r.read_all().unwrap(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(
            downmix_to_mono(&[100, 300, -32768, -32768, 32767, 32767], 2),
            vec![200, -32768, 32767]
        );
        assert_eq!(downmix_to_mono(&[5, 6], 1), vec![5, 6]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_offset() {
        let good = written(8000, 1, &[1; 100]);
        let read = |b: &[u8]| WavReader::new(b).and_then(|r| r.read_all());
        let check = |bytes: &[u8], want: &str| {
            let err = read(bytes).expect_err(want);
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        };
        check(&good[..8], "input ends inside RIFF header at byte 8");
        check(b"OggS\0\0\0\0\0\0\0\0\0\0\0\0", "bad RIFF header at byte 0");
        check(&good[..30], "input ends inside fmt chunk at byte 30");
        check(&good[..good.len() - 3], "input ends inside sample data");
        check(&good[..36], "bad file at byte 36: no data chunk");
        check(
            &handmade(&fmt(7, 1, 8000, 8), &[], &[], 0),
            "unsupported format tag at byte 20",
        );
        check(
            &handmade(&fmt(TAG_PCM, 1, 8000, 12), &[], &[], 0),
            "unsupported sample size",
        );
        check(
            &handmade(&fmt(TAG_PCM, 0, 8000, 16), &[], &[], 0),
            "0 channels",
        );
        let mut data_first = b"RIFF\0\0\0\0WAVEdata\x02\0\0\0\0\0".to_vec();
        data_first.extend(&good[12..]);
        check(
            &data_first,
            "bad data chunk at byte 12: comes before the fmt chunk",
        );
        let mut big_skip = good.clone();
        big_skip[12..16].copy_from_slice(b"junk");
        big_skip[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&big_skip, "input ends inside chunk");
    }

    #[test]
    fn writer_refuses_bad_arguments() {
        assert!(WavWriter::new(Cursor::new(Vec::new()), 48_000, 3).is_err());
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 48_000, 2).unwrap();
        assert!(w.write_samples(&[1, 2, 3]).is_err());
    }
}
