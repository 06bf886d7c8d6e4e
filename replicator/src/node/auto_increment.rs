//! Auto-increment control (Galera's `wsrep_auto_increment_control`): every
//! data node gets `auto_increment_increment` = the number of data members
//! and its own `auto_increment_offset`, from the cluster membership, so
//! that concurrent inserts on different nodes never draw the same value
//! (which certification would otherwise turn into conflicts).
//!
//! Owns the server's global values and the spacing sessions compare
//! against ([`AutoIncrement::current`]); the proxy applies the spacing to
//! each session's own connection. Arbitrators hold no data and get no
//! offset. Must not touch anything else on the server.

use std::time::Duration;

use group::{GroupMember, MemberInfo};
use mysql_async::prelude::*;
use tokio::sync::watch;

/// `auto_increment_increment` and `auto_increment_offset` for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spacing {
    pub increment: u16,
    pub offset: u16,
}

/// The spacing of node `me` among `members`: data members ordered by
/// node id; `None` if `me` is not one of them. MariaDB caps both values
/// at 65535.
pub fn spacing(members: &[MemberInfo], me: u64) -> Option<Spacing> {
    let mut data: Vec<u64> = members
        .iter()
        .filter(|m| !m.arbitrator)
        .map(|m| m.node_id)
        .collect();
    data.sort_unstable();
    data.dedup();
    let index = data.iter().position(|&id| id == me)?;
    Some(Spacing {
        increment: u16::try_from(data.len()).unwrap_or(u16::MAX),
        offset: u16::try_from(index + 1).unwrap_or(u16::MAX),
    })
}

/// The spacing in force on this node's server.
#[derive(Clone)]
pub struct AutoIncrement {
    current: watch::Sender<Option<Spacing>>,
}

impl Default for AutoIncrement {
    fn default() -> Self {
        Self {
            current: watch::channel(None).0,
        }
    }
}

impl AutoIncrement {
    /// What sessions must use; `None` until it was first set on the server
    /// (or when control is off).
    pub fn current(&self) -> Option<Spacing> {
        *self.current.borrow()
    }

    /// Follow the membership: whenever this node's spacing changes, set
    /// the server's global values (new connections start with them) and
    /// publish it (sessions already connected switch at their next
    /// statement). Runs until aborted.
    pub async fn keep(self, member: GroupMember, admin: mysql_async::Pool, every: Duration) {
        let mut set: Option<Spacing> = None;
        loop {
            let status = member.status();
            if let Some(wanted) = spacing(&status.members, status.node_id)
                && set != Some(wanted)
            {
                match apply_globally(&admin, wanted).await {
                    Ok(()) => {
                        tracing::info!(
                            node = status.node_id,
                            increment = wanted.increment,
                            offset = wanted.offset,
                            "auto-increment spacing set from the membership"
                        );
                        set = Some(wanted);
                        self.current.send_replace(Some(wanted));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot set the auto-increment spacing; retrying")
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

async fn apply_globally(
    admin: &mysql_async::Pool,
    spacing: Spacing,
) -> Result<(), mysql_async::Error> {
    let mut conn = admin.get_conn().await?;
    conn.query_drop(format!(
        "SET GLOBAL auto_increment_increment = {}, GLOBAL auto_increment_offset = {}",
        spacing.increment, spacing.offset
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(node_id: u64, arbitrator: bool) -> MemberInfo {
        MemberInfo {
            node_id,
            address: String::new(),
            client_address: String::new(),
            voter: true,
            arbitrator,
            matched: None,
        }
    }

    #[test]
    fn arbitrators_get_no_offset_and_do_not_count() {
        let members = [member(30, false), member(10, false), member(20, true)];
        assert_eq!(
            spacing(&members, 10),
            Some(Spacing {
                increment: 2,
                offset: 1
            })
        );
        assert_eq!(
            spacing(&members, 30),
            Some(Spacing {
                increment: 2,
                offset: 2
            })
        );
        assert_eq!(spacing(&members, 20), None);
        assert_eq!(spacing(&members, 99), None);
    }

    proptest! {
        /// Every data member gets a distinct offset in 1..=increment, so
        /// the sequences they draw from never meet.
        #[test]
        fn offsets_are_distinct_and_in_range(ids in proptest::collection::btree_set(any::<u64>(), 1..12)) {
            let members: Vec<MemberInfo> = ids.iter().map(|&id| member(id, false)).collect();
            let mut offsets = std::collections::BTreeSet::new();
            for &id in &ids {
                let s = spacing(&members, id).unwrap();
                prop_assert_eq!(usize::from(s.increment), ids.len());
                prop_assert!(s.offset >= 1 && s.offset <= s.increment);
                prop_assert!(offsets.insert(s.offset));
            }
        }
    }
}
