//! Ends prepared XA transactions from the replicator's own connections:
//! `XA COMMIT` / `XA ROLLBACK` of a transaction whose session is gone (or
//! could not end it), once the log has decided it.
//!
//! MariaDB keeps a prepared transaction attached to the connection that
//! prepared it until that connection ends; until then another connection
//! gets "unknown XID" (1397) although `XA RECOVER` lists it. So 1397 only
//! means "already ended" when `XA RECOVER` no longer lists the xid;
//! otherwise this waits and tries again. It does not decide anything: the
//! caller says which verb the log decided.

use std::time::{Duration, Instant};

use mysql_async::prelude::*;

/// MariaDB's "XAER_NOTA: Unknown XID".
const ER_XAER_NOTA: u16 = 1397;

/// Why a prepared transaction could not be ended.
#[derive(Debug, thiserror::Error)]
pub enum PreparedError {
    #[error("XA {verb} '{xid}' did not succeed within {waited:?}: {last}")]
    GaveUp {
        verb: &'static str,
        xid: String,
        waited: Duration,
        last: String,
    },
}

/// How a prepared transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// This call's `XA COMMIT` / `XA ROLLBACK` ended it.
    Now,
    /// It was no longer prepared (ended earlier, e.g. before a restart).
    Earlier,
}

/// Ends prepared transactions through a pool of the replicator's own
/// connections.
#[derive(Clone)]
pub struct PreparedResolver {
    pool: mysql_async::Pool,
    /// How long to keep trying before giving up.
    patience: Duration,
}

impl PreparedResolver {
    pub fn new(pool: mysql_async::Pool, patience: Duration) -> Self {
        Self { pool, patience }
    }

    /// `XA {verb} 'xid'`, retried while it fails for a reason that can
    /// pass (connection trouble, still attached to its session's
    /// connection); an error only after `patience`.
    pub async fn end(&self, xid: &str, verb: &'static str) -> Result<Ended, PreparedError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let last = match self.try_end(xid, verb).await {
                Ok(ended) => return Ok(ended),
                Err(e) => e,
            };
            if started.elapsed() >= self.patience {
                return Err(PreparedError::GaveUp {
                    verb,
                    xid: xid.to_string(),
                    waited: started.elapsed(),
                    last,
                });
            }
            tracing::debug!(%xid, verb, error = %last, "prepared transaction not ended yet; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn try_end(&self, xid: &str, verb: &str) -> Result<Ended, String> {
        let mut conn = self.pool.get_conn().await.map_err(|e| e.to_string())?;
        match conn.query_drop(format!("XA {verb} '{xid}'")).await {
            Ok(()) => Ok(Ended::Now),
            Err(mysql_async::Error::Server(e)) if e.code == ER_XAER_NOTA => {
                if is_prepared(&mut conn, xid).await? {
                    Err(format!(
                        "'{xid}' is prepared but still attached to its session's connection"
                    ))
                } else {
                    Ok(Ended::Earlier)
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether `XA RECOVER` lists `xid` (as its gtrid).
async fn is_prepared(conn: &mut mysql_async::Conn, xid: &str) -> Result<bool, String> {
    let rows: Vec<(i64, i64, i64, Vec<u8>)> =
        conn.query("XA RECOVER").await.map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .any(|(_, gtrid_len, _, data)| gtrid(*gtrid_len, data) == xid.as_bytes()))
}

/// The gtrid part of an `XA RECOVER` row's data.
pub fn gtrid(gtrid_len: i64, data: &[u8]) -> &[u8] {
    usize::try_from(gtrid_len)
        .ok()
        .and_then(|n| data.get(..n))
        .unwrap_or(data)
}

#[cfg(test)]
mod tests {
    use super::gtrid;

    #[test]
    fn gtrid_is_the_prefix_of_its_length() {
        assert_eq!(gtrid(2, b"x1bq"), b"x1");
        assert_eq!(gtrid(4, b"x1bq"), b"x1bq");
    }

    #[test]
    fn a_bad_length_keeps_the_whole_data() {
        assert_eq!(gtrid(-1, b"x1"), b"x1");
        assert_eq!(gtrid(9, b"x1"), b"x1");
    }
}
