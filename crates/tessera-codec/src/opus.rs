//! Opus through libopus (crate `opus`), 48 kHz mono.

use opus::{Application, Bitrate, Channels};

use crate::{AudioDecoder, AudioEncoder, CodecError, FRAME_SAMPLES, SAMPLE_RATE_HZ};

const CODEC: &str = "Opus";
/// The longest Opus packet: 120 ms.
const MAX_SAMPLES: usize = 5760;

pub struct OpusDecoder {
    inner: opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, CodecError> {
        let inner =
            opus::Decoder::new(SAMPLE_RATE_HZ, Channels::Mono).map_err(|e| CodecError::Init {
                codec: CODEC,
                reason: e.to_string(),
            })?;
        Ok(OpusDecoder { inner })
    }
}

impl AudioDecoder for OpusDecoder {
    fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        out.resize(MAX_SAMPLES, 0);
        if packet.is_empty() {
            out.clear();
            return Err(CodecError::CorruptBitstream {
                codec: CODEC,
                reason: "empty packet".into(),
            });
        }
        match self.inner.decode(packet, out, false) {
            Ok(n) => {
                out.truncate(n);
                Ok(())
            }
            Err(e) => {
                out.clear();
                Err(CodecError::CorruptBitstream {
                    codec: CODEC,
                    reason: e.to_string(),
                })
            }
        }
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<(), CodecError> {
        // libopus conceals in multiples of 2.5 ms; round up and trim.
        let n = samples.div_ceil(120) * 120;
        out.resize(n.clamp(120, MAX_SAMPLES), 0);
        match self.inner.decode(&[], out, false) {
            Ok(got) => {
                out.truncate(got.min(samples));
                Ok(())
            }
            Err(e) => {
                out.clear();
                Err(CodecError::CorruptBitstream {
                    codec: CODEC,
                    reason: e.to_string(),
                })
            }
        }
    }
}

pub struct OpusEncoder {
    inner: opus::Encoder,
    buf: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(bitrate_bps: u32) -> Result<OpusEncoder, CodecError> {
        let init = |e: opus::Error| CodecError::Init {
            codec: CODEC,
            reason: e.to_string(),
        };
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE_HZ, Channels::Mono, Application::Voip).map_err(init)?;
        inner
            .set_bitrate(Bitrate::Bits(bitrate_bps as i32))
            .map_err(init)?;
        // In-band FEC: a lost packet is rebuilt from the next one. It costs bitrate only
        // once the loss the listener reports (set_packet_loss_pct) is above zero.
        inner.set_inband_fec(true).map_err(init)?;
        Ok(OpusEncoder {
            inner,
            buf: vec![0; 4000],
        })
    }
}

impl AudioEncoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, CodecError> {
        if pcm.len() != FRAME_SAMPLES {
            return Err(CodecError::InvalidInput {
                what: "audio frame",
                reason: format!(
                    "{} samples, expected {FRAME_SAMPLES} (20 ms at 48 kHz)",
                    pcm.len()
                ),
            });
        }
        let n = self
            .inner
            .encode(pcm, &mut self.buf)
            .map_err(|e| CodecError::Encode {
                codec: CODEC,
                reason: e.to_string(),
            })?;
        Ok(self.buf[..n].to_vec())
    }

    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        self.inner
            .set_bitrate(Bitrate::Bits(bitrate_bps as i32))
            .map_err(|e| CodecError::Encode {
                codec: CODEC,
                reason: e.to_string(),
            })
    }

    fn set_packet_loss_pct(&mut self, loss_pct: u8) -> Result<(), CodecError> {
        self.inner
            .set_packet_loss_perc(loss_pct.min(100) as i32)
            .map_err(|e| CodecError::Encode {
                codec: CODEC,
                reason: e.to_string(),
            })
    }
}
