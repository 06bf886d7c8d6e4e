//! Fault injection for crash and timing tests: named points in the code
//! where a test can make the process abort, or hold until a file exists.
//!
//! Configured only by the `REPLICATOR_FAILPOINTS` environment variable,
//! read once: `name=action[,name=action…]` with action `abort` (the
//! process dies at once, as under `kill -9`) or `wait-for-file:PATH`
//! (the task waits until `PATH` exists). Unset — the case in production —
//! every point is a no-op costing one lookup in an empty list. A malformed
//! setting is reported once and ignored.
//!
//! Owns nothing else; it must never change behaviour when unset.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const VARIABLE: &str = "REPLICATOR_FAILPOINTS";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Abort,
    WaitForFile(PathBuf),
}

fn parse(spec: &str) -> Result<Vec<(String, Action)>, String> {
    spec.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (name, action) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=action"))?;
            let action = match action.trim() {
                "abort" => Action::Abort,
                other => match other.strip_prefix("wait-for-file:") {
                    Some(path) if !path.is_empty() => Action::WaitForFile(path.into()),
                    _ => return Err(format!("`{part}`: unknown action `{other}`")),
                },
            };
            Ok((name.trim().to_string(), action))
        })
        .collect()
}

fn configured() -> &'static [(String, Action)] {
    static POINTS: OnceLock<Vec<(String, Action)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let Ok(spec) = std::env::var(VARIABLE) else {
            return Vec::new();
        };
        match parse(&spec) {
            Ok(points) => {
                tracing::warn!(%spec, "failpoints are set (a test setting)");
                points
            }
            Err(e) => {
                tracing::error!(%spec, error = %e, "ignoring malformed {VARIABLE}");
                Vec::new()
            }
        }
    })
}

/// Reached point `name`: do what the configuration says, if anything.
pub async fn hit(name: &str) {
    for (point, action) in configured() {
        if point != name {
            continue;
        }
        match action {
            Action::Abort => {
                tracing::warn!(failpoint = name, "aborting the process");
                std::process::abort();
            }
            Action::WaitForFile(path) => {
                tracing::info!(failpoint = name, path = %path.display(), "holding until the file exists");
                while !tokio::fs::try_exists(path).await.unwrap_or(false) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!(
            parse("a=abort, b=wait-for-file:/tmp/x").unwrap(),
            vec![
                ("a".to_string(), Action::Abort),
                ("b".to_string(), Action::WaitForFile("/tmp/x".into()))
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("a").is_err());
        assert!(parse("a=explode").is_err());
        assert!(parse("a=wait-for-file:").is_err());
    }
}
