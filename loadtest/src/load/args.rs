//! Command-line arguments of `roomcast-load`.

use std::net::{IpAddr, SocketAddr};

pub(crate) const USAGE: &str = "usage: roomcast-load room|idle|churn --url ws://127.0.0.1:PORT[,ws://...] --secret SECRET [options]
  common:  --server-pid PID[,PID]  --procs N  --source-ips 127.0.0.1,127.0.0.2  --connect-concurrency 256  --slo
  room:    --rooms R --members M --publishers P --rates 25,50 --step-secs 10 --size 256
  idle:    --connections N --rooms R --hold-secs 10
  churn:   --rate OPS_PER_SEC --duration-secs 10 --rooms R";

#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) mode: String,
    /// The first node; connection `i` goes to `addrs[i % addrs.len()]` (a cluster's
    /// nodes, members of one room spread over them).
    pub(crate) addr: SocketAddr,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) secret: String,
    /// Server processes whose CPU is measured (summed).
    pub(crate) server_pids: Vec<u32>,
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

impl Args {
    /// CPU seconds of every `--server-pid`, summed; `None` without pids or if one is gone.
    pub(crate) fn server_cpu_seconds(&self) -> Option<f64> {
        self.sum_over_pids(roomcast_loadtest::stats::proc_cpu_seconds)
    }

    /// Resident bytes of every `--server-pid`, summed.
    pub(crate) fn server_rss_bytes(&self) -> Option<u64> {
        self.sum_over_pids(|p| roomcast_loadtest::stats::proc_rss_bytes(p).map(|b| b as f64))
            .map(|b| b as u64)
    }

    fn sum_over_pids(&self, f: impl Fn(u32) -> Option<f64>) -> Option<f64> {
        if self.server_pids.is_empty() {
            return None;
        }
        self.server_pids.iter().map(|&p| f(p)).sum()
    }
}

pub(crate) fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mode = it.next().ok_or("missing mode")?;
    if !matches!(mode.as_str(), "room" | "idle" | "churn") {
        return Err(format!("unknown mode {mode}"));
    }
    let mut a = Args {
        mode,
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        addrs: vec![SocketAddr::from(([127, 0, 0, 1], 8000))],
        secret: String::new(),
        server_pids: vec![],
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
                a.addrs = v
                    .split(',')
                    .map(|u| {
                        let hostport = u.trim_start_matches("ws://").trim_end_matches('/');
                        hostport
                            .parse()
                            .map_err(|_| format!("--url must be ws://IP:PORT[,...], got {v}"))
                    })
                    .collect::<Result<_, _>>()?;
                a.addr = a.addrs[0];
            }
            "--secret" => a.secret = v,
            "--server-pid" => {
                a.server_pids = v
                    .split(',')
                    .map(|p| num(p).map(|n| n as u32))
                    .collect::<Result<_, _>>()?
            }
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
    if a.addrs.iter().any(|a| !a.ip().is_loopback()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn several_urls_and_pids_are_a_cluster_and_non_loopback_is_refused() {
        let a =
            parse("room --url ws://127.0.0.1:1,ws://127.0.0.1:2/ --secret s --server-pid 10,11")
                .expect("parses");
        assert_eq!(a.addrs.len(), 2);
        assert_eq!(a.addr, a.addrs[0]);
        assert_eq!(a.addrs[1].port(), 2);
        assert_eq!(a.server_pids, vec![10, 11]);
        assert!(parse("room --url ws://127.0.0.1:1,ws://10.0.0.1:2 --secret s").is_err());
        assert!(parse("room --url ws://127.0.0.1:1,nonsense --secret s").is_err());
    }
}
