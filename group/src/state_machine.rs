//! The consensus state machine of a member: it hands committed entries, in
//! order, to the member's consumer (the replicator's applier, or nothing
//! for an arbitrator) and keeps only what Raft itself needs — the last
//! applied log id, the membership, and the last snapshot's metadata.
//!
//! The real state (the database) lives outside: a Raft "snapshot" here is
//! only a position. A member that receives one has missed entries that were
//! purged from the log, and its consumer must take a full state transfer
//! from a donor; [`Committed::SnapshotInstalled`] tells it so.

use std::io;
use std::path::PathBuf;

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::SnapshotOf;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot};
use tokio::sync::mpsc;

use crate::log_store::write_file_atomically;
use crate::types::{Applied, LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// What the consumer receives, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// A committed entry proposed by some member.
    Entry { seqno: u64, data: Vec<u8> },
    /// Everything up to `seqno` was purged before this member saw it: its
    /// state must come from a state transfer consistent at `seqno` or later.
    SnapshotInstalled { seqno: u64 },
    /// An entry with nothing for the consumer (a leader's first entry, a
    /// membership change): it only says that everything up to `seqno` has
    /// been delivered, so a consumer can tell it caught up with a read index.
    Marker { seqno: u64 },
}

/// The state machine handed to openraft.
pub struct CommitStream {
    dir: PathBuf,
    out: mpsc::Sender<Committed>,
    /// Entries at or below this seqno are not delivered (the consumer has
    /// them durably already).
    deliver_after: u64,
    applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<SnapshotMeta>,
}

fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl CommitStream {
    /// A state machine persisting its snapshot metadata in `dir`, delivering
    /// entries after `deliver_after` to `out`.
    pub fn open(
        dir: impl Into<PathBuf>,
        out: mpsc::Sender<Committed>,
        deliver_after: u64,
    ) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("snapshot-meta");
        let snapshot: Option<SnapshotMeta> = match std::fs::read(&path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::other(format!("{} is corrupt: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir,
            out,
            deliver_after,
            applied: None,
            membership: StoredMembership::default(),
            snapshot,
        })
    }

    async fn save_snapshot_meta(&mut self, meta: SnapshotMeta) -> io::Result<()> {
        let path = self.dir.join("snapshot-meta");
        let bytes = serde_json::to_vec(&meta).map_err(io_other)?;
        tokio::task::spawn_blocking(move || write_file_atomically(&path, &bytes).map_err(io_other))
            .await
            .map_err(io_other)??;
        self.snapshot = Some(meta);
        Ok(())
    }

    async fn deliver(&self, item: Committed) -> io::Result<()> {
        self.out
            .send(item)
            .await
            .map_err(|_| io::Error::other("the consumer of committed entries has stopped"))
    }
}

/// Builds a snapshot: the applied position and membership.
pub struct PositionSnapshotBuilder {
    meta: SnapshotMeta,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for PositionSnapshotBuilder {
    type SnapshotData = ();

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, ()>, io::Error> {
        let path = self.dir.join("snapshot-meta");
        let bytes = serde_json::to_vec(&self.meta).map_err(io_other)?;
        tokio::task::spawn_blocking(move || write_file_atomically(&path, &bytes).map_err(io_other))
            .await
            .map_err(io_other)??;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: (),
        })
    }
}

impl RaftStateMachine<TypeConfig> for CommitStream {
    type SnapshotData = ();
    type SnapshotBuilder = PositionSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id;
            match entry.payload {
                EntryPayload::Blank => {
                    if log_id.index > self.deliver_after {
                        self.deliver(Committed::Marker {
                            seqno: log_id.index,
                        })
                        .await?;
                    }
                }
                EntryPayload::Normal(proposal) => {
                    if log_id.index > self.deliver_after {
                        self.deliver(Committed::Entry {
                            seqno: log_id.index,
                            data: proposal.0,
                        })
                        .await?;
                    }
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                    if log_id.index > self.deliver_after {
                        self.deliver(Committed::Marker {
                            seqno: log_id.index,
                        })
                        .await?;
                    }
                }
            }
            self.applied = Some(log_id);
            if let Some(responder) = responder {
                responder.send(Applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        };
        self.snapshot = Some(meta.clone());
        PositionSnapshotBuilder {
            meta,
            dir: self.dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        _snapshot: (),
    ) -> Result<(), io::Error> {
        let seqno = meta.last_log_id.map_or(0, |l| l.index);
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.save_snapshot_meta(meta.clone()).await?;
        if seqno > self.deliver_after {
            self.deliver(Committed::SnapshotInstalled { seqno }).await?;
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, ()>>, io::Error> {
        Ok(self
            .snapshot
            .clone()
            .map(|meta| Snapshot { meta, snapshot: () }))
    }
}
