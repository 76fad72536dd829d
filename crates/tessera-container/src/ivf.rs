//! IVF: a 32-byte file header, then per frame a 12-byte header (size, pts) and the frame.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{invalid, malformed, Error, Format, Result};
use crate::source::{u16_le, u32_le, u64_le, Source};

const F: Format = Format::Ivf;
const HEADER_LEN: usize = 32;
const FRAME_HEADER_LEN: usize = 12;
/// Larger than any real VP8 frame; a bigger size field means a corrupt file, and reading
/// it would only allocate and fail.
pub const MAX_FRAME_BYTES: u32 = 64 << 20;
/// The fourcc of VP8.
pub const VP8_FOURCC: [u8; 4] = *b"VP80";

/// The IVF file header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IvfHeader {
    /// Codec fourcc, `VP80` for VP8.
    pub fourcc: [u8; 4],
    pub width: u16,
    pub height: u16,
    /// Timestamps count units of `timebase_num / timebase_den` seconds (1/30 for 30 fps).
    pub timebase_num: u32,
    pub timebase_den: u32,
    /// Frame count as the writer recorded it; 0 or stale when the writer could not seek.
    pub frame_count: u32,
}

/// One frame: its compressed bytes and its timestamp in timebase units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IvfFrame {
    pub pts: u64,
    pub data: Vec<u8>,
}

/// Reads an IVF file frame by frame. Also an iterator of `Result<IvfFrame>` that ends after
/// the first error.
pub struct IvfReader<R> {
    src: Source<R>,
    header: IvfHeader,
    failed: bool,
}

impl IvfReader<BufReader<File>> {
    /// Opens an IVF file.
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

impl<R: Read> IvfReader<R> {
    /// Reads and checks the file header.
    pub fn new(reader: R) -> Result<Self> {
        let mut src = Source::new(reader, F);
        let mut h = [0u8; HEADER_LEN];
        src.read_exact(&mut h, "file header")?;
        if &h[0..4] != b"DKIF" {
            return Err(malformed(
                F,
                "signature",
                0,
                format!("expected \"DKIF\", found {:02x?}", &h[0..4]),
            ));
        }
        let version = u16_le(&h, 4);
        if version != 0 {
            return Err(malformed(
                F,
                "version",
                4,
                format!("expected 0, found {version}"),
            ));
        }
        let header_len = u16_le(&h, 6);
        if (header_len as usize) < HEADER_LEN {
            return Err(malformed(
                F,
                "header length",
                6,
                format!("{header_len} is below {HEADER_LEN}"),
            ));
        }
        let header = IvfHeader {
            fourcc: [h[8], h[9], h[10], h[11]],
            width: u16_le(&h, 12),
            height: u16_le(&h, 14),
            timebase_den: u32_le(&h, 16),
            timebase_num: u32_le(&h, 20),
            frame_count: u32_le(&h, 24),
        };
        if header.timebase_num == 0 || header.timebase_den == 0 {
            return Err(malformed(
                F,
                "timebase",
                16,
                format!("{}/{} has a zero", header.timebase_num, header.timebase_den),
            ));
        }
        src.skip(u64::from(header_len) - HEADER_LEN as u64, "file header")?;
        Ok(IvfReader {
            src,
            header,
            failed: false,
        })
    }

    pub fn header(&self) -> &IvfHeader {
        &self.header
    }

    /// The next frame, or `None` at a clean end of file (between frames).
    pub fn next_frame(&mut self) -> Result<Option<IvfFrame>> {
        let start = self.src.offset;
        let mut h = [0u8; FRAME_HEADER_LEN];
        if !self.src.read_exact_or_end(&mut h, "frame header")? {
            return Ok(None);
        }
        let size = u32_le(&h, 0);
        if size > MAX_FRAME_BYTES {
            return Err(malformed(
                F,
                "frame size",
                start,
                format!("{size} bytes is over the {MAX_FRAME_BYTES}-byte limit"),
            ));
        }
        let pts = u64_le(&h, 4);
        let data = self.src.read_vec(u64::from(size), "frame data")?;
        Ok(Some(IvfFrame { pts, data }))
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.src.into_inner()
    }
}

impl<R: Read> Iterator for IvfReader<R> {
    type Item = Result<IvfFrame>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_frame().transpose();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Writes an IVF file. The frame count in the header is patched by [`IvfWriter::finish`],
/// which therefore needs `Seek`; without calling it the count stays 0 (players ignore it).
pub struct IvfWriter<W: Write> {
    out: W,
    offset: u64,
    frames: u32,
}

impl IvfWriter<BufWriter<File>> {
    /// Creates (or truncates) an IVF file for VP8.
    pub fn create(
        path: impl AsRef<Path>,
        width: u16,
        height: u16,
        timebase_num: u32,
        timebase_den: u32,
    ) -> Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| Error::File {
            action: "create",
            path: path.to_owned(),
            source,
        })?;
        Self::new(
            BufWriter::new(file),
            width,
            height,
            timebase_num,
            timebase_den,
        )
    }
}

impl<W: Write> IvfWriter<W> {
    /// Writes the header of a VP8 IVF stream whose pts count `timebase_num/timebase_den` s.
    pub fn new(
        out: W,
        width: u16,
        height: u16,
        timebase_num: u32,
        timebase_den: u32,
    ) -> Result<Self> {
        Self::with_fourcc(out, VP8_FOURCC, width, height, timebase_num, timebase_den)
    }

    /// Like [`IvfWriter::new`] for another codec's fourcc.
    pub fn with_fourcc(
        out: W,
        fourcc: [u8; 4],
        width: u16,
        height: u16,
        timebase_num: u32,
        timebase_den: u32,
    ) -> Result<Self> {
        if timebase_num == 0 || timebase_den == 0 {
            return Err(invalid(
                F,
                format!("timebase {timebase_num}/{timebase_den} has a zero"),
            ));
        }
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(b"DKIF");
        h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[8..12].copy_from_slice(&fourcc);
        h[12..14].copy_from_slice(&width.to_le_bytes());
        h[14..16].copy_from_slice(&height.to_le_bytes());
        h[16..20].copy_from_slice(&timebase_den.to_le_bytes());
        h[20..24].copy_from_slice(&timebase_num.to_le_bytes());
        let mut w = IvfWriter {
            out,
            offset: 0,
            frames: 0,
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

    /// Appends one frame with its pts in timebase units.
    pub fn write_frame(&mut self, pts: u64, data: &[u8]) -> Result<()> {
        let size = u32::try_from(data.len())
            .ok()
            .filter(|&s| s <= MAX_FRAME_BYTES)
            .ok_or_else(|| invalid(F, format!("frame of {} bytes is too large", data.len())))?;
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[0..4].copy_from_slice(&size.to_le_bytes());
        h[4..12].copy_from_slice(&pts.to_le_bytes());
        self.put(&h)?;
        self.put(data)?;
        self.frames = self.frames.saturating_add(1);
        Ok(())
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> u32 {
        self.frames
    }
}

impl<W: Write + Seek> IvfWriter<W> {
    /// Patches the frame count into the header, flushes, and gives back the writer
    /// positioned at the end.
    pub fn finish(mut self) -> Result<W> {
        let io = |offset, source| Error::Io {
            format: F,
            offset,
            source,
        };
        let end = self.offset;
        let pos = self.out.stream_position().map_err(|e| io(end, e))?;
        // The stream may not start at 0 (a prefix was written before the header).
        let start = pos.saturating_sub(end);
        self.out
            .seek(SeekFrom::Start(start + 24))
            .map_err(|e| io(24, e))?;
        self.out
            .write_all(&self.frames.to_le_bytes())
            .map_err(|e| io(24, e))?;
        self.out
            .seek(SeekFrom::Start(start + end))
            .map_err(|e| io(end, e))?;
        self.out.flush().map_err(|e| io(end, e))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn written(frames: &[(u64, &[u8])]) -> Vec<u8> {
        let mut w = IvfWriter::new(Cursor::new(Vec::new()), 640, 360, 1, 30).unwrap();
        for (pts, data) in frames {
            w.write_frame(*pts, data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn round_trip_keeps_header_frames_and_pts() {
        let frames: [(u64, &[u8]); 3] = [(0, b"key"), (1, b""), (7, &[0xaa; 5000])];
        let bytes = written(&frames);
        let mut r = IvfReader::new(&bytes[..]).unwrap();
        assert_eq!(
            r.header(),
            &IvfHeader {
                fourcc: *b"VP80",
                width: 640,
                height: 360,
                timebase_num: 1,
                timebase_den: 30,
                frame_count: 3
            }
        );
        for (pts, data) in frames {
            assert_eq!(
                r.next_frame().unwrap(),
                Some(IvfFrame {
                    pts,
                    data: data.to_vec()
                })
            );
        }
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn finish_patches_the_count_even_after_a_prefix() {
        let mut cur = Cursor::new(b"prefix".to_vec());
        cur.set_position(6);
        let mut w = IvfWriter::new(cur, 2, 2, 1, 1000).unwrap();
        w.write_frame(0, b"a").unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(&bytes[..6], b"prefix");
        assert_eq!(IvfReader::new(&bytes[6..]).unwrap().header().frame_count, 1);
    }

    #[test]
    fn bad_input_is_an_error_naming_the_place() {
        let good = written(&[(0, &[1u8; 100][..]), (1, &[2u8; 100][..])]);
        let check = |bytes: &[u8], want: &str| {
            let err = IvfReader::new(bytes)
                .and_then(|r| r.collect::<Result<Vec<_>>>())
                .expect_err(want);
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        };
        check(&good[..10], "input ends inside file header at byte 10");
        check(
            b"RIFF0000000000000000000000000000",
            "bad signature at byte 0",
        );
        check(
            &good[..32 + 12 + 50],
            "input ends inside frame data at byte 94",
        );
        check(
            &good[..32 + 12 + 100 + 5],
            "input ends inside frame header at byte 149",
        );
        let mut huge = good.clone();
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&huge, "bad frame size at byte 32");
        let mut short_header = good.clone();
        short_header[6] = 8;
        check(&short_header, "bad header length at byte 6");
    }

    #[test]
    fn iterator_stops_after_an_error() {
        let good = written(&[(0, &[1u8; 10][..])]);
        let mut r = IvfReader::new(&good[..good.len() - 1]).unwrap();
        assert!(r.next().unwrap().is_err());
        assert!(r.next().is_none());
    }
}
