//! A WebSocket test client: frames in and out, bounded waits, and the checks that
//! nothing more arrives.

use super::*;

/// What a client received.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Json(Value),
    Close(u16),
    /// The connection ended without a close frame.
    Gone,
}

pub struct Client {
    ws: WebSocket<TcpStream>,
}

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        Self::connect_on(
            TcpStream::connect(addr).await.expect("tcp connect"),
            addr,
            path_and_query,
            headers,
        )
        .await
    }

    /// Handshakes on an already connected socket (e.g. one with a small receive buffer).
    pub async fn connect_on(
        mut s: TcpStream,
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        s.set_nodelay(true).ok();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let req = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write handshake");
        // Read the response head byte by byte so no frame after it is consumed here.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(TIMEOUT, s.read(&mut byte))
                .await
                .expect("handshake response in time")
            {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let (status, _) = parse_response(&head);
        if status != 101 {
            let text = String::from_utf8_lossy(&head).to_lowercase();
            let len = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = tokio::time::timeout(TIMEOUT, s.read_exact(&mut body)).await;
            return Err((status, String::from_utf8_lossy(&body).into_owned()));
        }
        let mut ws = WebSocket::after_handshake(s, Role::Client);
        ws.set_auto_close(true);
        ws.set_auto_pong(true);
        ws.set_max_message_size(64 << 20);
        Ok(Client { ws })
    }

    /// From now on, read pings without answering them (a stuck client).
    pub fn stop_answering_pings(&mut self) {
        self.ws.set_auto_pong(false);
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.send_frame(Frame::text(Payload::Owned(s.as_bytes().to_vec())))
            .await;
    }

    pub async fn send_frame(&mut self, f: Frame<'_>) {
        self.ws.write_frame(f).await.expect("write frame");
    }

    /// Publishes `content` to `room` with a clientMsgId.
    pub async fn publish(&mut self, room: &str, content: &str, client_msg_id: &str) {
        self.send_json(serde_json::json!({"type": "message", "roomId": room, "content": content, "clientMsgId": client_msg_id})).await;
    }

    /// The next event (panics after [`TIMEOUT`]).
    pub async fn next(&mut self) -> Event {
        self.next_within(TIMEOUT).await.expect("an event in time")
    }

    /// The next event, or `None` if nothing arrives within `d`.
    pub async fn next_within(&mut self, d: Duration) -> Option<Event> {
        loop {
            let frame = match tokio::time::timeout(d, self.ws.read_frame()).await {
                Err(_) => return None,
                Ok(Err(_)) => return Some(Event::Gone),
                Ok(Ok(f)) => f,
            };
            match frame.opcode {
                OpCode::Text => {
                    return Some(Event::Json(
                        serde_json::from_slice(&frame.payload).expect("server sends JSON"),
                    ));
                }
                OpCode::Close => {
                    let code = if frame.payload.len() >= 2 {
                        u16::from_be_bytes([frame.payload[0], frame.payload[1]])
                    } else {
                        1005
                    };
                    return Some(Event::Close(code));
                }
                _ => continue,
            }
        }
    }

    /// The next data frame as it came: whether it was binary, and its payload.
    pub async fn next_raw(&mut self) -> (bool, Vec<u8>) {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.read_frame())
                .await
                .expect("a frame in time")
                .expect("read frame");
            match frame.opcode {
                OpCode::Text => return (false, frame.payload.to_vec()),
                OpCode::Binary => return (true, frame.payload.to_vec()),
                OpCode::Close => panic!("closed"),
                _ => continue,
            }
        }
    }

    /// The next JSON frame whose `type` is `ty`, skipping others (presence, typing, ...).
    pub async fn next_of(&mut self, ty: &str) -> Value {
        loop {
            match self.next().await {
                Event::Json(v) if v["type"] == ty => return v,
                Event::Json(_) => continue,
                other => panic!("expected a {ty} frame, got {other:?}"),
            }
        }
    }

    /// The next JSON frame whose `type` is one of `types`, skipping others.
    pub async fn next_of_any(&mut self, types: &[&str]) -> Value {
        loop {
            match self.next().await {
                Event::Json(v) if types.iter().any(|t| v["type"] == *t) => return v,
                Event::Json(_) => continue,
                other => panic!("expected one of {types:?}, got {other:?}"),
            }
        }
    }

    /// Skips frames until the connection closes; returns the close code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            match self.next().await {
                Event::Close(code) => return code,
                Event::Gone => return 1006,
                Event::Json(_) => continue,
            }
        }
    }

    /// Sends a ping frame and waits for the pong, skipping what comes before it: proves
    /// the connection is alive. It proves nothing about what arrived; for "nothing more
    /// arrives" use [`Client::quiet`].
    pub async fn sync(&mut self) {
        self.send_json(serde_json::json!({"type": "ping"})).await;
        self.next_of("pong").await;
    }

    /// Proves that nothing more arrives: sends a ping and fails on any frame the server
    /// sends before the pong (which comes after everything already queued for this
    /// connection), and on no pong within [`TIMEOUT`].
    pub async fn quiet(&mut self) {
        self.quiet_except(&[]).await;
    }

    /// [`Client::quiet`], letting frames of the `allowed` types pass (for example
    /// `presence` when other members may come and go meanwhile).
    pub async fn quiet_except(&mut self, allowed: &[&str]) {
        self.send_json(serde_json::json!({"type": "ping"})).await;
        loop {
            match self.next().await {
                Event::Json(v) if v["type"] == "pong" => return,
                Event::Json(v) if allowed.iter().any(|t| v["type"] == *t) => continue,
                other => panic!("expected nothing more before the pong, got {other:?}"),
            }
        }
    }
}
