//! Server-to-client WebSocket frame encoding (RFC 6455 §5.2). Server frames are never
//! masked, so a frame is a 2-10 byte header and the payload; the writer appends many
//! of them to one buffer and writes the batch with a single call.

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Header length for a payload of `len` bytes.
pub(crate) fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends one unfragmented frame (FIN set) to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    match len {
        0..=125 => out.push(len as u8),
        126..=65535 => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and a reason truncated to fit 125 bytes.
pub(crate) fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = Vec::with_capacity(2 + reason.len().min(123));
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(out, OP_CLOSE, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_three_length_forms() {
        for (len, head) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let mut out = Vec::new();
            encode(&mut out, OP_TEXT, &vec![b'a'; len]);
            assert_eq!(out.len(), head + len);
            assert_eq!(header_len(len), head);
            assert_eq!(out[0], 0x81);
        }
        let mut out = Vec::new();
        encode(&mut out, OP_TEXT, &[b'x'; 300]);
        assert_eq!(&out[..4], &[0x81, 126, 1, 44]);
    }

    #[test]
    fn close_frames_carry_code_and_bounded_reason() {
        let mut out = Vec::new();
        encode_close(&mut out, 1013, "slow consumer");
        assert_eq!(&out[..4], &[0x88, 15, 0x03, 0xF5]);
        let mut out = Vec::new();
        encode_close(&mut out, 1000, &"é".repeat(100));
        assert!(out.len() <= 2 + 125);
    }
}
