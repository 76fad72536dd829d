use std::fmt;
use std::io;
use std::path::PathBuf;

/// A container format this crate reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// IVF holding VP8 frames (`.ivf`).
    Ivf,
    /// H.264 Annex-B byte stream (`.h264`, `.264`).
    AnnexB,
    /// Opus in Ogg (`.ogg`, `.opus`).
    OggOpus,
    /// RIFF WAVE PCM (`.wav`).
    Wav,
}

impl Format {
    /// True for the video formats (IVF, Annex-B).
    pub fn is_video(self) -> bool {
        matches!(self, Format::Ivf | Format::AnnexB)
    }

    /// True for the audio formats (Ogg Opus, WAV).
    pub fn is_audio(self) -> bool {
        !self.is_video()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Ivf => "IVF",
            Format::AnnexB => "H.264 Annex-B",
            Format::OggOpus => "Ogg Opus",
            Format::Wav => "WAV",
        })
    }
}

/// Everything that can go wrong reading or writing a container. Reading errors name the
/// format, the structure being read and the byte offset where the problem was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or created.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The underlying reader or writer failed (other than ending early).
    #[error("{format}: I/O error at byte {offset}: {source}")]
    Io {
        format: Format,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The input ended in the middle of a structure.
    #[error("{format}: input ends inside {what} at byte {offset}")]
    Truncated {
        format: Format,
        what: &'static str,
        offset: u64,
    },
    /// A structure does not follow the format.
    #[error("{format}: bad {what} at byte {offset}: {detail}")]
    Malformed {
        format: Format,
        what: &'static str,
        offset: u64,
        detail: String,
    },
    /// A valid structure this crate does not handle (e.g. 12-bit WAV, chained Ogg).
    #[error("{format}: unsupported {what} at byte {offset}: {detail}")]
    Unsupported {
        format: Format,
        what: &'static str,
        offset: u64,
        detail: String,
    },
    /// A writer was given something the format cannot hold.
    #[error("{format} writer: {detail}")]
    InvalidInput { format: Format, detail: String },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn malformed(
    format: Format,
    what: &'static str,
    offset: u64,
    detail: impl Into<String>,
) -> Error {
    Error::Malformed {
        format,
        what,
        offset,
        detail: detail.into(),
    }
}

pub(crate) fn unsupported(
    format: Format,
    what: &'static str,
    offset: u64,
    detail: impl Into<String>,
) -> Error {
    Error::Unsupported {
        format,
        what,
        offset,
        detail: detail.into(),
    }
}

pub(crate) fn invalid(format: Format, detail: impl Into<String>) -> Error {
    Error::InvalidInput {
        format,
        detail: detail.into(),
    }
}
