//! Client-to-server frame reading (RFC 6455 §5) with no buffer while idle.
//!
//! fastwebsockets' reader keeps an 8 KiB buffer per connection for the connection's
//! whole life; with tens of thousands of mostly idle connections that buffer is most of
//! a connection's memory. This reader waits for the socket to become *readable* with no
//! buffer at all, allocates only while bytes are arriving (exactly the frame's size for
//! large frames), and drops its buffer as soon as it is empty again.
//!
//! It enforces what a server must: every client frame masked, reserved bits clear, known
//! opcodes, control frames unfragmented and at most 125 bytes, and a frame no larger
//! than the message cap (checked from the header, before reading the payload).
//! [`FrameReader::next`] is cancel-safe: all state lives in `self`.

use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedReadHalf;

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// One frame, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawFrame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: BytesMut,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The peer closed the socket (or it failed).
    Eof,
    /// A frame broke the protocol.
    Protocol,
    /// A frame is larger than the cap.
    TooBig,
}

/// The smallest read buffer allocated when bytes arrive.
const MIN_READ: usize = 2048;

pub(crate) struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    max_frame: usize,
}

/// What the reader needs from a socket: wait until readable, then read without waiting.
pub(crate) trait ReadySource {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize>;
}

impl ReadySource for OwnedReadHalf {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        OwnedReadHalf::readable(self)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        OwnedReadHalf::try_read_buf(self, buf)
    }
}

impl<R: ReadySource> FrameReader<R> {
    /// `pending`: bytes the HTTP layer already read past the handshake.
    pub(crate) fn new(rd: R, pending: &[u8], max_frame: usize) -> Self {
        Self {
            rd,
            buf: BytesMut::from(pending),
            max_frame,
        }
    }

    /// The next frame. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<RawFrame, ReadError> {
        loop {
            match parse(&mut self.buf, self.max_frame)? {
                Parsed::Frame(frame) => {
                    if self.buf.is_empty() {
                        // Give the allocation back while idle (the frame's payload keeps
                        // its own part alive until it is dropped).
                        self.buf = BytesMut::new();
                    }
                    return Ok(frame);
                }
                Parsed::Need(total) => {
                    self.rd.readable().await.map_err(|_| ReadError::Eof)?;
                    let want = total.saturating_sub(self.buf.len()).max(MIN_READ);
                    self.buf.reserve(want);
                    match self.rd.try_read_buf(&mut self.buf) {
                        Ok(0) => return Err(ReadError::Eof),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(ReadError::Eof),
                    }
                }
            }
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.rd
    }
}

enum Parsed {
    Frame(RawFrame),
    /// At least this many bytes (header and payload) are needed in the buffer.
    Need(usize),
}

fn parse(buf: &mut BytesMut, max_frame: usize) -> Result<Parsed, ReadError> {
    if buf.len() < 2 {
        return Ok(Parsed::Need(2));
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol); // no extension is negotiated
    }
    let opcode = b0 & 0x0F;
    let control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        _ => return Err(ReadError::Protocol),
    };
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol); // client frames must be masked
    }
    let (len, header) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(Parsed::Need(4));
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(Parsed::Need(10));
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(ReadError::Protocol);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if control && (!fin || len > 125) {
        return Err(ReadError::Protocol);
    }
    if len > max_frame as u64 {
        return Err(ReadError::TooBig);
    }
    let len = len as usize;
    let total = header + 4 + len;
    if buf.len() < total {
        return Ok(Parsed::Need(total));
    }
    let mask = [
        buf[header],
        buf[header + 1],
        buf[header + 2],
        buf[header + 3],
    ];
    buf.advance(header + 4);
    let mut payload = buf.split_to(len);
    fastwebsockets::unmask(&mut payload, mask);
    Ok(Parsed::Frame(RawFrame {
        fin,
        opcode,
        payload,
    }))
}

/// Whether a received close code may appear on the wire (RFC 6455 §7.4).
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn parse_all(bytes: &[u8], max: usize) -> Result<Vec<RawFrame>, ReadError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match parse(&mut buf, max)? {
                Parsed::Frame(f) => out.push(f),
                Parsed::Need(_) => return Ok(out),
            }
        }
    }

    #[test]
    fn parses_masked_frames_of_every_length_form_in_pieces() {
        let mut wire = Vec::new();
        for n in [0usize, 5, 125, 126, 300, 65535, 65536, 70_000] {
            wire.extend(masked(true, OP_TEXT, &vec![b'a'; n]));
        }
        wire.extend(masked(true, OP_PING, b"hi"));
        let frames = parse_all(&wire, 1 << 20).expect("valid");
        assert_eq!(frames.len(), 9);
        assert_eq!(frames[7].payload.len(), 70_000);
        assert!(frames[7].payload.iter().all(|b| *b == b'a'));
        assert_eq!(
            (frames[8].opcode, &frames[8].payload[..]),
            (OP_PING, &b"hi"[..])
        );
        // Fed one byte at a time, the same frames come out.
        let mut buf = BytesMut::new();
        let mut got = 0;
        for b in &wire {
            buf.extend_from_slice(&[*b]);
            while let Ok(Parsed::Frame(_)) = parse(&mut buf, 1 << 20) {
                got += 1;
            }
        }
        assert_eq!(got, 9);
    }

    #[test]
    fn refuses_what_a_server_must_refuse() {
        let mut unmasked = masked(true, OP_TEXT, b"x");
        unmasked[1] &= 0x7F;
        assert_eq!(parse_all(&unmasked, 100), Err(ReadError::Protocol));
        let mut rsv = masked(true, OP_TEXT, b"x");
        rsv[0] |= 0x40;
        assert_eq!(parse_all(&rsv, 100), Err(ReadError::Protocol));
        assert_eq!(
            parse_all(&masked(true, 0x3, b"x"), 100),
            Err(ReadError::Protocol)
        );
        assert_eq!(
            parse_all(&masked(false, OP_PING, b"x"), 100),
            Err(ReadError::Protocol)
        );
        assert_eq!(
            parse_all(&masked(true, OP_CLOSE, &[b'a'; 126]), 1000),
            Err(ReadError::Protocol)
        );
        // Too big is known from the header alone.
        let head = &masked(true, OP_BINARY, &[0; 200])[..4];
        assert_eq!(parse_all(head, 100), Err(ReadError::TooBig));
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1003, 1007, 1011, 3000, 4999] {
            assert!(close_code_allowed(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!close_code_allowed(bad), "{bad}");
        }
    }

    struct Script(std::sync::Mutex<Vec<Vec<u8>>>);

    impl ReadySource for Script {
        async fn readable(&self) -> std::io::Result<()> {
            Ok(())
        }

        fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
            let mut chunks = self
                .0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            if chunks.is_empty() {
                return Ok(0);
            }
            let c = chunks.remove(0);
            buf.extend_from_slice(&c);
            Ok(c.len())
        }
    }

    #[tokio::test]
    async fn the_buffer_is_released_when_empty() {
        let a = masked(true, OP_TEXT, b"hello");
        let (x, y) = a.split_at(3);
        let mut r = FrameReader::new(
            Script(std::sync::Mutex::new(vec![x.to_vec(), y.to_vec()])),
            b"",
            100,
        );
        let f = r.next().await.expect("frame");
        assert_eq!(&f.payload[..], b"hello");
        assert_eq!(r.buf.capacity(), 0, "no buffer held while idle");
        assert_eq!(r.next().await, Err(ReadError::Eof));
    }
}
