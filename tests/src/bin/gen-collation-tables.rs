//! Regenerates the collation weight tables in `replicator/src/keys/data/`
//! from a real MariaDB: starts a private server, asks `WEIGHT_STRING` for
//! every code point (or latin1 byte) under each supported collation, and
//! writes the compact table files.
//!
//! Usage: `cargo run -p e2e --bin gen-collation-tables [OUT_DIR]`

use std::path::PathBuf;

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use replicator::keys::WeightTable;
use replicator::mariadb_server::{MariadbServer, ServerConfig};

/// (file stem, collation, bytes per weight, code point query)
const TABLES: &[(&str, &str, usize, &str)] = &[
    ("utf8mb4_general_ci", "utf8mb4_general_ci", 2, UTF8_QUERY),
    ("utf8mb4_unicode_ci", "utf8mb4_unicode_ci", 2, UTF8_QUERY),
    (
        "utf8mb4_unicode_520_ci",
        "utf8mb4_unicode_520_ci",
        2,
        UTF8_QUERY,
    ),
    ("latin1_swedish_ci", "latin1_swedish_ci", 1, LATIN1_QUERY),
];

const UTF8_QUERY: &str = "SELECT seq, WEIGHT_STRING(CONVERT(CHAR(seq USING utf32) USING utf8mb4) \
     COLLATE {c}) FROM seq_0_to_1114111 WHERE seq NOT BETWEEN 55296 AND 57343 ORDER BY seq";
const LATIN1_QUERY: &str =
    "SELECT seq, WEIGHT_STRING(CHAR(seq USING latin1) COLLATE {c}) FROM seq_0_to_255 ORDER BY seq";

#[tokio::main]
async fn main() -> Result<()> {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("replicator/src/keys/data"));
    let tmp = tempfile::tempdir()?;
    let server = MariadbServer::start(ServerConfig::new(tmp.path(), 0)).await?;
    let mut conn = server.root_conn().await?;
    conn.query_drop("USE mysql").await?;
    let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
    for (stem, collation, width, query) in TABLES {
        let rows: Vec<(u32, Vec<u8>)> = conn
            .query(query.replace("{c}", collation))
            .await
            .with_context(|| format!("weights of {collation}"))?;
        let entries: Vec<(u32, Vec<u16>)> = rows
            .into_iter()
            .map(|(cp, w)| {
                let weights = w
                    .chunks(*width)
                    .map(|c| {
                        if *width == 2 {
                            u16::from_be_bytes([c[0], c[1]])
                        } else {
                            u16::from(c[0])
                        }
                    })
                    .collect();
                (cp, weights)
            })
            .collect();
        let bytes = WeightTable::encode(&entries);
        let path = out_dir.join(format!("{stem}.rpw"));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "{collation}: {} code points, {} bytes -> {} (MariaDB {})",
            entries.len(),
            bytes.len(),
            path.display(),
            version.as_deref().unwrap_or("?")
        );
    }
    drop(conn);
    server.stop().await?;
    Ok(())
}
