//! Certification throughput: write-sets of 8 row keys each, certified
//! against an index held at about 1,000,000 keys, on one thread.
//!
//! `cargo bench -p replicator --bench certify` — the last line of output is
//! one JSON object. Two figures: `certify_per_sec` (keys already expanded
//! and hashed, as the certifier receives them) and `end_to_end_per_sec`
//! (expansion of row keys into the row/table/database hierarchy and
//! hashing, measured separately as `expand_per_sec`, plus certification).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replicator::certify::{CertKey, CertRequest, Certifier, KeyKind, Mode, Verdict};
use replicator::keys::certification_keys;
use replicator::writeset::{KeyScope, WriteSetKey};

const KEYS_PER_WRITESET: usize = 8;
const INDEX_KEYS: u64 = 1_000_000;
const MEASURED: usize = 1_000_000;
const TARGET_PER_SEC: f64 = 500_000.0;

fn write_set_keys(rng: &mut StdRng) -> Vec<WriteSetKey> {
    (0..KEYS_PER_WRITESET)
        .map(|_| {
            let table = rng.random_range(0..16u32);
            let row: u64 = rng.random_range(0..1_000_000_000);
            WriteSetKey {
                kind: KeyKind::Exclusive,
                scope: KeyScope::Row {
                    database: b"bench".to_vec(),
                    table: format!("t{table}").into_bytes(),
                    index: "PRIMARY".into(),
                    values: row.to_be_bytes().to_vec(),
                },
            }
        })
        .collect()
}

fn main() {
    let mut rng = StdRng::seed_from_u64(42);
    // The window keeps the index at ~INDEX_KEYS distinct row keys.
    let window = INDEX_KEYS / KEYS_PER_WRITESET as u64;
    let warmup = window as usize + 1;
    let total = warmup + MEASURED;
    eprintln!("generating {total} write-sets of {KEYS_PER_WRITESET} keys...");
    let raw: Vec<Vec<WriteSetKey>> = (0..total).map(|_| write_set_keys(&mut rng)).collect();
    let lags: Vec<u64> = (0..total).map(|_| rng.random_range(0..64)).collect();

    // Expansion into the key hierarchy and hashing, alone.
    let started = Instant::now();
    let expanded: Vec<Vec<CertKey>> = raw.iter().map(|keys| certification_keys(keys)).collect();
    let expand_per_sec = total as f64 / started.elapsed().as_secs_f64();

    // Certification only, on the same expanded keys.
    let mut certifier = Certifier::new(window);
    let mut passed = 0usize;
    let mut measured_from = Instant::now();
    let mut index_keys = 0;
    for (i, keys) in expanded.iter().enumerate() {
        if i == warmup {
            index_keys = certifier.indexed_keys();
            measured_from = Instant::now();
        }
        let seqno = i as u64 + 1;
        let verdict = certifier
            .certify(&CertRequest {
                seqno,
                depends_on: seqno.saturating_sub(1 + lags[i]),
                mode: Mode::Transaction,
                keys,
            })
            .expect("ordered input");
        if i >= warmup && matches!(verdict, Verdict::Pass { .. }) {
            passed += 1;
        }
    }
    let certify_only = MEASURED as f64 / measured_from.elapsed().as_secs_f64();
    // One node does both for every write-set, one after the other.
    let end_to_end = 1.0 / (1.0 / certify_only + 1.0 / expand_per_sec);

    eprintln!("index: {index_keys} keys (window {window} write-sets)");
    eprintln!(
        "certify only: {certify_only:.0} write-sets/s ({:.2}x target)",
        certify_only / TARGET_PER_SEC
    );
    eprintln!("expand + hash only: {expand_per_sec:.0} write-sets/s");
    eprintln!(
        "expand + hash + certify: {end_to_end:.0} write-sets/s ({:.2}x target)",
        end_to_end / TARGET_PER_SEC
    );
    println!(
        "{{\"bench\":\"certify\",\"keys_per_writeset\":{KEYS_PER_WRITESET},\"index_keys\":{index_keys},\
         \"window\":{window},\"measured\":{MEASURED},\"passed\":{passed},\
         \"certify_per_sec\":{certify_only:.0},\"expand_per_sec\":{expand_per_sec:.0},\"end_to_end_per_sec\":{end_to_end:.0},\
         \"target_per_sec\":{TARGET_PER_SEC:.0},\"certify_vs_target\":{:.2}}}",
        certify_only / TARGET_PER_SEC
    );
}
