//! A byte source that knows its offset and turns IO failures into this crate's errors.

use std::io::{self, ErrorKind, Read};

use crate::error::{Error, Format, Result};

pub(crate) struct Source<R> {
    inner: R,
    pub(crate) offset: u64,
    format: Format,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R, format: Format) -> Self {
        Source {
            inner,
            offset: 0,
            format,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn io(&self, source: io::Error) -> Error {
        Error::Io {
            format: self.format,
            offset: self.offset,
            source,
        }
    }

    /// Fills as much of `buf` as the input has; returns how many bytes were read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(got)
    }

    /// Reads exactly `buf.len()` bytes; an early end is `Truncated` naming `what`.
    pub(crate) fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        let got = self.fill(buf)?;
        if got < buf.len() {
            return Err(self.truncated(what));
        }
        Ok(())
    }

    /// Like `read_exact`, but a clean end of input before the first byte gives `Ok(false)`.
    pub(crate) fn read_exact_or_end(&mut self, buf: &mut [u8], what: &'static str) -> Result<bool> {
        let got = self.fill(buf)?;
        match got {
            0 if !buf.is_empty() => Ok(false),
            n if n < buf.len() => Err(self.truncated(what)),
            _ => Ok(true),
        }
    }

    /// Reads `len` bytes into a new vector without trusting `len` for the allocation.
    pub(crate) fn read_vec(&mut self, len: u64, what: &'static str) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
        let mut chunk = [0u8; 8192];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            let got = self.fill(&mut chunk[..n])?;
            out.extend_from_slice(&chunk[..got]);
            if got < n {
                return Err(self.truncated(what));
            }
            left -= n as u64;
        }
        Ok(out)
    }

    /// Skips `len` bytes.
    pub(crate) fn skip(&mut self, len: u64, what: &'static str) -> Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(len), &mut io::sink());
        match copied {
            Ok(n) => {
                self.offset += n;
                if n < len {
                    return Err(self.truncated(what));
                }
                Ok(())
            }
            Err(e) => Err(self.io(e)),
        }
    }

    /// Reads up to `buf.len()` bytes (fewer only at the end of input).
    pub(crate) fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.fill(buf)
    }

    pub(crate) fn truncated(&self, what: &'static str) -> Error {
        Error::Truncated {
            format: self.format,
            what,
            offset: self.offset,
        }
    }
}

pub(crate) fn u16_le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
