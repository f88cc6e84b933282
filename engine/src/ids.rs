//! Message ids: 64-bit, time-ordered, unique per node and shard (Snowflake-style).
//!
//! Layout (most significant first): 1 zero bit (so ids fit a signed 64-bit column,
//! e.g. ScyllaDB `bigint`) | 41 bits of milliseconds since [`EPOCH_MS`] (69 years) |
//! 8 bits node id | 5 bits shard id | 9 bits sequence (512 ids per millisecond per shard).
//!
//! A shard's generator belongs to its task alone, so it needs no lock; the one for
//! non-message ids is shared behind a mutex (see `engine.rs`). Ids from
//! one generator strictly increase even if the wall clock steps back: the generator keeps
//! its own notion of "current millisecond" and borrows from the future when a millisecond's
//! sequence space is used up.

/// 2024-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
const SEQ_BITS: u32 = 9;
const SHARD_BITS: u32 = 5;
const NODE_BITS: u32 = 8;
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
/// The largest shard count an id can encode.
pub const MAX_SHARDS: usize = 1 << SHARD_BITS;
/// The largest node id an id can encode.
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;

/// A message id. Serialised on the wire as a decimal string (JavaScript numbers cannot
/// hold 64 bits), accepted as a string or a number.
pub type MessageId = u64;

/// Builds an id from its parts. Exposed for tests and for computing page boundaries.
pub fn compose(ms_since_epoch: u64, node: u16, shard: u16, seq: u64) -> MessageId {
    (ms_since_epoch << (SEQ_BITS + SHARD_BITS + NODE_BITS))
        | (u64::from(node) << (SEQ_BITS + SHARD_BITS))
        | (u64::from(shard) << SEQ_BITS)
        | seq
}

/// The `(node, shard)` whose generator made an id.
pub fn origin_of(id: MessageId) -> (u16, u16) {
    let node = (id >> (SEQ_BITS + SHARD_BITS)) & u64::from(MAX_NODE_ID);
    let shard = (id >> SEQ_BITS) & ((1 << SHARD_BITS) - 1);
    (node as u16, shard as u16)
}

/// The Unix time in milliseconds at which an id was generated.
pub fn unix_ms_of(id: MessageId) -> u64 {
    (id >> (SEQ_BITS + SHARD_BITS + NODE_BITS)) + EPOCH_MS
}

/// The smallest id that any generator could produce at `unix_ms`: ids below it are older.
/// Used to turn a timestamp bound into an id bound for history pages.
pub fn first_id_at(unix_ms: u64) -> MessageId {
    compose(unix_ms.saturating_sub(EPOCH_MS), 0, 0, 0)
}

/// Generates ids for one shard.
#[derive(Debug)]
pub struct IdGenerator {
    node: u16,
    shard: u16,
    last_ms: u64,
    seq: u64,
}

impl IdGenerator {
    /// A generator for `node`/`shard`, started at `now_unix_ms`. The first id it hands out
    /// lies in a later millisecond than `now_unix_ms`, so every id issued by an earlier
    /// incarnation of this shard (which ran before `now_unix_ms`) sorts below it.
    pub fn new(node: u16, shard: u16, now_unix_ms: u64) -> Self {
        Self {
            node: node & MAX_NODE_ID,
            shard: shard & ((1 << SHARD_BITS) - 1),
            last_ms: now_unix_ms.saturating_sub(EPOCH_MS),
            seq: MAX_SEQ,
        }
    }

    /// The next id, strictly greater than every id this generator returned before.
    pub fn next(&mut self, now_unix_ms: u64) -> MessageId {
        let now = now_unix_ms.saturating_sub(EPOCH_MS);
        if now > self.last_ms {
            self.last_ms = now;
            self.seq = 0;
        } else if self.seq >= MAX_SEQ {
            self.last_ms += 1;
            self.seq = 0;
        } else {
            self.seq += 1;
        }
        compose(self.last_ms, self.node, self.shard, self.seq)
    }

    /// The high-water mark: every id this generator issued is `<=` it and every id it
    /// will issue is `>` it.
    pub fn high_water(&self) -> MessageId {
        compose(self.last_ms, self.node, self.shard, self.seq)
    }
}

/// A connection's id, unique per node (never reused while the process runs).
pub type ConnId = u64;

/// FNV-1a of a room id: stable across builds and platforms (unlike `DefaultHasher`), so
/// a room maps to the same shard on every node and every version. Also stripes the
/// session registry by user id.
pub fn room_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_read_back_from_an_id() {
        assert_eq!(origin_of(compose(12345, 7, 3, 99)), (7, 3));
        assert_eq!(
            origin_of(compose(1, MAX_NODE_ID, (MAX_SHARDS - 1) as u16, 511)),
            (MAX_NODE_ID, (MAX_SHARDS - 1) as u16)
        );
    }

    #[test]
    fn ids_increase_even_when_clock_steps_back_or_sequence_overflows() {
        let t0 = EPOCH_MS + 10_000;
        let mut g = IdGenerator::new(3, 7, t0);
        let start = g.high_water();
        let mut last = 0;
        for i in 0..5_000u64 {
            // the clock jumps back once in the middle
            let now = if i == 2_500 { t0 - 5_000 } else { t0 };
            let id = g.next(now);
            assert!(id > last, "id {id} not above {last}");
            assert!(id > start);
            assert!(id <= g.high_water());
            last = id;
        }
    }

    #[test]
    fn ids_carry_time_node_and_shard() {
        let t = EPOCH_MS + 123_456;
        let mut g = IdGenerator::new(5, 2, t - 1);
        let id = g.next(t);
        assert_eq!(unix_ms_of(id), t);
        assert!(id >= first_id_at(t));
        assert!(id < first_id_at(t + 1));
        let other_shard = IdGenerator::new(5, 3, t - 1).next(t);
        assert_ne!(id, other_shard);
        assert!(id < (1u64 << 63), "fits a signed 64-bit column");
    }
}
