//! Measurement helpers: per-step delivery statistics, percentiles, and the server's CPU
//! time and RSS read from `/proc/PID`.

/// What one reader saw during one step.
#[derive(Debug, Default)]
pub(crate) struct StepStats {
    pub received: u64,
    pub duplicates: u64,
    /// Latencies in microseconds, scheduled send time to receipt.
    pub lat: Vec<u32>,
}

impl StepStats {
    pub(crate) fn merge(&mut self, other: StepStats) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.lat.extend(other.lat);
    }
}

/// The `q` quantile of sorted values (0 when empty).
pub(crate) fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// User + system CPU seconds of a process.
pub(crate) fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux we run on.
    Some((utime + stime) / 100.0)
}

/// Resident set size of a process in bytes.
pub(crate) fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        assert!(proc_rss_bytes(pid).is_some_and(|b| b > 0));
        assert!(proc_cpu_seconds(pid).is_some());
    }
}
