//! Media the tests and benches send, and what they read off the wire.

/// A 20 ms Opus packet (CELT, fullband) that decodes to silence.
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// A synthetic VP8 frame of `len` bytes (at least 10), its bytes drawn from `seed`; a keyframe
/// when `keyframe` gives its size. The SFU forwards bytes and never decodes: only the frame
/// tag's keyframe bit and a keyframe's start code and size are real (RFC 6386 §9.1).
pub fn vp8_frame(len: usize, seed: u64, keyframe: Option<(u16, u16)>) -> Vec<u8> {
    let mut f = vec![0u8; len];
    let mut x = seed;
    for b in f.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    match keyframe {
        Some((width, height)) => {
            f[..6].copy_from_slice(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a]);
            f[6..8].copy_from_slice(&width.to_le_bytes());
            f[8..10].copy_from_slice(&height.to_le_bytes());
        }
        None => f[0] |= 1,
    }
    f
}

/// The payload type an SDP `answer` gives `codec` (`VP8`, `H264`) on its video m-line.
pub fn payload_type(answer: &str, codec: &str) -> u8 {
    answer
        .lines()
        .find_map(|l| {
            let (pt, rest) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            rest.starts_with(&format!("{codec}/90000")).then(|| pt.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("the answer has no {codec} payload type:\n{answer}"))
}

/// The clear header of an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    pub ssrc: u32,
    pub seq: u16,
    pub time: u32,
}

/// The header of `datagram` if it is an RTP packet of payload type `pt`. RFC 7983: 128-191 is
/// RTP or RTCP; RTCP types 192-223 leave no room for a dynamic payload type (96-127) once the
/// marker bit is masked off. SRTP leaves the header clear.
pub fn rtp_header(datagram: &[u8], pt: u8) -> Option<RtpHeader> {
    let is = datagram.len() > 12 && (128..192).contains(&datagram[0]) && datagram[1] & 0x7f == pt;
    is.then(|| RtpHeader {
        seq: u16::from_be_bytes([datagram[2], datagram[3]]),
        time: u32::from_be_bytes(datagram[4..8].try_into().unwrap()),
        ssrc: u32::from_be_bytes(datagram[8..12].try_into().unwrap()),
    })
}
