//! Network partitions between processes on loopback hosts, with nftables.
//!
//! Each member listens on its own 127.0.0.N and connects from it, all on
//! one port per test; a rule set drops every packet between one host and
//! the others on that port only, so tests running in parallel on the same
//! hosts (with other ports) are not touched. The rules live in a table of
//! their own, removed when the [`Partition`] is dropped (the heal).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// An active partition; dropping it heals the network.
pub struct Partition {
    table: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn nft(script: &str) -> Result<(), String> {
    let out = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| format!("running nft: {e} (install nftables; tests run as root)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the rules: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Partition {
    /// Cut `host` (an IP address) off from everyone on `port`, both ways.
    pub fn isolate(host: &str, port: u16) -> Self {
        let table = format!(
            "e2e_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut rules = String::new();
        for dir in ["saddr", "daddr"] {
            for p in ["sport", "dport"] {
                rules.push_str(&format!("    ip {dir} {host} tcp {p} {port} drop\n"));
            }
        }
        // Loopback traffic passes both hooks; dropping on output is enough,
        // input is covered too for packets already in flight.
        let script = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n  chain in {{\n    type filter hook input priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        nft(&script).unwrap_or_else(|e| panic!("cannot partition {host}:{port}: {e}"));
        Self { table }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table inet {}\n", self.table)) {
            eprintln!("healing the partition failed: {e}");
        }
    }
}
