//! Small value types shared by every Tessera crate: ids, codecs and colours.
//!
//! Owns nothing but plain data. Must not depend on any other Tessera crate or do IO.
//!
//! ```
//! use tessera_types::{ParticipantId, Rgb, VideoCodec};
//! let id = ParticipantId(7);
//! assert_eq!(id.to_string(), "p7");
//! assert_eq!("vp8".parse::<VideoCodec>().unwrap(), VideoCodec::Vp8);
//! assert_eq!(Rgb::parse_hex("#ff0000").unwrap(), Rgb { r: 255, g: 0, b: 0 });
//! ```

use std::fmt;
use std::str::FromStr;

/// A participant inside one room. Assigned by the room owner in join order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A room name as given by clients or the config file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub String);

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Video codecs Tessera decodes and encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    Vp8,
}

impl VideoCodec {
    pub fn as_str(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Vp8 => "vp8",
        }
    }
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCodec(pub String);

impl fmt::Display for UnknownCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown video codec {:?}: expected h264 or vp8", self.0)
    }
}

impl std::error::Error for UnknownCodec {}

impl FromStr for VideoCodec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "h264" | "avc" => Ok(VideoCodec::H264),
            "vp8" => Ok(VideoCodec::Vp8),
            _ => Err(UnknownCodec(s.to_string())),
        }
    }
}

/// An 8-bit sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Rgb {
    pub const BLACK: Rgb = Rgb { r: 0, g: 0, b: 0 };
    pub const WHITE: Rgb = Rgb {
        r: 255,
        g: 255,
        b: 255,
    };

    /// Parses `#rrggbb` (the `#` is optional).
    pub fn parse_hex(s: &str) -> Option<Rgb> {
        let h = s.strip_prefix('#').unwrap_or(s);
        if h.len() != 6 || !h.is_ascii() {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).ok();
        Some(Rgb {
            r: byte(0)?,
            g: byte(2)?,
            b: byte(4)?,
        })
    }

    /// BT.601 limited-range YUV, the matrix browsers assume for untagged WebRTC video.
    pub fn to_yuv(self) -> Yuv {
        let (r, g, b) = (self.r as i32, self.g as i32, self.b as i32);
        let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
        let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
        let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
        Yuv {
            y: y.clamp(0, 255) as u8,
            u: u.clamp(0, 255) as u8,
            v: v.clamp(0, 255) as u8,
        }
    }
}

/// One YUV sample triple (BT.601 limited range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Yuv {
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

impl Yuv {
    /// Inverse of [`Rgb::to_yuv`], clamped.
    pub fn to_rgb(self) -> Rgb {
        let c = self.y as i32 - 16;
        let d = self.u as i32 - 128;
        let e = self.v as i32 - 128;
        let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
        Rgb {
            r: clamp(298 * c + 409 * e),
            g: clamp(298 * c - 100 * d - 208 * e),
            b: clamp(298 * c + 516 * d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_yuv_round_trip_is_close() {
        for rgb in [
            Rgb::BLACK,
            Rgb::WHITE,
            Rgb { r: 255, g: 0, b: 0 },
            Rgb {
                r: 0,
                g: 200,
                b: 40,
            },
            Rgb {
                r: 30,
                g: 60,
                b: 220,
            },
        ] {
            let back = rgb.to_yuv().to_rgb();
            for (a, b) in [(rgb.r, back.r), (rgb.g, back.g), (rgb.b, back.b)] {
                assert!((a as i32 - b as i32).abs() <= 3, "{rgb:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn hex_parsing_rejects_garbage() {
        assert_eq!(Rgb::parse_hex("#12345"), None);
        assert_eq!(Rgb::parse_hex("zzzzzz"), None);
        assert_eq!(Rgb::parse_hex("00ff00"), Some(Rgb { r: 0, g: 255, b: 0 }));
    }
}
