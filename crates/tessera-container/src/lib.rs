//! Readers and writers for the media files Tessera takes in and puts out: IVF (VP8),
//! H.264 Annex-B, Ogg Opus and WAV.
//!
//! Owns: container framing only — splitting files into compressed frames, access units or
//! packets with their timing, and the reverse; WAV samples as i16.
//!
//! Must not: decode or encode media, resample, read a clock, or panic on bad input. Every
//! reader works over any [`std::io::Read`] and reports a corrupt or truncated file as an
//! [`Error`] naming the format, the structure and the byte offset. Writers take
//! [`std::io::Write`]; those that patch sizes at the end (IVF frame count, WAV sizes) need
//! `Seek` for `finish`. `open`/`create` helpers wrap files in buffered IO.
//!
//! Decisions worth knowing:
//! - **Timing**: IVF frames carry pts in the file's timebase. Annex-B has none; callers
//!   number access units. Opus packet pts and durations are 48 kHz samples derived from each
//!   packet's TOC byte (RFC 6716 3.1), anchored by the first audio page's granule position,
//!   with end trimming from the last page's.
//! - **Access units** are cut by H.264 7.4.1.2.3 (delimiter, SPS, PPS, SEI or a slice with
//!   `first_mb_in_slice == 0` after a slice) and keep their exact bytes, start codes
//!   included, so writing them back reproduces the stream.
//! - **Ogg** is implemented here (pages, lacing, CRC); only the first Opus stream of a file
//!   is read and chained streams after its end are ignored.
//!
//! ```
//! use std::io::Cursor;
//! use tessera_container::{OggOpusReader, OggOpusWriter};
//!
//! // Two 20 ms CELT packets (TOC 0xf8) in an Ogg Opus file, and back.
//! let mut writer = OggOpusWriter::new(Vec::new(), 1, 312)?;
//! writer.write_packet(&[0xf8, 0xff, 0xfe])?;
//! writer.write_packet(&[0xf8, 0xff, 0xfe])?;
//! let file = writer.finish()?;
//!
//! let mut reader = OggOpusReader::new(Cursor::new(file))?;
//! assert_eq!(reader.head().pre_skip, 312);
//! let second = reader.nth(1).unwrap()?;
//! assert_eq!((second.pts, second.duration), (960, 960));
//! # Ok::<(), tessera_container::Error>(())
//! ```

mod annexb;
mod error;
mod ivf;
mod ogg;
mod opus;
mod source;
mod wav;

use std::path::Path;

pub use annexb::{
    nal_type, nal_units, AccessUnit, AnnexBReader, AnnexBWriter, NalUnits, MAX_ACCESS_UNIT_BYTES,
};
pub use error::{Error, Format, Result};
pub use ivf::{IvfFrame, IvfHeader, IvfReader, IvfWriter, MAX_FRAME_BYTES, VP8_FOURCC};
pub use opus::{
    opus_packet_duration, OggOpusReader, OggOpusWriter, OpusHead, OpusPacket, OpusTags,
    DEFAULT_PRE_SKIP, MAX_PACKET_SAMPLES, OPUS_RATE_HZ,
};
pub use wav::{downmix_to_mono, SampleFormat, WavInfo, WavReader, WavWriter};

/// The format a path's extension names (case-insensitive): `ivf`; `h264`, `264`;
/// `ogg`, `opus`; `wav`. `None` for anything else.
pub fn sniff(path: impl AsRef<Path>) -> Option<Format> {
    let ext = path.as_ref().extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "ivf" => Some(Format::Ivf),
        "h264" | "264" => Some(Format::AnnexB),
        "ogg" | "opus" => Some(Format::OggOpus),
        "wav" => Some(Format::Wav),
        _ => None,
    }
}

/// The format the first bytes of a file show (at least 4 bytes needed): `DKIF`, `OggS`,
/// `RIFF`, or an H.264 start code.
pub fn sniff_bytes(head: &[u8]) -> Option<Format> {
    match head.get(..4)? {
        b"DKIF" => Some(Format::Ivf),
        b"OggS" => Some(Format::OggOpus),
        b"RIFF" => Some(Format::Wav),
        [0, 0, 1, _] | [0, 0, 0, 1] => Some(Format::AnnexB),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_by_extension_and_magic() {
        let check = |path: &str, want: Option<Format>| assert_eq!(sniff(path), want, "{path}");
        check("a/p1.ivf", Some(Format::Ivf));
        check("p1.H264", Some(Format::AnnexB));
        check("x.264", Some(Format::AnnexB));
        check("x.ogg", Some(Format::OggOpus));
        check("x.opus", Some(Format::OggOpus));
        check("x.wav", Some(Format::Wav));
        check("x.mp4", None);
        check("wav", None);

        let magic = |b: &[u8], want: Option<Format>| assert_eq!(sniff_bytes(b), want, "{b:02x?}");
        magic(b"DKIF\0\0", Some(Format::Ivf));
        magic(b"OggS", Some(Format::OggOpus));
        magic(b"RIFF....WAVE", Some(Format::Wav));
        magic(&[0, 0, 0, 1, 0x67], Some(Format::AnnexB));
        magic(&[0, 0, 1, 0x09], Some(Format::AnnexB));
        magic(&[0, 0, 2, 1], None);
        magic(b"Ogg", None);
    }
}
