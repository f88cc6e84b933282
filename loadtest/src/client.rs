//! The load driver's WebSocket client: a hand-written handshake over a buffered socket
//! (any frame that follows the 101 stays in the buffer), then fastwebsockets framing.
//! Readers parse only the marker the publishers put in their content, not the JSON, so
//! the driver spends as little of the shared CPU as possible.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketRead, WebSocketWrite};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::stats::{StepStats, unix_us};

type Stream = BufReader<TcpStream>;

pub fn token(secret: &str, user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 24 * 3600;
    let claims = serde_json::json!({"sub": user, "username": user, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

pub struct Conn {
    ws: WebSocket<Stream>,
}

impl Conn {
    /// Connects, upgrades, and waits for `room_joined`.
    pub async fn open(
        addr: SocketAddr,
        src: Option<IpAddr>,
        token: &str,
        room: &str,
    ) -> std::io::Result<Conn> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = src {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut s = BufReader::with_capacity(1024, tcp);
        let req = format!(
            "GET /ws?token={token}&roomId={room} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        s.read_line(&mut line).await?;
        if !line.starts_with("HTTP/1.1 101") {
            return Err(std::io::Error::other(format!(
                "upgrade refused: {}",
                line.trim()
            )));
        }
        loop {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("eof in handshake"));
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut ws = WebSocket::after_handshake(s, Role::Client);
        ws.set_auto_pong(true);
        loop {
            let f = ws.read_frame().await.map_err(std::io::Error::other)?;
            if f.opcode == OpCode::Text && memfind(&f.payload, b"\"room_joined\"").is_some() {
                break;
            }
            if f.opcode == OpCode::Close {
                return Err(std::io::Error::other("closed before joining"));
            }
        }
        Ok(Conn { ws })
    }

    /// A receive-only member: the whole socket stays with the reader, which answers the
    /// server's pings itself.
    /// Closes politely (close frame, then drop).
    pub async fn close(mut self) {
        let _ = self.ws.write_frame(Frame::close(1000, b"")).await;
    }

    /// Publishes `size` bytes of content with `client_msg_id` and waits (at most
    /// `within`) for its ack and for the message itself coming back through the room's
    /// fan-out, skipping everything else. Returns (send -> ack, send -> delivery).
    pub async fn publish_and_wait(
        &mut self,
        room: &str,
        client_msg_id: &str,
        size: usize,
        within: Duration,
    ) -> Result<(Duration, Duration), String> {
        let content = "g".repeat(size);
        let text = format!(
            r#"{{"type":"message","roomId":"{room}","content":"{content}","clientMsgId":"{client_msg_id}"}}"#
        );
        let started = Instant::now();
        self.ws
            .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
            .await
            .map_err(|e| e.to_string())?;
        let ack_needle = r#""type":"ack""#;
        let id_needle = format!(r#""clientMsgId":"{client_msg_id}""#);
        let (mut ack, mut delivered) = (None, None);
        let deadline = tokio::time::Instant::now() + within;
        while ack.is_none() || delivered.is_none() {
            let frame = tokio::time::timeout_at(deadline, self.ws.read_frame())
                .await
                .map_err(|_| "timed out waiting for ack and delivery".to_string())?
                .map_err(|e| e.to_string())?;
            match frame.opcode {
                OpCode::Close => return Err("closed by the server".into()),
                OpCode::Text => {}
                _ => continue,
            }
            let p = &frame.payload[..];
            if memfind(p, id_needle.as_bytes()).is_none() {
                if memfind(p, br#""type":"error""#).is_some() {
                    return Err(String::from_utf8_lossy(p).into_owned());
                }
                continue;
            }
            if memfind(p, ack_needle.as_bytes()).is_some() {
                ack = Some(started.elapsed());
            } else if memfind(p, br#""type":"message""#).is_some() {
                delivered = Some(started.elapsed());
            } else if memfind(p, br#""type":"error""#).is_some() {
                return Err(String::from_utf8_lossy(p).into_owned());
            }
        }
        Ok((ack.unwrap_or_default(), delivered.unwrap_or_default()))
    }

    pub fn into_reader(self) -> Reader {
        Reader::Full(self.ws)
    }

    /// A publishing member: the write half is shared between the publish loop and the
    /// reader (which must send the pongs it owes through it).
    pub fn into_publisher(self) -> (Reader, SharedWrite) {
        let (read, write) = self.ws.split(tokio::io::split);
        let write = std::sync::Arc::new(tokio::sync::Mutex::new(write));
        (Reader::Split(read, write.clone()), write)
    }
}

pub type SharedWrite = std::sync::Arc<tokio::sync::Mutex<WebSocketWrite<WriteHalf<Stream>>>>;

/// A member's receiving side. Either way, pings are answered (the server closes
/// connections that stay silent for two ping intervals).
pub enum Reader {
    Full(WebSocket<Stream>),
    Split(WebSocketRead<ReadHalf<Stream>>, SharedWrite),
}

impl Reader {
    async fn next(&mut self) -> Result<Frame<'_>, fastwebsockets::WebSocketError> {
        match self {
            Reader::Full(ws) => ws.read_frame().await,
            Reader::Split(read, write) => {
                let mut reply = |f: Frame<'_>| {
                    let write = write.clone();
                    let owned =
                        Frame::new(true, f.opcode, None, Payload::Owned(f.payload.to_vec()));
                    async move { write.lock().await.write_frame(owned).await }
                };
                read.read_frame(&mut reply).await
            }
        }
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `LT|step|publisher|seq|sched_us|` from a message frame.
fn parse_marker(payload: &[u8]) -> Option<(usize, usize, u64, u64)> {
    let at = memfind(payload, b"LT|")? + 3;
    let mut parts = payload[at..].split(|b| *b == b'|');
    let mut num = || -> Option<u64> { std::str::from_utf8(parts.next()?).ok()?.parse().ok() };
    Some((num()? as usize, num()? as usize, num()?, num()?))
}

/// Converts wall-clock microseconds to this process's `Instant`s (deadlines), so that
/// every process of a run follows one schedule.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix_us: u64,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            unix_us: unix_us(),
        }
    }

    pub fn instant_at(&self, unix: u64) -> Instant {
        self.instant + Duration::from_micros(unix.saturating_sub(self.unix_us))
    }
}

/// Reads until told to stop; returns per-step statistics. Messages from `own`
/// (this connection's publisher index) are its echoes and are not counted.
pub async fn read_loop(
    mut read: Reader,
    steps: usize,
    own: Option<usize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<StepStats> {
    let mut stats: Vec<StepStats> = (0..steps).map(|_| StepStats::default()).collect();
    // Highest sequence seen per publisher (a room has few publishers: linear search).
    let mut last: Vec<(usize, u64)> = Vec::new();
    loop {
        // Abandoning the read on stop is fine: the connection is not read again.
        let frame = tokio::select! {
            _ = stop.changed() => break,
            f = read.next() => match f {
                Ok(f) => f,
                Err(_) => break,
            },
        };
        if frame.opcode == OpCode::Close {
            break;
        }
        if frame.opcode != OpCode::Text {
            continue;
        }
        let Some((step, publisher, seq, sched_us)) = parse_marker(&frame.payload) else {
            continue;
        };
        if Some(publisher) == own || step >= steps {
            continue;
        }
        let now = unix_us();
        let st = &mut stats[step];
        st.received += 1;
        match last.iter_mut().find(|(p, _)| *p == publisher) {
            Some((_, l)) if seq <= *l => st.duplicates += 1,
            Some((_, l)) => *l = seq,
            None => last.push((publisher, seq)),
        }
        st.latency.record(now.saturating_sub(sched_us));
    }
    stats
}

/// The run's schedule: step `k` starts at `t0 + k * (step + gap)` (wall clock, µs).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub t0_unix_us: u64,
    pub rates: Vec<f64>,
    pub step: Duration,
    pub gap: Duration,
    /// Publishers in the whole run (all processes).
    pub publishers: usize,
    pub size: usize,
}

impl Schedule {
    pub fn step_start_us(&self, k: usize) -> u64 {
        self.t0_unix_us + (self.step + self.gap).as_micros() as u64 * k as u64
    }

    pub fn end_us(&self) -> u64 {
        self.step_start_us(self.rates.len())
    }
}

impl Schedule {
    /// When publisher `index` sends in step `k` (wall clock, µs): the step's
    /// `rates[k] * step` messages are spread evenly over the step, message `g` at
    /// `start + g * step / total`, and dealt round-robin to the publishers (publisher `i`
    /// sends `g = i, i + p, i + 2p, ...`). So every send falls inside its step however
    /// few messages each publisher has (fewer than one each included).
    pub fn sends(&self, k: usize, index: usize) -> Vec<u64> {
        let Some(&rate) = self.rates.get(k) else {
            return Vec::new();
        };
        let total = (rate * self.step.as_secs_f64()).round().max(0.0) as u64;
        let p = self.publishers.max(1) as u64;
        let start = self.step_start_us(k);
        let step_us = self.step.as_micros() as u64;
        (index as u64..total)
            .step_by(p as usize)
            .map(|g| start + g * step_us / total)
            .collect()
    }
}

/// Publishes open-loop: in step k, this publisher sends its share of `rates[k] * step`
/// messages, each at its scheduled time (immediately if behind; see
/// [`Schedule::sends`]). Returns messages sent per step.
pub async fn publish_loop(
    write: SharedWrite,
    room: String,
    index: usize,
    plan: Schedule,
    clock: Clock,
) -> Vec<u64> {
    let mut sent = vec![0u64; plan.rates.len()];
    let mut seq: u64 = 0;
    for k in 0..plan.rates.len() {
        for sched_us in plan.sends(k, index) {
            tokio::time::sleep_until(clock.instant_at(sched_us).into()).await;
            let mut content = format!("LT|{k}|{index}|{seq}|{sched_us}|");
            while content.len() < plan.size {
                content.push('x');
            }
            let text = format!(
                r#"{{"type":"message","roomId":"{room}","content":"{content}","clientMsgId":"{index}-{seq}"}}"#
            );
            if write
                .lock()
                .await
                .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
                .await
                .is_err()
            {
                return sent;
            }
            seq += 1;
            sent[k] += 1;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_send_falls_inside_its_step_and_the_steps_total_is_exact() {
        for (rate, publishers) in [
            (250.0, 5000),
            (100.0, 5000),
            (1000.0, 5000),
            (25.0, 1),
            (7.0, 3),
        ] {
            let plan = Schedule {
                t0_unix_us: 1_000_000,
                rates: vec![rate, rate],
                step: Duration::from_secs(10),
                gap: Duration::from_secs(2),
                publishers,
                size: 0,
            };
            for k in 0..2 {
                let start = plan.step_start_us(k);
                let end = start + 10_000_000;
                let mut all: Vec<u64> = (0..publishers).flat_map(|i| plan.sends(k, i)).collect();
                assert_eq!(all.len() as f64, rate * 10.0, "rate {rate} x {publishers}");
                assert!(
                    all.iter().all(|&t| (start..end).contains(&t)),
                    "rate {rate} x {publishers}"
                );
                // Evenly spread: consecutive sends are step / total apart.
                all.sort_unstable();
                let gap = 10_000_000 / (rate * 10.0) as u64;
                assert!(
                    all.windows(2).all(|w| w[1] - w[0] <= gap + 1),
                    "rate {rate} x {publishers}"
                );
            }
        }
    }

    #[test]
    fn markers_round_trip() {
        let frame = br#"{"type":"message","content":"LT|2|7|42|123456|xxxx","roomId":"r"}"#;
        assert_eq!(parse_marker(frame), Some((2, 7, 42, 123456)));
        assert_eq!(parse_marker(b"{}"), None);
    }
}
