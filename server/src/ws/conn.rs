//! One WebSocket connection after the upgrade: a reader loop on this task and a
//! [`writer`](super::writer) task, so a slow socket write never delays reading and every
//! byte to the client leaves through one place (pongs and close replies included).
//!
//! The reader ([`FrameReader`]) holds no buffer while the connection is idle. It
//! reassembles fragments under the message-size cap and feeds text to the [`Session`];
//! protocol violations close with the code from [`Disconnect`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::upgrade::UpgradeFut;
use hyper_util::rt::TokioIo;
use roomcast_engine::ids::MessageId;
use roomcast_engine::metrics as m;
use roomcast_engine::outbox::Control;
use roomcast_engine::{ClientError, Disconnect, ErrorCode, Session};
use tokio::net::TcpStream;

use super::assemble::{AssembleError, Assembler, Message};
use super::reader::{FrameReader, OP_CLOSE, OP_PING, OP_PONG, ReadError, close_code_allowed};
use super::writer::{self, Heard, WriterEnd};

/// Per-connection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnOptions {
    pub max_message_bytes: usize,
    pub write_timeout: Duration,
    pub ping_interval: Option<Duration>,
    /// The token's `exp` (Unix seconds): the connection closes then.
    pub token_expires_at: u64,
    /// Echo every message back instead of speaking the chat protocol.
    pub echo: bool,
}

enum ReadEnd {
    PeerClosed,
    Eof,
    Violation(Disconnect),
    WriterEnded(WriterEnd),
}

/// How long a closing connection waits for the peer's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn serve(
    upgrade: UpgradeFut,
    mut session: Session,
    opts: ConnOptions,
    initial: Option<(String, Option<MessageId>)>,
) {
    let upgraded = match upgrade.await {
        Ok(ws) => ws.into_inner().into_inner(),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    // The raw TCP stream: split without a lock, and readable() lets the reader wait
    // with no buffer. Bytes the HTTP layer read past the handshake come along.
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream; closing it");
            return;
        }
    };
    let (rd, w) = parts.io.into_inner().into_split();
    let mut reader = FrameReader::new(rd, &parts.read_buf, opts.max_message_bytes);
    drop(parts.read_buf);

    let outbox = session.outbox().clone();
    let heard = Arc::new(Heard::default());
    let writer_opts = writer::WriterOptions {
        write_timeout: opts.write_timeout,
        ping_interval: opts.ping_interval,
        token_expires_at: opts.token_expires_at,
        heard: heard.clone(),
    };
    let mut writer = tokio::spawn(writer::run(w, outbox.clone(), writer_opts));
    metrics::counter!(m::CONNECTS).increment(1);
    let user_id = session.user().user_id.clone();
    tracing::debug!(conn = session.id(), %user_id, "connected");

    if let Some((room, since)) = initial
        && let Err(e) = session.join(&room, since).await
    {
        session.send_error(&e);
    }

    let mut assembler = Assembler::new(opts.max_message_bytes);
    let end = loop {
        // Both branches are cancel-safe (the reader keeps its state in itself).
        let read = tokio::select! {
            biased;
            done = &mut writer => break ReadEnd::WriterEnded(done.unwrap_or(WriterEnd::Failed("writer_panicked"))),
            read = reader.next() => read,
        };
        let frame = match read {
            Ok(frame) => frame,
            Err(ReadError::Eof) => break ReadEnd::Eof,
            Err(ReadError::Protocol) => break ReadEnd::Violation(Disconnect::PROTOCOL_ERROR),
            Err(ReadError::TooBig) => break ReadEnd::Violation(Disconnect::TOO_BIG),
        };
        heard.touch();
        let message = match frame.opcode {
            OP_PING => {
                outbox.push_control(Control::Pong(frame.payload.freeze()));
                continue;
            }
            OP_PONG => continue,
            OP_CLOSE => match check_close(&frame.payload) {
                Ok(()) => {
                    outbox.push_control(Control::CloseRaw(frame.payload.freeze()));
                    break ReadEnd::PeerClosed;
                }
                Err(d) => break ReadEnd::Violation(d),
            },
            _ => match assembler.push(frame) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(AssembleError::TooBig) => break ReadEnd::Violation(Disconnect::TOO_BIG),
                Err(AssembleError::Protocol) => {
                    break ReadEnd::Violation(Disconnect::PROTOCOL_ERROR);
                }
                Err(AssembleError::InvalidUtf8) => {
                    break ReadEnd::Violation(Disconnect::INVALID_UTF8);
                }
            },
        };
        let received = Instant::now();
        match (message, opts.echo) {
            (Message::Text(b), true) => {
                outbox.push(b, received);
            }
            (Message::Binary(b), true) => {
                outbox.push_binary(b, received);
            }
            (Message::Text(b), false) => match std::str::from_utf8(&b) {
                // Boxed: the message path's future is large and only exists while a
                // frame is handled; inline, every idle connection's task would carry it.
                Ok(text) => Box::pin(session.handle_text(text, received)).await,
                Err(_) => break ReadEnd::Violation(Disconnect::INVALID_UTF8),
            },
            (Message::Binary(_), false) => session.send_error(&ClientError::new(
                ErrorCode::InvalidJson,
                "binary frames are not supported; send JSON in text frames",
            )),
        }
    };

    let reason = match &end {
        ReadEnd::PeerClosed => "client_close",
        ReadEnd::Eof => "eof",
        ReadEnd::Violation(d) => {
            outbox.close(*d);
            d.label
        }
        ReadEnd::WriterEnded(WriterEnd::Closed(d)) => d.label,
        ReadEnd::WriterEnded(WriterEnd::Echoed) => "client_close",
        ReadEnd::WriterEnded(WriterEnd::Failed(why)) => why,
    };
    metrics::counter!(m::DISCONNECTS, "reason" => reason).increment(1);
    // Leave every room now: nothing more is delivered to a closing connection.
    drop(session);
    // The writer finishes the close it was asked for; a dead socket gets no wait.
    let wait_for_writer = !matches!(end, ReadEnd::WriterEnded(_) | ReadEnd::Eof);
    if !wait_for_writer
        || tokio::time::timeout(opts.write_timeout + Duration::from_secs(1), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
    if matches!(
        end,
        ReadEnd::Violation(_) | ReadEnd::WriterEnded(WriterEnd::Closed(_))
    ) {
        Box::pin(linger(reader.into_inner())).await;
    }
    tracing::debug!(%user_id, reason, "disconnected");
}

/// A peer's close frame must carry nothing, or a valid code and a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), Disconnect> {
    match payload.len() {
        0 => Ok(()),
        1 => Err(Disconnect::PROTOCOL_ERROR),
        _ => {
            if !close_code_allowed(u16::from_be_bytes([payload[0], payload[1]])) {
                Err(Disconnect::PROTOCOL_ERROR)
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                Err(Disconnect::INVALID_UTF8)
            } else {
                Ok(())
            }
        }
    }
}

/// After we sent a close, read and discard what the peer still sends (the rest of an
/// oversize frame, its close reply) until it closes, for at most [`CLOSE_GRACE`] and
/// [`LINGER_MAX_BYTES`]. Dropping a socket with unread input makes the kernel send a
/// reset, which can destroy our close frame before the peer reads it.
async fn linger<R: tokio::io::AsyncRead + Unpin>(mut r: R) {
    use tokio::io::AsyncReadExt;
    // On the heap, only while closing.
    let mut scratch = vec![0u8; 4096];
    let mut total = 0;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while total < LINGER_MAX_BYTES {
            match r.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// The most a closing connection reads and discards.
const LINGER_MAX_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_are_checked() {
        assert_eq!(check_close(&[]), Ok(()));
        assert_eq!(check_close(&[0x03]), Err(Disconnect::PROTOCOL_ERROR));
        assert_eq!(check_close(&1000u16.to_be_bytes()), Ok(()));
        assert_eq!(
            check_close(&1005u16.to_be_bytes()),
            Err(Disconnect::PROTOCOL_ERROR)
        );
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xC3, 0x28]);
        assert_eq!(check_close(&bad_reason), Err(Disconnect::INVALID_UTF8));
    }
}
