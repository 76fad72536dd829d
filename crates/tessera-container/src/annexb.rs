//! H.264 Annex-B byte streams: NAL units behind `00 00 01` / `00 00 00 01` start codes,
//! grouped into access units (one coded picture each) by the rules of H.264 7.4.1.2.3.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::{malformed, Error, Format, Result};
use crate::source::Source;

const F: Format = Format::AnnexB;
/// More than any real access unit; a longer run without a boundary means a corrupt file.
pub const MAX_ACCESS_UNIT_BYTES: usize = 32 << 20;
const READ_CHUNK: usize = 64 << 10;

/// NAL unit types this crate cares about.
pub mod nal_type {
    pub const NON_IDR_SLICE: u8 = 1;
    pub const IDR_SLICE: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// One access unit: its Annex-B bytes, start codes included, exactly as in the stream
/// (concatenating every access unit gives back the stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessUnit {
    pub data: Vec<u8>,
    /// Holds an IDR slice (NAL type 5): decoding can start here.
    pub is_idr: bool,
}

impl AccessUnit {
    /// The NAL units of this access unit, without start codes.
    pub fn nal_units(&self) -> NalUnits<'_> {
        nal_units(&self.data)
    }
}

/// The NAL units (header byte first, no start code, no trailing zero bytes) of an Annex-B
/// buffer. Bytes before the first start code are skipped.
pub fn nal_units(annex_b: &[u8]) -> NalUnits<'_> {
    let pos = find_start_code(annex_b, 0).map_or(annex_b.len(), |p| p + 3);
    NalUnits { data: annex_b, pos }
}

/// Iterator returned by [`nal_units`].
pub struct NalUnits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.pos < self.data.len() {
            let start = self.pos;
            let (end, next) = match find_start_code(self.data, start) {
                Some(p) => (p, p + 3),
                None => (self.data.len(), self.data.len()),
            };
            self.pos = next;
            let nal = trim_trailing_zeros(&self.data[start..end]);
            if !nal.is_empty() {
                return Some(nal);
            }
        }
        None
    }
}

fn trim_trailing_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    &b[..n]
}

/// Position of the first `00 00 01` at or after `from`.
fn find_start_code(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from + 2;
    while i < b.len() {
        // Skip ahead by up to 3 when the byte rules out a start code ending here or soon.
        match b[i] {
            1 if b[i - 1] == 0 && b[i - 2] == 0 => return Some(i - 2),
            0 => i += 1,
            _ => i += 3,
        }
    }
    None
}

/// Splits an Annex-B stream into access units. Also an iterator of `Result<AccessUnit>`
/// that ends after the first error.
///
/// A new access unit starts, once the current one holds a slice, at an access unit
/// delimiter, SPS, PPS, SEI or NAL types 14..=18, or at a slice whose `first_mb_in_slice` is
/// 0. Annex-B carries no timestamps: the caller numbers access units (`pts = index * 90000 /
/// fps`). A stream may open with zero bytes; any other byte before the first start code is
/// an error, as is a NAL header with the forbidden bit set.
pub struct AnnexBReader<R> {
    src: Source<R>,
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    started: bool,
    /// Where the pending access unit starts in `buf`.
    au_start: usize,
    au_has_slice: bool,
    au_is_idr: bool,
    /// The `00 00 01` of the next NAL unit to look at; `None` once every NAL was seen.
    next: Option<usize>,
    failed: bool,
}

impl AnnexBReader<BufReader<File>> {
    /// Opens an Annex-B file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::File {
            action: "open",
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(BufReader::new(file)))
    }
}

impl<R: Read> AnnexBReader<R> {
    pub fn new(reader: R) -> Self {
        AnnexBReader {
            src: Source::new(reader, F),
            buf: Vec::new(),
            base: 0,
            eof: false,
            started: false,
            au_start: 0,
            au_has_slice: false,
            au_is_idr: false,
            next: None,
            failed: false,
        }
    }

    /// Reads more input; returns false at the end of input.
    fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.buf.len() - self.au_start > MAX_ACCESS_UNIT_BYTES {
            return Err(malformed(
                F,
                "access unit",
                self.base + self.au_start as u64,
                format!("no access unit boundary within {MAX_ACCESS_UNIT_BYTES} bytes"),
            ));
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let got = self.src.read_some(&mut self.buf[old..])?;
        self.buf.truncate(old + got);
        if got < READ_CHUNK {
            self.eof = true;
        }
        Ok(got > 0)
    }

    /// Finds the first start code; returns false for an empty stream.
    fn start(&mut self) -> Result<bool> {
        self.started = true;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b != 0) {
                if self.buf[i] != 1 || i < 2 {
                    return Err(malformed(
                        F,
                        "stream start",
                        self.base + i as u64,
                        format!(
                            "expected a start code (00 00 01), found byte {:#04x}",
                            self.buf[i]
                        ),
                    ));
                }
                self.next = Some(i - 2);
                return Ok(true);
            }
            if !self.fill()? {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                return Err(malformed(
                    F,
                    "stream start",
                    self.base,
                    "only zero bytes, no start code",
                ));
            }
        }
    }

    /// The next access unit, or `None` at the end of the stream.
    pub fn next_access_unit(&mut self) -> Result<Option<AccessUnit>> {
        if !self.started && !self.start()? {
            return Ok(None);
        }
        // Drop what earlier access units used, so the buffer holds about one.
        if self.au_start > 0 {
            self.buf.drain(..self.au_start);
            self.base += self.au_start as u64;
            self.next = self.next.map(|n| n - self.au_start);
            self.au_start = 0;
        }
        while let Some(code) = self.next {
            let nal_start = code + 3;
            let mut scan_from = nal_start;
            let following = loop {
                if let Some(p) = find_start_code(&self.buf, scan_from) {
                    break Some(p);
                }
                scan_from = self.buf.len().saturating_sub(2).max(nal_start);
                if !self.fill()? {
                    break None;
                }
            };
            self.next = following;
            let nal_end = following.unwrap_or(self.buf.len());
            if nal_end == nal_start {
                continue; // an empty NAL unit: two start codes in a row
            }
            let header = self.buf[nal_start];
            if header & 0x80 != 0 {
                return Err(malformed(
                    F,
                    "NAL unit header",
                    self.base + nal_start as u64,
                    format!("forbidden_zero_bit is set in {header:#04x}"),
                ));
            }
            let nal_type = header & 0x1f;
            let is_slice = matches!(nal_type, 1..=5);
            // first_mb_in_slice is ue(v), which is 0 exactly when its first bit is 1.
            let first_mb_zero = nal_end > nal_start + 1 && self.buf[nal_start + 1] & 0x80 != 0;
            let starts_au = match nal_type {
                nal_type::SEI | nal_type::SPS | nal_type::PPS | nal_type::AUD | 14..=18 => true,
                1 | 2 | 5 => first_mb_zero,
                _ => false,
            };
            if self.au_has_slice && starts_au {
                // A four-byte start code's leading zero belongs to the new access unit.
                let cut = if code > self.au_start && self.buf[code - 1] == 0 {
                    code - 1
                } else {
                    code
                };
                let au = AccessUnit {
                    data: self.buf[self.au_start..cut].to_vec(),
                    is_idr: self.au_is_idr,
                };
                self.au_start = cut;
                self.au_has_slice = is_slice;
                self.au_is_idr = nal_type == nal_type::IDR_SLICE;
                return Ok(Some(au));
            }
            self.au_has_slice |= is_slice;
            self.au_is_idr |= nal_type == nal_type::IDR_SLICE;
        }
        if self.au_start < self.buf.len() {
            let au = AccessUnit {
                data: self.buf[self.au_start..].to_vec(),
                is_idr: self.au_is_idr,
            };
            self.au_start = self.buf.len();
            return Ok(Some(au));
        }
        Ok(None)
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.src.into_inner()
    }
}

impl<R: Read> Iterator for AnnexBReader<R> {
    type Item = Result<AccessUnit>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_access_unit().transpose();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Writes an Annex-B stream by appending access units or NAL units.
pub struct AnnexBWriter<W: Write> {
    out: W,
    offset: u64,
}

impl AnnexBWriter<BufWriter<File>> {
    /// Creates (or truncates) an Annex-B file.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| Error::File {
            action: "create",
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(BufWriter::new(file)))
    }
}

impl<W: Write> AnnexBWriter<W> {
    pub fn new(out: W) -> Self {
        AnnexBWriter { out, offset: 0 }
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

    /// Appends an access unit in Annex-B form. If it does not begin with a start code it is
    /// taken to be a single NAL unit and gets one.
    pub fn write_access_unit(&mut self, annex_b: &[u8]) -> Result<()> {
        if annex_b.starts_with(&[0, 0, 1]) || annex_b.starts_with(&[0, 0, 0, 1]) {
            self.put(annex_b)
        } else {
            self.write_nal_unit(annex_b)
        }
    }

    /// Appends one NAL unit (header byte first) behind a four-byte start code.
    pub fn write_nal_unit(&mut self, nal: &[u8]) -> Result<()> {
        self.put(&[0, 0, 0, 1])?;
        self.put(nal)
    }

    /// Flushes and gives back the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out.flush().map_err(|source| Error::Io {
            format: F,
            offset: self.offset,
            source,
        })?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NAL unit of `nal_type` whose slice header starts with first_mb_in_slice = 0 (or not).
    fn nal(nal_type: u8, first_mb_zero: bool, len: usize) -> Vec<u8> {
        let mut v = vec![0x60 | nal_type, if first_mb_zero { 0x88 } else { 0x08 }];
        v.extend((0..len).map(|i| (i % 250) as u8 + 2));
        v
    }

    fn stream(nals: &[Vec<u8>]) -> Vec<u8> {
        let mut w = AnnexBWriter::new(Vec::new());
        for n in nals {
            w.write_nal_unit(n).unwrap();
        }
        w.finish().unwrap()
    }

    fn split(bytes: &[u8]) -> Result<Vec<AccessUnit>> {
        AnnexBReader::new(bytes).collect()
    }

    /// NAL types of each access unit, and its IDR flag.
    fn shape(aus: &[AccessUnit]) -> Vec<(Vec<u8>, bool)> {
        aus.iter()
            .map(|au| (au.nal_units().map(|n| n[0] & 0x1f).collect(), au.is_idr))
            .collect()
    }

    #[test]
    fn groups_nal_units_into_access_units() {
        // (NAL units, expected grouping)
        type Case = (Vec<(u8, bool)>, Vec<(Vec<u8>, bool)>);
        let cases: Vec<Case> = vec![
            // SPS PPS SEI IDR | P | P: the x264 shape without delimiters.
            (
                vec![
                    (7, true),
                    (8, true),
                    (6, true),
                    (5, true),
                    (1, true),
                    (1, true),
                ],
                vec![(vec![7, 8, 6, 5], true), (vec![1], false), (vec![1], false)],
            ),
            // Two slices per picture: the second has first_mb_in_slice != 0.
            (
                vec![(5, true), (5, false), (1, true), (1, false)],
                vec![(vec![5, 5], true), (vec![1, 1], false)],
            ),
            // Delimiters start access units, end of stream stays with its picture.
            (
                vec![(9, true), (5, true), (9, true), (1, true), (11, true)],
                vec![(vec![9, 5], true), (vec![9, 1, 11], false)],
            ),
            // Parameter sets before a P slice start a new access unit.
            (
                vec![(1, true), (7, true), (8, true), (5, true)],
                vec![(vec![1], false), (vec![7, 8, 5], true)],
            ),
            // Only parameter sets: one access unit without a picture.
            (vec![(7, true), (8, true)], vec![(vec![7, 8], false)]),
        ];
        for (nals, want) in cases {
            let bytes = stream(&nals.iter().map(|&(t, z)| nal(t, z, 20)).collect::<Vec<_>>());
            let aus = split(&bytes).unwrap();
            assert_eq!(shape(&aus), want, "for {nals:?}");
            assert_eq!(
                aus.concat_data(),
                bytes,
                "access units must tile the stream"
            );
        }
    }

    trait Concat {
        fn concat_data(&self) -> Vec<u8>;
    }
    impl Concat for Vec<AccessUnit> {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|a| a.data.iter().copied()).collect()
        }
    }

    #[test]
    fn handles_three_byte_codes_trailing_zeros_and_large_units() {
        let mut bytes = vec![0, 0, 0]; // leading_zero_8bits
        bytes.extend([0, 0, 1]);
        bytes.extend(nal(5, true, 300_000)); // spans several reads
        bytes.extend([0, 0, 0, 0, 0, 1]); // trailing_zero_8bits
        bytes.extend(nal(1, true, 10));
        bytes.extend([0, 0, 1, 0, 0, 1]); // an empty NAL unit
        bytes.extend(nal(1, false, 10));
        let aus = split(&bytes).unwrap();
        assert_eq!(shape(&aus), vec![(vec![5], true), (vec![1, 1], false)]);
        assert_eq!(aus.concat_data(), bytes);
        assert_eq!(aus[0].nal_units().next().unwrap().len(), 300_002);
        assert!(aus[1].data.starts_with(&[0, 0, 0, 1, 0x61]));
    }

    #[test]
    fn bad_streams_are_errors_naming_the_offset() {
        let check = |bytes: &[u8], want: &str| {
            let err = split(bytes).expect_err(want);
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        };
        check(
            b"\x00\x00\x02\x00\x00\x01\x65",
            "bad stream start at byte 2",
        );
        check(b"garbage", "bad stream start at byte 0");
        check(&[0, 0, 0, 0], "only zero bytes");
        check(
            &[0, 0, 0, 1, 0x65, 0x88, 0, 0, 1, 0xe1, 0x88],
            "bad NAL unit header at byte 9",
        );
        assert_eq!(split(&[]).unwrap(), vec![]);
    }

    #[test]
    fn writer_adds_start_codes_only_when_missing() {
        let mut w = AnnexBWriter::new(Vec::new());
        w.write_access_unit(&[0, 0, 1, 0x65, 1]).unwrap();
        w.write_access_unit(&[0x41, 2]).unwrap();
        assert_eq!(
            w.finish().unwrap(),
            vec![0, 0, 1, 0x65, 1, 0, 0, 0, 1, 0x41, 2]
        );
    }
}
