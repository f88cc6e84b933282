//! Measurement helpers: a mergeable latency histogram, the server's CPU time and RSS
//! read from `/proc/PID`, and a wall clock in microseconds (shared by every process of a
//! run, unlike `Instant`).

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A log-linear histogram of microsecond values: exact below 128 µs, then 64 buckets per
/// power of two (under 1.6% error), so a step's millions of samples take a few KB and
/// workers' histograms merge by adding counts.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Hist {
    counts: Vec<u64>,
}

const LINEAR: u64 = 128;
const SUB: u64 = 64;

fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let msb = 63 - u64::from(us.leading_zeros()); // >= 7
    let shift = msb - 6;
    (LINEAR + (msb - 7) * SUB + ((us >> shift) & (SUB - 1))) as usize
}

/// The smallest value in a bucket.
fn bucket_floor(b: usize) -> u64 {
    let b = b as u64;
    if b < LINEAR {
        return b;
    }
    let msb = (b - LINEAR) / SUB + 7;
    let sub = (b - LINEAR) % SUB;
    (1 << msb) + (sub << (msb - 6))
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        let b = bucket(us);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
    }

    pub fn merge(&mut self, other: &Hist) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile in microseconds (the floor of its bucket; 0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_floor(b);
            }
        }
        0
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile(q) as f64 / 1000.0
    }
}

/// What one step looked like to a set of readers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StepStats {
    pub received: u64,
    pub duplicates: u64,
    /// Scheduled send time to receipt.
    pub latency: Hist,
}

impl StepStats {
    pub fn merge(&mut self, other: &StepStats) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.latency.merge(&other.latency);
    }
}

/// User + system CPU seconds of a process.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
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
pub fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            65_432,
            1_000_000,
            123_456_789,
        ] {
            let b = bucket(us);
            assert!(b >= last);
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= us, "{us}: floor {floor}");
            assert!(
                (us - floor) as f64 <= us as f64 * 0.016 + 1.0,
                "{us}: floor {floor}"
            );
        }
    }

    #[test]
    fn quantiles_and_merging() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for v in 1..=50 {
            a.record(v);
        }
        for v in 51..=100 {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.quantile(0.5), 50);
        assert_eq!(a.quantile(0.99), 99);
        assert_eq!(a.quantile(1.0), 100);
        assert_eq!(Hist::default().quantile(0.5), 0);
    }

    #[test]
    fn reads_its_own_process() {
        let pid = std::process::id();
        assert!(proc_rss_bytes(pid).is_some_and(|b| b > 0));
        assert!(proc_cpu_seconds(pid).is_some());
    }
}
