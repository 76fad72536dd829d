//! Ogg pages (RFC 3533): just enough to carry one Opus stream.

use std::io::Read;

use crate::error::{malformed, unsupported, Format, Result};
use crate::source::{u32_le, u64_le, Source};

const F: Format = Format::OggOpus;
pub(crate) const FLAG_CONTINUED: u8 = 1;
pub(crate) const FLAG_BOS: u8 = 2;
pub(crate) const FLAG_EOS: u8 = 4;
pub(crate) const HEADER_LEN: usize = 27;
/// "No packet ends on this page".
pub(crate) const NO_GRANULE: u64 = u64::MAX;

pub(crate) struct Page {
    /// Byte offset of the page's capture pattern.
    pub offset: u64,
    pub flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub seq: u32,
    pub lacing: Vec<u8>,
    pub body: Vec<u8>,
}

/// Reads the next page; `None` at a clean end of input (between pages).
pub(crate) fn read_page<R: Read>(src: &mut Source<R>) -> Result<Option<Page>> {
    let offset = src.offset;
    let mut h = [0u8; HEADER_LEN];
    if !src.read_exact_or_end(&mut h, "page header")? {
        return Ok(None);
    }
    if &h[0..4] != b"OggS" {
        return Err(malformed(
            F,
            "page capture pattern",
            offset,
            format!("expected \"OggS\", found {:02x?}", &h[0..4]),
        ));
    }
    if h[4] != 0 {
        return Err(unsupported(
            F,
            "Ogg version",
            offset + 4,
            format!("{}", h[4]),
        ));
    }
    let mut lacing = vec![0u8; h[26] as usize];
    src.read_exact(&mut lacing, "page segment table")?;
    let body_len: u64 = lacing.iter().map(|&l| u64::from(l)).sum();
    let body = src.read_vec(body_len, "page body")?;
    let stored = u32_le(&h, 22);
    h[22..26].fill(0);
    let computed = crc32(crc32(crc32(0, &h), &lacing), &body);
    if stored != computed {
        return Err(malformed(
            F,
            "page checksum",
            offset + 22,
            format!("stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    Ok(Some(Page {
        offset,
        flags: h[5],
        granule: u64_le(&h, 6),
        serial: u32_le(&h, 14),
        seq: u32_le(&h, 18),
        lacing,
        body,
    }))
}

/// Serialises a page, computing its checksum. `lacing` must hold at most 255 values that
/// sum to `body.len()`.
pub(crate) fn page_bytes(
    flags: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    lacing: &[u8],
    body: &[u8],
) -> Vec<u8> {
    debug_assert!(lacing.len() <= 255);
    debug_assert_eq!(
        lacing.iter().map(|&l| l as usize).sum::<usize>(),
        body.len()
    );
    let mut page = Vec::with_capacity(HEADER_LEN + lacing.len() + body.len());
    page.extend_from_slice(b"OggS");
    page.push(0);
    page.push(flags);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&serial.to_le_bytes());
    page.extend_from_slice(&seq.to_le_bytes());
    page.extend_from_slice(&[0; 4]);
    page.push(lacing.len() as u8);
    page.extend_from_slice(lacing);
    page.extend_from_slice(body);
    let crc = crc32(0, &page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    page
}

/// The Ogg checksum: CRC-32 with polynomial 0x04c11db7, MSB first, no reflection, initial
/// value 0 and no final XOR.
pub(crate) fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize];
    }
    crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_values() {
        // CRC-32/POSIX (check 0x765e7680) without its final inversion.
        assert_eq!(crc32(0, b""), 0);
        assert_eq!(crc32(0, b"123456789"), 0x89a1_897f);
        // Incremental equals one-shot.
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), crc32(0, b"123456789"));
    }

    #[test]
    fn page_round_trip() {
        let bytes = page_bytes(FLAG_BOS, 42, 7, 3, &[3, 0], b"abc");
        let mut src = Source::new(&bytes[..], F);
        let page = read_page(&mut src).unwrap().unwrap();
        assert_eq!(
            (page.flags, page.granule, page.serial, page.seq),
            (FLAG_BOS, 42, 7, 3)
        );
        assert_eq!(
            (page.lacing.as_slice(), page.body.as_slice()),
            (&[3u8, 0][..], &b"abc"[..])
        );
        assert!(read_page(&mut src).unwrap().is_none());
    }
}
