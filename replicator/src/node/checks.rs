//! Start-up checks of the local MariaDB: the settings replication depends
//! on and the replicator's own privileges. A node that fails them does not
//! start, and says exactly what to change. Reads only; changes nothing.

use mysql_async::prelude::*;

/// What was found on the server.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version: String,
    pub server_id: u32,
}

/// Every problem found, one per line, with what to change.
#[derive(Debug, thiserror::Error)]
#[error("the local MariaDB is not ready for replication:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct NotReady(pub Vec<String>);

/// (major, minor, patch) of a version string like `10.11.19-MariaDB-…`.
pub fn parse_version(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    Some((major, minor, patch))
}

/// Check the server behind `pool` (the replicator's own account).
pub async fn check_server(pool: &mysql_async::Pool) -> Result<ServerFacts, NotReady> {
    let mut problems = Vec::new();
    let mut conn = pool.get_conn().await.map_err(|e| {
        NotReady(vec![format!(
            "cannot connect with the replicator's account: {e} (check --user/--password and \
             --mariadb-socket/--mariadb-address)"
        )])
    })?;
    type Row = (String, i64, String, String, i64);
    let row: Option<Row> = conn
        .query_first(
            "SELECT @@version, @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id",
        )
        .await
        .map_err(|e| NotReady(vec![format!("reading server settings: {e}")]))?;
    let (version, log_bin, format, image, server_id) =
        row.ok_or_else(|| NotReady(vec!["reading server settings: no row".into()]))?;
    match parse_version(&version) {
        Some(v) if v >= (10, 5, 0) => {}
        _ => problems.push(format!(
            "server version {version}: MariaDB 10.5 or later is required (XA PREPARE in the \
             binary log)"
        )),
    }
    if log_bin != 1 {
        problems.push("log_bin is OFF: start mariadbd with --log-bin".into());
    }
    if !format.eq_ignore_ascii_case("ROW") {
        problems.push(format!("binlog_format is {format}: set binlog_format=ROW"));
    }
    if !image.eq_ignore_ascii_case("FULL") {
        problems.push(format!(
            "binlog_row_image is {image}: set binlog_row_image=FULL"
        ));
    }
    let snapshot: Result<Option<i64>, _> =
        conn.query_first("SELECT @@innodb_snapshot_isolation").await;
    match snapshot {
        Ok(Some(1)) => {}
        Ok(_) => problems.push(
            "innodb_snapshot_isolation is OFF: set innodb_snapshot_isolation=ON (without it a \
             single server allows lost updates)"
                .into(),
        ),
        Err(_) => problems.push(format!(
            "server {version} has no innodb_snapshot_isolation: use MariaDB 10.6.18, 10.11.8 \
             or later"
        )),
    }
    // A commit acknowledged by the cluster is only as durable as the
    // prepared transaction recovery finds: both must reach the disk.
    let durability: Result<Option<(i64, i64)>, _> = conn
        .query_first("SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog")
        .await;
    match durability {
        Ok(Some((1, 1))) => {}
        Ok(Some((flush, sync))) => {
            if flush != 1 {
                problems.push(format!(
                    "innodb_flush_log_at_trx_commit is {flush}: set \
                     innodb_flush_log_at_trx_commit=1 (otherwise a crash can lose a prepared \
                     transaction the cluster already committed)"
                ));
            }
            if sync != 1 {
                problems.push(format!(
                    "sync_binlog is {sync}: set sync_binlog=1 (otherwise a crash can lose the \
                     XA PREPARE the cluster already ordered)"
                ));
            }
        }
        Ok(None) | Err(_) => {
            problems.push("cannot read innodb_flush_log_at_trx_commit and sync_binlog".into())
        }
    }
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let grants = grants.join("\n").to_uppercase();
    let all = grants.contains("GRANT ALL PRIVILEGES ON *.*");
    for (privilege, alternatives) in [
        ("REPLICATION SLAVE", &["REPLICATION SLAVE"][..]),
        (
            "BINLOG MONITOR",
            &["BINLOG MONITOR", "REPLICATION CLIENT", "SUPER"][..],
        ),
    ] {
        if !all && !alternatives.iter().any(|a| grants.contains(a)) {
            problems.push(format!(
                "the replicator's account lacks {privilege}: GRANT {privilege} ON *.* TO <account>"
            ));
        }
    }
    if let Err(e) = conn.query_drop("XA RECOVER").await {
        problems.push(format!(
            "the replicator's account cannot run XA RECOVER ({e}): grant it the privileges \
             listed in docs/operations (or ALL)"
        ));
    }
    if problems.is_empty() {
        Ok(ServerFacts {
            version,
            server_id: u32::try_from(server_id).unwrap_or(0),
        })
    } else {
        Err(NotReady(problems))
    }
}

/// The replicator's own schema: never captured, never replicated.
pub async fn ensure_own_schema(pool: &mysql_async::Pool) -> Result<(), mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    conn.query_drop(
        "CREATE DATABASE IF NOT EXISTS replicator; \
         CREATE TABLE IF NOT EXISTS replicator.snapshot_anchor \
           (id INT PRIMARY KEY) ENGINE=InnoDB; \
         INSERT IGNORE INTO replicator.snapshot_anchor VALUES (1); \
         CREATE TABLE IF NOT EXISTS replicator.applied_position \
           (id INT PRIMARY KEY, seqno BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB; \
         INSERT IGNORE INTO replicator.applied_position VALUES (1, 0); \
         CREATE TABLE IF NOT EXISTS replicator.replaying \
           (xid VARBINARY(200) PRIMARY KEY, seqno BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("10.11.19-MariaDB-0+deb12u1-log"),
            Some((10, 11, 19))
        );
        assert_eq!(parse_version("10.4.3"), Some((10, 4, 3)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("10.4.30").unwrap() < (10, 5, 0));
    }

    #[test]
    fn the_refusal_lists_every_problem() {
        let e = NotReady(vec!["a".into(), "b".into()]);
        assert_eq!(
            e.to_string(),
            "the local MariaDB is not ready for replication:\n  - a\n  - b"
        );
    }
}
