//! Certification: the deterministic decision whether a write-set commits.
//!
//! Owns the certification index (which seqno last held each key, exclusively
//! or shared) and the rule of DESIGN.md: a write-set passes iff no write-set
//! that passed with a seqno in `(depends_on, seqno)` holds an overlapping key
//! (exclusive–exclusive or exclusive–shared). This is snapshot isolation's
//! first-committer-wins, applied cluster-wide.
//!
//! It must stay pure: no I/O, no clock, no randomness, no async. Every node
//! feeds it the same ordered `(seqno, write-set)` stream and so reaches the
//! same verdicts. Key extraction and hashing belong to [`crate::keys`];
//! waiting for dependencies belongs to the applier.
//!
//! # Contract
//!
//! 1. Seqnos are fed strictly increasing (gaps allowed: not every log entry
//!    is a write-set). A seqno at or below the previous one is a
//!    [`CertError::OutOfOrder`], which the caller must treat as fatal.
//! 2. TOI write-sets (DDL) always pass: they run in isolation at their place
//!    in the order. Their keys still enter the index, so a transaction whose
//!    snapshot predates a DDL on its table fails.
//! 3. The index keeps only the last `window` seqnos. A write-set that would
//!    need older entries (`seqno - 1 - depends_on > window`) fails with
//!    [`Failure::TooOld`] — on every node alike, since purge depends only on
//!    the seqno.
//! 4. A passing write-set gets `apply_after`: the highest earlier seqno whose
//!    commit it must wait for when applied in parallel.

mod index;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod scenario;
#[cfg(test)]
mod tests;

pub use index::Certifier;

/// Position in the total order (the log index of the entry).
pub type Seqno = u64;

/// A key's 128-bit fingerprint (see [`crate::keys::Fingerprint`]).
pub type Fingerprint = u128;

/// How a write-set holds a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// Read dependency that must keep holding (e.g. an FK parent row).
    Shared,
    /// Written, or structurally changed by DDL.
    Exclusive,
}

/// One certification key: a fingerprint and how it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertKey {
    pub fingerprint: Fingerprint,
    pub kind: KeyKind,
}

/// Whether a write-set is certified or executed in total order isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An ordinary transaction: certified against concurrent write-sets.
    Transaction,
    /// A DDL or account statement: always passes, orders everything around it.
    TotalOrderIsolation,
}

/// What the certifier needs to know of one write-set.
#[derive(Debug, Clone, Copy)]
pub struct CertRequest<'a> {
    pub seqno: Seqno,
    /// Last seqno committed on the origin when the transaction began.
    pub depends_on: Seqno,
    pub mode: Mode,
    /// Expanded keys (row keys together with their table and database keys).
    pub keys: &'a [CertKey],
}

/// The outcome for one write-set. Identical on every node for the same input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Commit. When applying in parallel, wait until every seqno up to and
    /// including `apply_after` has committed.
    Pass { apply_after: Seqno },
    /// Roll back (the client gets error 1213).
    Fail(Failure),
}

/// Why a write-set failed certification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A write-set that passed at `with` (after `depends_on`) holds an
    /// overlapping key.
    Conflict { with: Seqno },
    /// `depends_on` is older than the certification window.
    TooOld {
        depends_on: Seqno,
        oldest_allowed: Seqno,
    },
    /// `depends_on` is not before the write-set's own seqno: the origin is
    /// broken. Failing it (rather than stopping) is deterministic and safe.
    DependsOnFuture { depends_on: Seqno },
}

/// A misuse of the certifier that would break determinism; fatal to the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("seqno {got} delivered after seqno {last}: the ordered stream went backwards")]
    OutOfOrder { last: Seqno, got: Seqno },
}
