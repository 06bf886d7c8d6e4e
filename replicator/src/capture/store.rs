//! The captured XA-prepare groups waiting to be taken, and how far the
//! tailer has read, shared between the tailer task and `take`.
//!
//! Owns retention: a group that is never taken (its client went away) is
//! dropped once it is [`RETAIN_SEQS`] sequence numbers behind the newest
//! group of its domain, or when the retained groups exceed their byte
//! budget (oldest first). A dropped group leaves a tombstone (GTID and a
//! hash of its xid) for [`TOMBSTONE_SEQS`] sequence numbers, so that a late
//! `take` of it fails with `Expired` instead of wrongly reporting that the
//! transaction wrote nothing. Must not do I/O or decode row events.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use mysql_async::binlog::events::Event;

use super::events::Xid;
use super::gtid::Gtid;

/// Groups more than this many sequence numbers behind the newest of their
/// domain are dropped (their client never took them).
pub const RETAIN_SEQS: u64 = 100_000;
/// Tombstones of dropped groups are kept until they are this many
/// sequence numbers behind the newest (a tombstone is ~50 bytes).
pub const TOMBSTONE_SEQS: u64 = 300_000;
/// Non-transactional writes remembered per connection, at most.
const MAX_NONTX_THREADS: usize = 4096;
const MAX_NONTX_TABLES: usize = 64;

/// Why a group cannot become a write-set, found while reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupProblem {
    TooLarge { bytes: usize },
    Unsupported(String),
}

/// One `XA PREPARE` event group, as read from the binlog.
#[derive(Debug, Clone)]
pub struct XaGroup {
    pub gtid: Gtid,
    pub xid: Xid,
    /// The connection that ran it (from its `XA END` query event).
    pub thread_id: Option<u32>,
    /// The format description event in force for the group, serialized.
    pub format_description: Arc<Vec<u8>>,
    /// Table map and row events, in binlog order.
    pub events: Vec<Event>,
    /// Serialized size of `events`.
    pub bytes: usize,
    pub problem: Option<GroupProblem>,
    /// Tables the same connection changed in non-transactional groups
    /// (e.g. MyISAM) since its previous XA group: such changes are binlogged
    /// at once, outside the XA group, and cannot be replicated.
    pub nontransactional: Vec<(String, String)>,
}

/// What the store knows about a GTID.
#[derive(Debug)]
pub enum Lookup {
    /// A captured XA-prepare group.
    Found(XaGroup),
    /// Read, and not an XA prepare (or not of this xid).
    NotCaptured,
    /// A captured XA prepare of this xid that was dropped before `take`.
    Expired,
    /// The tailer has not read that far yet.
    Pending,
}

#[derive(Debug)]
struct Tombstone {
    xid_hash: u64,
}

#[derive(Debug)]
struct NonTx {
    seq: u64,
    tables: Vec<(String, String)>,
}

/// The shared state.
#[derive(Debug)]
pub struct Store {
    retain_bytes: usize,
    groups: HashMap<Gtid, XaGroup>,
    /// Captured GTIDs in arrival order (may name groups already taken).
    order: VecDeque<Gtid>,
    bytes: usize,
    tombstones: HashMap<Gtid, Tombstone>,
    tombstone_order: VecDeque<Gtid>,
    /// Highest sequence number completely read, per domain.
    processed: HashMap<u32, u64>,
    nontx: HashMap<u32, NonTx>,
    /// Set while the tailer cannot read the binlog (reason).
    pub down: Option<String>,
    /// Set once capture has stopped for good (reason).
    pub stopped: Option<String>,
}

fn xid_hash(gtrid: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(gtrid)
}

impl Store {
    /// A store whose reading starts after `position` (a GTID per domain).
    pub fn new(position: &[Gtid], retain_bytes: usize) -> Self {
        Self {
            retain_bytes,
            groups: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            processed: position.iter().map(|g| (g.domain, g.seq)).collect(),
            nontx: HashMap::new(),
            down: None,
            stopped: None,
        }
    }

    /// Whether the group of `gtid` (or a later one of its domain) was read.
    pub fn processed(&self, gtid: Gtid) -> bool {
        self.processed
            .get(&gtid.domain)
            .is_some_and(|s| *s >= gtid.seq)
    }

    /// Record that the group of `gtid` was read completely.
    pub fn mark_processed(&mut self, gtid: Gtid) {
        let seq = self.processed.entry(gtid.domain).or_insert(gtid.seq);
        *seq = (*seq).max(gtid.seq);
        self.evict();
    }

    /// Store an XA-prepare group (after [`Store::mark_processed`]).
    pub fn insert(&mut self, mut group: XaGroup) {
        if let Some(thread) = group.thread_id
            && let Some(nontx) = self.nontx.remove(&thread)
        {
            group.nontransactional = nontx.tables;
        }
        self.bytes += group.bytes;
        self.order.push_back(group.gtid);
        self.groups.insert(group.gtid, group);
        self.evict();
    }

    /// Remember that connection `thread` changed `tables` outside any XA
    /// group (reported with its next XA group).
    pub fn note_nontransactional(&mut self, thread: u32, gtid: Gtid, tables: &[(String, String)]) {
        if !self.nontx.contains_key(&thread) && self.nontx.len() >= MAX_NONTX_THREADS {
            // Drop the oldest connection's record.
            if let Some(oldest) = self
                .nontx
                .iter()
                .min_by_key(|(_, n)| n.seq)
                .map(|(t, _)| *t)
            {
                self.nontx.remove(&oldest);
            }
        }
        let entry = self.nontx.entry(thread).or_insert(NonTx {
            seq: gtid.seq,
            tables: Vec::new(),
        });
        entry.seq = gtid.seq;
        for t in tables {
            if entry.tables.len() < MAX_NONTX_TABLES && !entry.tables.contains(t) {
                entry.tables.push(t.clone());
            }
        }
    }

    /// What is known of `gtid` for a `take` of `gtrid`; a found group of
    /// that xid is removed.
    pub fn take(&mut self, gtid: Gtid, gtrid: &[u8]) -> Lookup {
        if let Some(group) = self.groups.get(&gtid) {
            if group.xid.gtrid != gtrid || !group.xid.bqual.is_empty() {
                return Lookup::NotCaptured;
            }
            let Some(group) = self.groups.remove(&gtid) else {
                return Lookup::NotCaptured;
            };
            self.bytes -= group.bytes;
            return Lookup::Found(group);
        }
        if let Some(t) = self.tombstones.get(&gtid) {
            return if t.xid_hash == xid_hash(gtrid) {
                Lookup::Expired
            } else {
                Lookup::NotCaptured
            };
        }
        if self.processed(gtid) {
            Lookup::NotCaptured
        } else {
            Lookup::Pending
        }
    }

    /// Apply the retention rules (see the module documentation).
    fn evict(&mut self) {
        while let Some(front) = self.order.front().copied() {
            let Some(group) = self.groups.get(&front) else {
                // Already taken.
                self.order.pop_front();
                continue;
            };
            let newest = self.processed.get(&front.domain).copied().unwrap_or(0);
            let too_old = newest.saturating_sub(front.seq) > RETAIN_SEQS;
            let too_big = self.bytes > self.retain_bytes;
            if !too_old && !too_big {
                break;
            }
            tracing::warn!(
                gtid = %front,
                xid = %String::from_utf8_lossy(&group.xid.gtrid),
                bytes = group.bytes,
                reason = if too_old { "too old" } else { "retention budget exceeded" },
                "dropping a captured XA PREPARE group that was never taken"
            );
            self.order.pop_front();
            if let Some(group) = self.groups.remove(&front) {
                self.bytes -= group.bytes;
                self.tombstones.insert(
                    front,
                    Tombstone {
                        xid_hash: xid_hash(&group.xid.gtrid),
                    },
                );
                self.tombstone_order.push_back(front);
            }
        }
        while let Some(front) = self.tombstone_order.front().copied() {
            let newest = self.processed.get(&front.domain).copied().unwrap_or(0);
            if newest.saturating_sub(front.seq) <= TOMBSTONE_SEQS {
                break;
            }
            self.tombstone_order.pop_front();
            self.tombstones.remove(&front);
        }
        // Connection records are per thread, not per domain: age them
        // against the most advanced domain.
        let newest = self.processed.values().copied().max().unwrap_or(0);
        self.nontx
            .retain(|_, n| newest.saturating_sub(n.seq) <= RETAIN_SEQS);
    }

    /// Number of retained groups and their bytes.
    #[cfg(test)]
    pub fn retained(&self) -> (usize, usize) {
        (self.groups.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtid(seq: u64) -> Gtid {
        Gtid {
            domain: 0,
            server: 1,
            seq,
        }
    }

    fn group(seq: u64, xid: &str, bytes: usize) -> XaGroup {
        XaGroup {
            gtid: gtid(seq),
            xid: Xid {
                format_id: 1,
                gtrid: xid.as_bytes().to_vec(),
                bqual: vec![],
            },
            thread_id: Some(7),
            format_description: Arc::new(vec![0xf]),
            events: vec![],
            bytes,
            problem: None,
            nontransactional: vec![],
        }
    }

    #[test]
    fn take_finds_its_group_once_and_nothing_else() {
        let mut store = Store::new(&[gtid(10)], 1 << 20);
        assert!(matches!(store.take(gtid(9), b"a"), Lookup::NotCaptured));
        assert!(matches!(store.take(gtid(11), b"a"), Lookup::Pending));
        store.mark_processed(gtid(11));
        store.insert(group(11, "a", 100));
        assert!(matches!(store.take(gtid(11), b"b"), Lookup::NotCaptured));
        assert!(matches!(store.take(gtid(11), b"a"), Lookup::Found(_)));
        assert!(matches!(store.take(gtid(11), b"a"), Lookup::NotCaptured));
        assert_eq!(store.retained(), (0, 0));
    }

    #[test]
    fn untaken_groups_are_dropped_and_leave_tombstones() {
        let mut store = Store::new(&[], 250);
        for (seq, xid) in [(1, "a"), (2, "b"), (3, "c")] {
            store.mark_processed(gtid(seq));
            store.insert(group(seq, xid, 100));
        }
        // The byte budget holds two groups: the oldest went.
        assert_eq!(store.retained(), (2, 200));
        assert!(matches!(store.take(gtid(1), b"a"), Lookup::Expired));
        assert!(matches!(store.take(gtid(1), b"x"), Lookup::NotCaptured));
        // Far behind the newest: dropped by age.
        store.mark_processed(gtid(3 + RETAIN_SEQS));
        assert_eq!(store.retained(), (1, 100));
        assert!(matches!(store.take(gtid(2), b"b"), Lookup::Expired));
        assert!(matches!(store.take(gtid(3), b"c"), Lookup::Found(_)));
        // Tombstones age out too.
        store.mark_processed(gtid(10 + RETAIN_SEQS + TOMBSTONE_SEQS));
        assert!(matches!(store.take(gtid(2), b"b"), Lookup::NotCaptured));
    }

    #[test]
    fn nontransactional_writes_attach_to_the_connections_next_xa_group() {
        let mut store = Store::new(&[], 1 << 20);
        store.note_nontransactional(7, gtid(1), &[("d".into(), "m".into())]);
        store.mark_processed(gtid(1));
        store.mark_processed(gtid(2));
        store.insert(group(2, "a", 1));
        let Lookup::Found(g) = store.take(gtid(2), b"a") else {
            panic!("not found")
        };
        assert_eq!(g.nontransactional, vec![("d".to_string(), "m".to_string())]);
    }
}
