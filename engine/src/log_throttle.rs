//! Throttled log lines: events a client can cause at will (a connection, a rate limit
//! tripping) are logged, but at most a fixed number of lines per second per kind, so a
//! flood cannot flood the log. The next line written after a quiet spell carries how
//! many were left out (`suppressed`).

use std::sync::OnceLock;
use std::time::Instant;

/// One kind of throttled line. A `static`: its state is one small mutex, taken once per
/// event of that kind (cheap next to the socket work each event is).
pub struct LogThrottle {
    per_sec: u32,
    /// (the second the count is for, lines written in it, lines left out since the
    /// last one written).
    state: parking_lot::Mutex<(u64, u32, u64)>,
}

fn second() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

impl LogThrottle {
    pub const fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            state: parking_lot::Mutex::new((0, 0, 0)),
        }
    }

    /// `Some(lines left out before this one)` when this line may be written.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(second())
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let mut st = self.state.lock();
        if st.0 != now {
            st.0 = now;
            st.1 = 0;
        }
        if st.1 >= self.per_sec {
            st.2 += 1;
            return None;
        }
        st.1 += 1;
        Some(std::mem::take(&mut st.2))
    }
}

/// Connections established (info), per second.
pub static CONNECTIONS: LogThrottle = LogThrottle::new(20);
/// Message rate limits exceeded (warn), per second.
pub static RATE_LIMITS: LogThrottle = LogThrottle::new(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_next_line_counts_what_was_left_out() {
        let t = LogThrottle::new(3);
        let admitted: Vec<Option<u64>> = (0..10).map(|_| t.admit_at(5)).collect();
        assert_eq!(&admitted[..3], &[Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none), "{admitted:?}");
        // The next second's first line says 7 were left out; then the count restarts.
        assert_eq!(t.admit_at(6), Some(7));
        assert_eq!(t.admit_at(6), Some(0));
        assert_eq!(t.admit_at(6), Some(0));
        assert_eq!(t.admit_at(6), None);
        assert_eq!(t.admit_at(9), Some(1));
    }
}
