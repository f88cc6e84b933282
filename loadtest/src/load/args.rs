//! Command-line arguments of `roomcast-load`.

use std::net::{IpAddr, SocketAddr};

pub(crate) const USAGE: &str = "usage: roomcast-load room|idle|churn --url ws://127.0.0.1:PORT --secret SECRET [options]
  common:  --server-pid PID  --procs N  --source-ips 127.0.0.1,127.0.0.2  --connect-concurrency 256  --slo
  room:    --rooms R --members M --publishers P --rates 25,50 --step-secs 10 --size 256
  idle:    --connections N --rooms R --hold-secs 10
  churn:   --rate OPS_PER_SEC --duration-secs 10 --rooms R";

#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) mode: String,
    pub(crate) addr: SocketAddr,
    pub(crate) secret: String,
    pub(crate) server_pid: Option<u32>,
    pub(crate) source_ips: Vec<IpAddr>,
    pub(crate) concurrency: usize,
    pub(crate) procs: usize,
    pub(crate) rooms: usize,
    pub(crate) members: usize,
    pub(crate) publishers: usize,
    pub(crate) rates: Vec<f64>,
    pub(crate) step_secs: u64,
    pub(crate) size: usize,
    pub(crate) slo: bool,
    pub(crate) connections: usize,
    pub(crate) hold_secs: u64,
    pub(crate) churn_rate: f64,
    pub(crate) duration_secs: u64,
    /// Worker only: the global connection indexes this worker holds.
    pub(crate) range: Option<(usize, usize)>,
}

pub(crate) fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mode = it.next().ok_or("missing mode")?;
    if !matches!(mode.as_str(), "room" | "idle" | "churn") {
        return Err(format!("unknown mode {mode}"));
    }
    let mut a = Args {
        mode,
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        secret: String::new(),
        server_pid: None,
        source_ips: vec![],
        concurrency: 256,
        procs: 1,
        rooms: 1,
        members: 101,
        publishers: 1,
        rates: vec![10.0],
        step_secs: 10,
        size: 256,
        slo: false,
        connections: 1000,
        hold_secs: 5,
        churn_rate: 100.0,
        duration_secs: 10,
        range: None,
    };
    while let Some(flag) = it.next() {
        if flag == "--slo" {
            a.slo = true;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--url" => {
                let hostport = v.trim_start_matches("ws://").trim_end_matches('/');
                a.addr = hostport
                    .parse()
                    .map_err(|_| format!("--url must be ws://IP:PORT, got {v}"))?;
            }
            "--secret" => a.secret = v,
            "--server-pid" => a.server_pid = Some(num(&v)? as u32),
            "--source-ips" => {
                a.source_ips = v
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad ip {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--connect-concurrency" => a.concurrency = num(&v)?.max(1) as usize,
            "--procs" => a.procs = num(&v)?.clamp(1, 16) as usize,
            "--rooms" => a.rooms = num(&v)?.max(1) as usize,
            "--members" => a.members = num(&v)?.max(1) as usize,
            "--publishers" => a.publishers = num(&v)?.max(1) as usize,
            "--rates" => {
                a.rates = v
                    .split(',')
                    .map(|s| s.parse::<f64>().map_err(|_| format!("bad rate {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--step-secs" => a.step_secs = num(&v)?.clamp(1, 600),
            "--size" => a.size = num(&v)?.clamp(64, 60_000) as usize,
            "--connections" => a.connections = num(&v)? as usize,
            "--hold-secs" => a.hold_secs = num(&v)?.min(3600),
            "--rate" => {
                a.churn_rate = v
                    .parse::<f64>()
                    .map_err(|_| format!("bad rate {v}"))?
                    .clamp(0.1, 100_000.0)
            }
            "--duration-secs" => a.duration_secs = num(&v)?.clamp(1, 3600),
            "--range" => {
                let (s, e) = v.split_once('-').ok_or("--range is START-END")?;
                a.range = Some((num(s)? as usize, num(e)? as usize));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !a.addr.ip().is_loopback() {
        return Err("targets are restricted to loopback addresses".into());
    }
    if a.source_ips.iter().any(|ip| !ip.is_loopback()) {
        return Err("source addresses must be loopback".into());
    }
    if a.secret.is_empty() {
        return Err("--secret is required (the server's JWT_SECRET)".into());
    }
    if a.publishers > a.members {
        return Err("--publishers cannot exceed --members".into());
    }
    Ok(a)
}
