//! One WebSocket connection after the upgrade: a reader loop on this task and a
//! [`writer`](super::writer) task, because fastwebsockets' `read_frame` is not
//! cancel-safe and must never race a write in a `select!`. (The one `select!` here
//! abandons the read for good when the writer has already ended the connection.)
//!
//! The reader decodes frames, reassembles fragments under the message-size cap, and
//! feeds text to the [`Session`]; protocol violations close with the code from
//! [`Disconnect`]. Pings are answered and close frames echoed through the outbox, so
//! every byte to the client leaves through the writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{Frame, OpCode, Role, WebSocketError};
use roomcast_engine::ids::MessageId;
use roomcast_engine::metrics as m;
use roomcast_engine::outbox::Control;
use roomcast_engine::{ClientError, Disconnect, ErrorCode, Session};

use super::assemble::{AssembleError, Assembler, Message};
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
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut r, w) = tokio::io::split(ws.into_inner());
    // The frame reader borrows the read half, so that after a close we can drain the
    // raw socket ourselves (see `linger`).
    let (mut reader, _) =
        fastwebsockets::after_handshake_split(&mut r, tokio::io::sink(), Role::Server);
    reader.set_auto_close(true);
    reader.set_auto_pong(true);
    // The library refuses frames whose length is >= this; we allow exactly the cap.
    reader.set_max_message_size(opts.max_message_bytes.saturating_add(1));

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

    let mut send_fn = |frame: Frame<'_>| {
        // Called for the replies the library owes (pongs, close echoes): the peer spoke.
        heard.touch();
        let payload = bytes::Bytes::copy_from_slice(&frame.payload);
        match frame.opcode {
            OpCode::Pong => outbox.push_control(Control::Pong(payload)),
            // A control frame may carry at most 125 bytes; the library checks pings only.
            OpCode::Close if payload.len() > 125 => {
                outbox.close(Disconnect::PROTOCOL_ERROR);
            }
            OpCode::Close => outbox.push_control(Control::CloseRaw(payload)),
            _ => {}
        }
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    let mut assembler = Assembler::new(opts.max_message_bytes);
    let end = loop {
        let read = tokio::select! {
            biased;
            done = &mut writer => break ReadEnd::WriterEnded(done.unwrap_or(WriterEnd::Failed("writer_panicked"))),
            read = reader.read_frame(&mut send_fn) => read,
        };
        let frame = match read {
            Ok(frame) => frame,
            Err(e) => break read_error(e),
        };
        heard.touch();
        let message = match frame.opcode {
            OpCode::Close => break ReadEnd::PeerClosed,
            OpCode::Ping | OpCode::Pong => continue,
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
    drop(reader);
    if matches!(
        end,
        ReadEnd::Violation(_) | ReadEnd::WriterEnded(WriterEnd::Closed(_))
    ) {
        Box::pin(linger(&mut r)).await;
    }
    tracing::debug!(%user_id, reason, "disconnected");
}

/// After we sent a close, read and discard what the peer still sends (the rest of an
/// oversize frame, its close reply) until it closes, for at most [`CLOSE_GRACE`] and
/// [`LINGER_MAX_BYTES`]. Dropping a socket with unread input makes the kernel send a
/// reset, which can destroy our close frame before the peer reads it.
async fn linger<R: tokio::io::AsyncRead + Unpin>(r: &mut R) {
    use tokio::io::AsyncReadExt;
    // On the heap, only while closing: an array here would sit inside every
    // connection's task for its whole life.
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

fn read_error(e: WebSocketError) -> ReadEnd {
    match e {
        WebSocketError::InvalidUTF8 => ReadEnd::Violation(Disconnect::INVALID_UTF8),
        WebSocketError::FrameTooLarge => ReadEnd::Violation(Disconnect::TOO_BIG),
        WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_)
        | WebSocketError::ConnectionClosed
        | WebSocketError::SendError(_) => ReadEnd::Eof,
        // An invalid close code: the library already queued a 1002 close through the
        // send closure; closing again is a no-op.
        _ => ReadEnd::Violation(Disconnect::PROTOCOL_ERROR),
    }
}
