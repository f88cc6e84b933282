//! Reassembles fragmented WebSocket messages with a cap on the whole message (the
//! library's limit applies per frame only) and checks text as it arrives, so invalid
//! UTF-8 fails on the fragment that carries it.

use bytes::{Bytes, BytesMut};

use super::reader::{OP_BINARY, OP_CONTINUATION, OP_TEXT, RawFrame};

/// A complete message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Text(Bytes),
    Binary(Bytes),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AssembleError {
    /// A continuation without a start, or a new message inside a fragmented one.
    Protocol,
    TooBig,
    InvalidUtf8,
}

pub(crate) struct Assembler {
    max: usize,
    buf: BytesMut,
    /// The message in progress: `Some(is_text)`.
    open: Option<bool>,
    /// Bytes of `buf` already checked to be valid UTF-8.
    valid: usize,
}

impl Assembler {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            buf: BytesMut::new(),
            open: None,
            valid: 0,
        }
    }

    /// Feeds a data frame (text, binary or continuation). `Ok(Some)` completes a message.
    pub(crate) fn push(&mut self, frame: RawFrame) -> Result<Option<Message>, AssembleError> {
        let is_text = match frame.opcode {
            OP_TEXT | OP_BINARY if self.open.is_some() => {
                return Err(AssembleError::Protocol);
            }
            OP_TEXT => true,
            OP_BINARY => false,
            OP_CONTINUATION => self.open.ok_or(AssembleError::Protocol)?,
            _ => return Ok(None),
        };
        if frame.fin && self.open.is_none() {
            // The common case: one unfragmented frame, no copy.
            if frame.payload.len() > self.max {
                return Err(AssembleError::TooBig);
            }
            if is_text && std::str::from_utf8(&frame.payload).is_err() {
                return Err(AssembleError::InvalidUtf8);
            }
            let bytes = frame.payload.freeze();
            return Ok(Some(if is_text {
                Message::Text(bytes)
            } else {
                Message::Binary(bytes)
            }));
        }
        if self.buf.len() + frame.payload.len() > self.max {
            return Err(AssembleError::TooBig);
        }
        self.open = Some(is_text);
        self.buf.extend_from_slice(&frame.payload);
        if is_text {
            match std::str::from_utf8(&self.buf[self.valid..]) {
                Ok(_) => self.valid = self.buf.len(),
                Err(e) if e.error_len().is_some() => return Err(AssembleError::InvalidUtf8),
                // An incomplete sequence at the end may be completed by the next fragment.
                Err(e) => self.valid += e.valid_up_to(),
            }
            if frame.fin && self.valid != self.buf.len() {
                return Err(AssembleError::InvalidUtf8);
            }
        }
        if !frame.fin {
            return Ok(None);
        }
        self.open = None;
        self.valid = 0;
        let bytes = std::mem::take(&mut self.buf).freeze();
        Ok(Some(if is_text {
            Message::Text(bytes)
        } else {
            Message::Binary(bytes)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, data: &[u8]) -> RawFrame {
        RawFrame {
            fin,
            opcode,
            payload: BytesMut::from(data),
        }
    }

    #[test]
    fn joins_fragments_and_checks_utf8_across_boundaries() {
        let mut a = Assembler::new(100);
        let euro = "€".as_bytes(); // 3 bytes, split across fragments
        assert_eq!(a.push(frame(false, OP_TEXT, &[b'a', euro[0]])), Ok(None));
        assert_eq!(a.push(frame(false, OP_CONTINUATION, &euro[1..2])), Ok(None));
        assert_eq!(
            a.push(frame(true, OP_CONTINUATION, &euro[2..])),
            Ok(Some(Message::Text(Bytes::from("a€"))))
        );
        assert_eq!(
            a.push(frame(true, OP_BINARY, &[0xff])),
            Ok(Some(Message::Binary(Bytes::from_static(&[0xff]))))
        );
    }

    #[test]
    fn refuses_bad_sequences_oversize_and_invalid_text() {
        let mut a = Assembler::new(10);
        assert_eq!(
            a.push(frame(true, OP_CONTINUATION, b"x")),
            Err(AssembleError::Protocol)
        );
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(false, OP_TEXT, b"x")), Ok(None));
        assert_eq!(
            a.push(frame(true, OP_TEXT, b"y")),
            Err(AssembleError::Protocol)
        );
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(false, OP_BINARY, &[0; 6])), Ok(None));
        assert_eq!(
            a.push(frame(true, OP_CONTINUATION, &[0; 6])),
            Err(AssembleError::TooBig)
        );
        let mut a = Assembler::new(10);
        assert_eq!(
            a.push(frame(false, OP_TEXT, &[0xC3, 0x28])),
            Err(AssembleError::InvalidUtf8)
        );
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(false, OP_TEXT, &[b'a', 0xE2])), Ok(None));
        assert_eq!(
            a.push(frame(true, OP_CONTINUATION, &[])),
            Err(AssembleError::InvalidUtf8)
        );
    }

    #[test]
    fn a_single_text_frame_is_checked_too() {
        let mut a = Assembler::new(10);
        assert_eq!(
            a.push(frame(true, OP_TEXT, &[b'{', 0xC3, 0x28])),
            Err(AssembleError::InvalidUtf8)
        );
        assert_eq!(
            a.push(frame(true, OP_TEXT, "é".as_bytes())),
            Ok(Some(Message::Text(Bytes::from("é"))))
        );
    }
}
