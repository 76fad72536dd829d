//! Opus in Ogg (RFC 7845): an `OpusHead` page, `OpusTags` page(s), then audio pages whose
//! granule positions count 48 kHz samples decoded so far, pre-skip included.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::{invalid, malformed, unsupported, Error, Format, Result};
use crate::ogg::{page_bytes, read_page, Page, FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, NO_GRANULE};
use crate::source::{u16_le, u32_le, Source};

const F: Format = Format::OggOpus;
/// Opus timestamps count samples at this rate whatever the input rate was.
pub const OPUS_RATE_HZ: u32 = 48_000;
/// The pre-skip libopus asks for (6.5 ms at 48 kHz).
pub const DEFAULT_PRE_SKIP: u16 = 312;
/// Longest Opus packet (120 ms).
pub const MAX_PACKET_SAMPLES: u32 = 5760;
/// Larger than any Opus packet or sane tag block.
const MAX_PACKET_BYTES: usize = 16 << 20;
/// The stream serial number the writer uses; a file holds one stream, so any value works.
const SERIAL: u32 = 0x7e55_e4a0;

/// Samples per channel (at 48 kHz) in an Opus packet, from its TOC byte and frame count
/// (RFC 6716 section 3.1). `None` for an empty packet, a code-3 packet without its frame
/// count byte or with 0 frames, or more than 120 ms.
pub fn opus_packet_duration(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = usize::from(toc >> 3);
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][config & 3], // SILK: 10, 20, 40, 60 ms
        12..=15 => [480, 960][config & 1],            // hybrid: 10, 20 ms
        _ => [120, 240, 480, 960][config & 3],        // CELT: 2.5, 5, 10, 20 ms
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    (frames > 0 && total <= MAX_PACKET_SAMPLES).then_some(total)
}

/// The identification header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusHead {
    pub version: u8,
    pub channels: u8,
    /// Samples (at 48 kHz) to drop from the start of the decoded output.
    pub pre_skip: u16,
    /// The rate the audio had before encoding; informational only.
    pub input_sample_rate_hz: u32,
    /// Gain to apply to the output, in dB as Q7.8.
    pub output_gain_q8: i16,
    /// 0 for mono/stereo; other families carry a mapping table this crate does not parse.
    pub channel_mapping_family: u8,
}

/// The comment header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpusTags {
    pub vendor: String,
    /// `KEY=value` strings.
    pub comments: Vec<String>,
}

/// One Opus packet with its timing in 48 kHz samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusPacket {
    pub data: Vec<u8>,
    /// Index of the packet's first decoded sample, counted from the start of decoding
    /// (pre-skip included, so the first packet of a file has pts 0). The presentation time
    /// is `pts - pre_skip`.
    pub pts: u64,
    /// Samples per channel the packet decodes to.
    pub duration: u32,
    /// Samples to drop from the end of this packet's output (end trimming, last page only).
    pub end_trim: u32,
}

/// Reads the first Opus stream of an Ogg file. Also an iterator of `Result<OpusPacket>` that
/// ends after the first error.
///
/// Pages of other logical streams are skipped; reading stops at the Opus stream's
/// end-of-stream page (a chained stream after it is not read). Packet timing comes from
/// each packet's TOC, anchored by the granule position of the first audio page; the last
/// page's granule position sets `end_trim`.
pub struct OggOpusReader<R> {
    src: Source<R>,
    serial: u32,
    head: Option<OpusHead>,
    tags: OpusTags,
    next_seq: u32,
    /// Bytes of a packet continued on the next page, and the offset of the page it began on.
    partial: Vec<u8>,
    partial_from: u64,
    packets_seen: u64,
    next_pts: Option<u64>,
    queue: VecDeque<OpusPacket>,
    ended: bool,
    failed: bool,
}

impl OggOpusReader<BufReader<File>> {
    /// Opens an Ogg Opus file.
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

impl<R: Read> OggOpusReader<R> {
    /// Reads up to the end of the headers (`OpusHead` and `OpusTags`).
    pub fn new(reader: R) -> Result<Self> {
        let mut r = OggOpusReader {
            src: Source::new(reader, F),
            serial: 0,
            head: None,
            tags: OpusTags::default(),
            next_seq: 0,
            partial: Vec::new(),
            partial_from: 0,
            packets_seen: 0,
            next_pts: None,
            queue: VecDeque::new(),
            ended: false,
            failed: false,
        };
        // Find the Opus stream among the beginning-of-stream pages.
        loop {
            let Some(page) = read_page(&mut r.src)? else {
                return Err(r.src.truncated("Ogg headers"));
            };
            if page.flags & FLAG_BOS == 0 {
                return Err(unsupported(
                    F,
                    "stream",
                    page.offset,
                    "no beginning-of-stream page with an OpusHead (not an Opus file?)",
                ));
            }
            if page.body.starts_with(b"OpusHead") {
                r.serial = page.serial;
                r.next_seq = page.seq;
                r.take_page(page)?;
                break;
            }
        }
        while r.packets_seen < 2 {
            r.read_stream_page("Opus headers")?;
        }
        Ok(r)
    }

    pub fn head(&self) -> &OpusHead {
        self.head.as_ref().expect("set by new")
    }

    pub fn tags(&self) -> &OpusTags {
        &self.tags
    }

    /// Reads the next page of the Opus stream into the queue; false at the end.
    fn read_stream_page(&mut self, what: &'static str) -> Result<bool> {
        loop {
            let Some(page) = read_page(&mut self.src)? else {
                if !self.partial.is_empty() {
                    return Err(self.src.truncated("packet continued on a missing page"));
                }
                if self.packets_seen < 2 {
                    return Err(self.src.truncated(what));
                }
                self.ended = true;
                return Ok(false);
            };
            if page.serial == self.serial {
                self.take_page(page)?;
                return Ok(true);
            }
        }
    }

    fn take_page(&mut self, page: Page) -> Result<()> {
        if page.seq != self.next_seq {
            return Err(malformed(
                F,
                "page sequence number",
                page.offset + 18,
                format!(
                    "expected {}, found {} (pages lost?)",
                    self.next_seq, page.seq
                ),
            ));
        }
        self.next_seq = page.seq.wrapping_add(1);
        let continued = page.flags & FLAG_CONTINUED != 0;
        if continued == self.partial.is_empty() {
            let detail = if continued {
                "page continues a packet that was never started"
            } else {
                "page does not continue the unfinished packet of the previous page"
            };
            return Err(malformed(
                F,
                "page continuation flag",
                page.offset + 5,
                detail,
            ));
        }
        // Complete packets ending on this page.
        let mut done = Vec::new();
        let mut at = 0;
        for &lace in &page.lacing {
            if self.partial.is_empty() {
                self.partial_from = page.offset;
            }
            let lace = usize::from(lace);
            self.partial.extend_from_slice(&page.body[at..at + lace]);
            at += lace;
            if self.partial.len() > MAX_PACKET_BYTES {
                return Err(malformed(
                    F,
                    "packet",
                    self.partial_from,
                    format!("longer than {MAX_PACKET_BYTES} bytes"),
                ));
            }
            if lace < 255 {
                done.push((std::mem::take(&mut self.partial), self.partial_from));
            }
        }
        let mut audio = Vec::new();
        for (data, offset) in done {
            match self.packets_seen {
                0 => self.head = Some(parse_head(&data, offset)?),
                1 => self.tags = parse_tags(&data, offset)?,
                _ => {
                    let duration = opus_packet_duration(&data).ok_or_else(|| {
                        malformed(
                            F,
                            "Opus packet",
                            offset,
                            format!("invalid TOC/frame count in a {}-byte packet", data.len()),
                        )
                    })?;
                    audio.push(OpusPacket {
                        data,
                        pts: 0,
                        duration,
                        end_trim: 0,
                    });
                }
            }
            self.packets_seen += 1;
        }
        let eos = page.flags & FLAG_EOS != 0;
        if !audio.is_empty() {
            self.time(&mut audio, &page, eos)?;
            self.queue.extend(audio);
        }
        if eos {
            self.ended = true;
        }
        Ok(())
    }

    /// Gives the page's packets their pts, and end trimming on the last page.
    fn time(&mut self, audio: &mut [OpusPacket], page: &Page, eos: bool) -> Result<()> {
        let sum: u64 = audio.iter().map(|p| u64::from(p.duration)).sum();
        let granule = page.granule;
        if granule == NO_GRANULE && (self.next_pts.is_none() || eos) {
            return Err(malformed(
                F,
                "granule position",
                page.offset + 6,
                "a page that ends packets has none",
            ));
        }
        let mut pts = match self.next_pts {
            Some(pts) => pts,
            // The first audio page anchors the timeline; only a last page may hold fewer
            // samples than its packets decode to.
            None if granule >= sum => granule - sum,
            None if eos => 0,
            None => {
                return Err(malformed(
                    F,
                    "granule position",
                    page.offset + 6,
                    format!(
                        "{granule} on the first audio page is less than its packets' {sum} samples"
                    ),
                ))
            }
        };
        for p in audio.iter_mut() {
            p.pts = pts;
            pts = pts.checked_add(u64::from(p.duration)).ok_or_else(|| {
                malformed(
                    F,
                    "granule position",
                    page.offset + 6,
                    "timestamps overflow 64 bits",
                )
            })?;
        }
        self.next_pts = Some(pts);
        if eos && granule < pts {
            let mut excess = pts - granule;
            for p in audio.iter_mut().rev() {
                let cut = excess.min(u64::from(p.duration));
                p.end_trim = cut as u32;
                excess -= cut;
            }
            if excess > 0 {
                return Err(malformed(
                    F,
                    "granule position",
                    page.offset + 6,
                    format!("{granule} on the last page trims more than the page holds"),
                ));
            }
        }
        Ok(())
    }

    /// The next audio packet, or `None` at the end of the stream.
    pub fn next_packet(&mut self) -> Result<Option<OpusPacket>> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Ok(Some(p));
            }
            if self.ended || !self.read_stream_page("Opus audio")? {
                return Ok(None);
            }
        }
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.src.into_inner()
    }
}

impl<R: Read> Iterator for OggOpusReader<R> {
    type Item = Result<OpusPacket>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_packet().transpose();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

fn parse_head(b: &[u8], offset: u64) -> Result<OpusHead> {
    let bad = |detail: String| malformed(F, "OpusHead", offset, detail);
    if b.len() < 19 || !b.starts_with(b"OpusHead") {
        return Err(bad(format!("{} bytes, not an OpusHead packet", b.len())));
    }
    let head = OpusHead {
        version: b[8],
        channels: b[9],
        pre_skip: u16_le(b, 10),
        input_sample_rate_hz: u32_le(b, 12),
        output_gain_q8: u16_le(b, 16) as i16,
        channel_mapping_family: b[18],
    };
    if head.version >> 4 != 0 {
        return Err(unsupported(
            F,
            "OpusHead version",
            offset,
            format!("{}", head.version),
        ));
    }
    if head.channels == 0 {
        return Err(bad("0 channels".into()));
    }
    if head.channel_mapping_family == 0 && head.channels > 2 {
        return Err(bad(format!(
            "{} channels with mapping family 0",
            head.channels
        )));
    }
    Ok(head)
}

fn parse_tags(b: &[u8], offset: u64) -> Result<OpusTags> {
    let bad = |detail: &str| malformed(F, "OpusTags", offset, detail.to_string());
    if !b.starts_with(b"OpusTags") {
        return Err(bad("second packet is not OpusTags"));
    }
    let mut at = 8;
    let string = |at: &mut usize| -> Result<String> {
        let len = b
            .get(*at..*at + 4)
            .map(|l| u32_le(l, 0) as usize)
            .ok_or_else(|| bad("ends inside a length"))?;
        let s = b
            .get(*at + 4..)
            .and_then(|rest| rest.get(..len))
            .ok_or_else(|| bad("a string runs past the packet"))?;
        *at += 4 + len;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    let vendor = string(&mut at)?;
    let count = b
        .get(at..at + 4)
        .map(|l| u32_le(l, 0))
        .ok_or_else(|| bad("ends inside the comment count"))?;
    at += 4;
    let mut comments = Vec::new();
    for _ in 0..count {
        comments.push(string(&mut at)?);
    }
    Ok(OpusTags { vendor, comments })
}

/// Writes an Ogg Opus file: `OpusHead` and `OpusTags` (vendor "tessera") pages first, then
/// audio pages of several packets each with granule positions from the packets' TOC bytes.
/// Call [`OggOpusWriter::finish`] to write the end-of-stream page.
pub struct OggOpusWriter<W: Write> {
    out: W,
    offset: u64,
    seq: u32,
    pre_skip: u16,
    /// Samples (pre-skip included) decoded by the end of the last packet written.
    granule: u64,
    /// Granule position of the last page written.
    written_granule: u64,
    packets_per_page: usize,
    lacing: Vec<u8>,
    body: Vec<u8>,
    /// Packets that end on the page being built.
    page_packets: usize,
    /// The page being built begins with the rest of a packet from the previous page.
    continued: bool,
}

impl OggOpusWriter<BufWriter<File>> {
    /// Creates (or truncates) an Ogg Opus file and writes its headers.
    pub fn create(path: impl AsRef<Path>, channels: u8, pre_skip: u16) -> Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| Error::File {
            action: "create",
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufWriter::new(file), channels, pre_skip)
    }
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the header pages for a mono (1) or stereo (2) stream. Use
    /// [`DEFAULT_PRE_SKIP`] unless the encoder reports its own lookahead.
    pub fn new(out: W, channels: u8, pre_skip: u16) -> Result<Self> {
        if !(1..=2).contains(&channels) {
            return Err(invalid(
                F,
                format!("{channels} channels; only mono and stereo are written"),
            ));
        }
        let mut w = OggOpusWriter {
            out,
            offset: 0,
            seq: 0,
            pre_skip,
            granule: 0,
            written_granule: 0,
            packets_per_page: 25,
            lacing: Vec::new(),
            body: Vec::new(),
            page_packets: 0,
            continued: false,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&OPUS_RATE_HZ.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        w.header_page(FLAG_BOS, &head)?;
        let vendor = b"tessera";
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        w.header_page(0, &tags)?;
        Ok(w)
    }

    /// How many packets go on one page (default 25, half a second of 20 ms packets).
    /// Fewer packets per page cost a little size and lose less if the writer dies.
    pub fn with_packets_per_page(mut self, packets: usize) -> Self {
        self.packets_per_page = packets.max(1);
        self
    }

    /// Samples (per channel, 48 kHz, pre-skip included) of the packets written so far.
    pub fn granule_position(&self) -> u64 {
        self.granule
    }

    fn header_page(&mut self, flags: u8, packet: &[u8]) -> Result<()> {
        // Header packets are small; a lacing table of 255 entries holds 64 KiB.
        let mut lacing = vec![255u8; packet.len() / 255];
        lacing.push((packet.len() % 255) as u8);
        if lacing.len() > 255 {
            return Err(invalid(F, "header packet too large for one page"));
        }
        let page = page_bytes(flags, 0, SERIAL, self.seq, &lacing, packet);
        self.seq += 1;
        self.put(&page)
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

    /// Writes the page being built. Its granule position is that of the last packet ending
    /// on it, or "none" if a single packet spans the whole page.
    fn flush_page(&mut self, eos: bool, granule: Option<u64>) -> Result<()> {
        let granule = match granule {
            Some(g) => g,
            None if self.page_packets > 0 => self.granule,
            None => NO_GRANULE,
        };
        let mut flags = if eos { FLAG_EOS } else { 0 };
        if self.continued {
            flags |= FLAG_CONTINUED;
        }
        let page = page_bytes(flags, granule, SERIAL, self.seq, &self.lacing, &self.body);
        self.seq += 1;
        self.put(&page)?;
        if granule != NO_GRANULE {
            self.written_granule = granule;
        }
        self.lacing.clear();
        self.body.clear();
        self.page_packets = 0;
        self.continued = false;
        Ok(())
    }

    /// Appends one Opus packet; its duration comes from its TOC byte.
    pub fn write_packet(&mut self, packet: &[u8]) -> Result<()> {
        let duration = opus_packet_duration(packet).ok_or_else(|| {
            invalid(
                F,
                format!("invalid Opus packet of {} bytes (bad TOC)", packet.len()),
            )
        })?;
        if self.page_packets >= self.packets_per_page {
            self.flush_page(false, None)?;
        }
        let mut rest = packet;
        loop {
            if self.lacing.len() == 255 {
                // The page is full mid-packet: the packet continues on the next page.
                self.flush_page(false, None)?;
                self.continued = true;
            }
            let lace = rest.len().min(255);
            self.lacing.push(lace as u8);
            self.body.extend_from_slice(&rest[..lace]);
            rest = &rest[lace..];
            if lace < 255 {
                break;
            }
        }
        self.page_packets += 1;
        self.granule += u64::from(duration);
        Ok(())
    }

    /// Writes the last page, flagged end-of-stream, and flushes.
    pub fn finish(self) -> Result<W> {
        let granule = self.granule;
        self.finish_at(granule)
    }

    /// Like [`OggOpusWriter::finish`], but the stream is `samples_per_channel` long (after
    /// pre-skip): the decoder drops what the last packets decode past that (end trimming).
    pub fn finish_with_length(self, samples_per_channel: u64) -> Result<W> {
        let end = u64::from(self.pre_skip) + samples_per_channel;
        if end > self.granule || end < self.written_granule {
            return Err(invalid(
                F,
                format!(
                    "length {samples_per_channel} must lie between {} and {} samples",
                    self.written_granule
                        .saturating_sub(u64::from(self.pre_skip)),
                    self.granule.saturating_sub(u64::from(self.pre_skip))
                ),
            ));
        }
        self.finish_at(end)
    }

    fn finish_at(mut self, granule: u64) -> Result<W> {
        self.flush_page(true, Some(granule))?;
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
    use crate::ogg;

    #[test]
    fn packet_duration_follows_rfc_6716() {
        // (packet, samples per channel at 48 kHz)
        let cases: &[(&[u8], Option<u32>)] = &[
            (&[0 << 3], Some(480)),                   // SILK NB 10 ms
            (&[3 << 3], Some(2880)),                  // SILK NB 60 ms
            (&[9 << 3], Some(960)),                   // SILK WB 20 ms
            (&[12 << 3], Some(480)),                  // hybrid SWB 10 ms
            (&[15 << 3], Some(960)),                  // hybrid FB 20 ms
            (&[16 << 3], Some(120)),                  // CELT NB 2.5 ms
            (&[31 << 3], Some(960)),                  // CELT FB 20 ms
            (&[(31 << 3) | 1], Some(1920)),           // two equal frames
            (&[(29 << 3) | 2], Some(480)),            // two frames of 5 ms
            (&[(31 << 3) | 3, 6], Some(5760)),        // six 20 ms frames = 120 ms
            (&[(31 << 3) | 3, 0x80 | 3], Some(2880)), // VBR and padding flags ignored
            (&[(3 << 3) | 3, 2], Some(5760)),         // 2 x 60 ms
            (&[(3 << 3) | 3, 3], None),               // 180 ms is too long
            (&[(31 << 3) | 3, 0], None),              // zero frames
            (&[(31 << 3) | 3], None),                 // missing frame count byte
            (&[], None),
        ];
        for &(packet, want) in cases {
            assert_eq!(opus_packet_duration(packet), want, "packet {packet:02x?}");
        }
    }

    /// A fake packet: CELT FB 20 ms (or 10 ms) with `len` bytes.
    fn packet(ms20: bool, len: usize, fill: u8) -> Vec<u8> {
        let mut p = vec![if ms20 { 31 << 3 } else { 30 << 3 }];
        p.resize(len.max(1), fill);
        p
    }

    fn write(packets: &[Vec<u8>], per_page: usize, length: Option<u64>) -> Vec<u8> {
        let mut w = OggOpusWriter::new(Vec::new(), 2, 312)
            .unwrap()
            .with_packets_per_page(per_page);
        for p in packets {
            w.write_packet(p).unwrap();
        }
        match length {
            Some(n) => w.finish_with_length(n).unwrap(),
            None => w.finish().unwrap(),
        }
    }

    #[test]
    fn round_trip_keeps_packets_and_timing() {
        let packets: Vec<Vec<u8>> = (0..40)
            .map(|i| packet(i % 3 != 0, [1, 80, 255, 510, 600, 70_000][i % 6], i as u8))
            .collect();
        for per_page in [1, 3, 25, 100] {
            let bytes = write(&packets, per_page, None);
            let mut r = OggOpusReader::new(&bytes[..]).unwrap();
            assert_eq!(r.head().channels, 2);
            assert_eq!(r.head().pre_skip, 312);
            assert_eq!(r.head().input_sample_rate_hz, 48_000);
            assert_eq!(r.tags().vendor, "tessera");
            let mut pts = 0;
            for (i, want) in packets.iter().enumerate() {
                let got = r
                    .next_packet()
                    .unwrap()
                    .unwrap_or_else(|| panic!("packet {i} missing"));
                assert_eq!(&got.data, want, "packet {i} with {per_page} per page");
                assert_eq!((got.pts, got.end_trim), (pts, 0), "packet {i}");
                pts += u64::from(got.duration);
            }
            assert!(r.next_packet().unwrap().is_none());
        }
    }

    #[test]
    fn end_trimming_round_trips() {
        let packets: Vec<Vec<u8>> = (0..5).map(|i| packet(true, 50, i)).collect();
        // 5 x 960 = 4800 samples, minus 312 pre-skip = 4488 playable; keep 4000.
        let bytes = write(&packets, 2, Some(4000));
        let got: Vec<OpusPacket> = OggOpusReader::new(&bytes[..])
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let trims: Vec<u32> = got.iter().map(|p| p.end_trim).collect();
        assert_eq!(trims, vec![0, 0, 0, 0, 488]);
        // Trimming past the last page's start is refused.
        let mut w = OggOpusWriter::new(Vec::new(), 1, 312)
            .unwrap()
            .with_packets_per_page(2);
        for p in &packets {
            w.write_packet(p).unwrap();
        }
        assert!(w.finish_with_length(100).is_err());
    }

    #[test]
    fn writer_refuses_what_it_cannot_write() {
        assert!(OggOpusWriter::new(Vec::new(), 3, 312).is_err());
        let mut w = OggOpusWriter::new(Vec::new(), 1, 312).unwrap();
        assert!(w.write_packet(&[]).is_err());
        assert!(w.write_packet(&[0xfb]).is_err()); // code 3 without a count byte
    }

    #[test]
    fn damaged_files_are_errors_naming_the_offset() {
        let packets: Vec<Vec<u8>> = (0..30).map(|i| packet(true, 100, i)).collect();
        let good = write(&packets, 5, None);
        let read_all =
            |bytes: &[u8]| -> Result<Vec<OpusPacket>> { OggOpusReader::new(bytes)?.collect() };
        assert_eq!(read_all(&good).unwrap().len(), 30);
        let check = |bytes: &[u8], want: &str| {
            let err = read_all(bytes).expect_err(want);
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        };
        check(&good[..20], "input ends inside page header at byte 20");
        check(
            b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\0\0\0",
            "bad page capture pattern at byte 0",
        );
        check(&good[..good.len() - 7], "input ends inside page body");
        let mut flipped = good.clone();
        flipped[200] ^= 1;
        check(&flipped, "bad page checksum");
        // Drop the third page (the first audio page): the sequence number jumps.
        let pages = split_pages(&good);
        let dropped: Vec<u8> = pages
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .flat_map(|(_, p)| p.clone())
            .collect();
        check(&dropped, "bad page sequence number");
        // Headers only: no audio packets, still a valid (empty) stream.
        let headers: Vec<u8> = pages[..2].concat();
        assert_eq!(read_all(&headers).unwrap(), vec![]);
        check(&pages[..1].concat(), "input ends inside Opus headers");
    }

    #[test]
    fn corrupt_pages_with_valid_checksums_never_panic() {
        let packets: Vec<Vec<u8>> = (0..40)
            .map(|i| packet(i % 2 == 0, [1, 300, 700][i % 3], i as u8))
            .collect();
        let good = write(&packets, 4, Some(28_000));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut pages = split_pages(&good);
            for _ in 0..1 + rand() % 3 {
                let page = (rand() as usize) % pages.len();
                let p = &mut pages[page];
                let at = match rand() % 3 {
                    0 => 4 + (rand() as usize) % 22, // header fields
                    _ => (rand() as usize) % p.len(),
                };
                p[at] ^= 1 << (rand() % 8);
                // Re-seal the page so the damage gets past the checksum.
                if p.len() >= 27 {
                    p[22..26].fill(0);
                    let crc = ogg::crc32(0, p);
                    p[22..26].copy_from_slice(&crc.to_le_bytes());
                }
            }
            let bytes = pages.concat();
            let _ = OggOpusReader::new(&bytes[..]).and_then(|r| r.collect::<Result<Vec<_>>>());
        }
    }

    fn split_pages(mut b: &[u8]) -> Vec<Vec<u8>> {
        let mut pages = Vec::new();
        while !b.is_empty() {
            let n = usize::from(b[26]);
            let len = 27 + n + b[27..27 + n].iter().map(|&l| usize::from(l)).sum::<usize>();
            pages.push(b[..len].to_vec());
            b = &b[len..];
        }
        pages
    }
}
