//! Plain-text certification scenarios (`testdata/*.txt`): a sequence of
//! write-sets and the verdict each must get, checked against both the
//! certifier and the reference model.
//!
//! ```text
//! # comment
//! window 100
//! # seqno mode depends_on keys...            -> expected
//! 1 trx 0 x:shop.items/1 s:shop.users/7      -> pass 0
//! 2 trx 0 x:shop.items/1                     -> conflict 1
//! 3 toi 2 x:shop.items                       -> pass 2
//! ```
//!
//! Keys: `x:` exclusive or `s:` shared, then `db`, `db.table`,
//! `db.table/value` (the PRIMARY index) or `db.table/index=value`. Keys are
//! expanded with [`crate::keys::certification_keys`], so row keys also hold
//! their table and database (shared). Expected: `pass <apply_after>`,
//! `conflict <with>`, `too-old`, `future`, `out-of-order`.

use super::reference::ReferenceCertifier;
use super::{CertError, CertRequest, Certifier, Failure, KeyKind, Mode, Verdict};
use crate::keys::certification_keys;
use crate::writeset::{KeyScope, WriteSetKey};

fn parse_key(token: &str) -> Result<WriteSetKey, String> {
    let (kind, path) = match token.split_once(':') {
        Some(("x", p)) => (KeyKind::Exclusive, p),
        Some(("s", p)) => (KeyKind::Shared, p),
        _ => return Err(format!("key `{token}` must start with x: or s:")),
    };
    let (table_path, row) = match path.split_once('/') {
        Some((t, r)) => (t, Some(r)),
        None => (path, None),
    };
    let scope = match (table_path.split_once('.'), row) {
        (None, None) => KeyScope::Database {
            database: table_path.into(),
        },
        (Some((d, t)), None) => KeyScope::Table {
            database: d.into(),
            table: t.into(),
        },
        (Some((d, t)), Some(row)) => {
            let (index, value) = row.split_once('=').unwrap_or(("PRIMARY", row));
            KeyScope::Row {
                database: d.into(),
                table: t.into(),
                index: index.into(),
                values: value.into(),
            }
        }
        (None, Some(_)) => return Err(format!("row key `{token}` needs db.table/value")),
    };
    Ok(WriteSetKey { kind, scope })
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Pass(u64),
    Conflict(u64),
    TooOld,
    Future,
    OutOfOrder,
}

fn parse_expected(text: &str) -> Result<Expected, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let number = |w: Option<&&str>| -> Result<u64, String> {
        w.ok_or("missing number")?
            .parse()
            .map_err(|e| format!("bad number: {e}"))
    };
    Ok(match words.first().copied() {
        Some("pass") => Expected::Pass(number(words.get(1))?),
        Some("conflict") => Expected::Conflict(number(words.get(1))?),
        Some("too-old") => Expected::TooOld,
        Some("future") => Expected::Future,
        Some("out-of-order") => Expected::OutOfOrder,
        _ => return Err(format!("unknown expectation `{text}`")),
    })
}

fn observed(result: Result<Verdict, CertError>) -> Expected {
    match result {
        Ok(Verdict::Pass { apply_after }) => Expected::Pass(apply_after),
        Ok(Verdict::Fail(Failure::Conflict { with })) => Expected::Conflict(with),
        Ok(Verdict::Fail(Failure::TooOld { .. })) => Expected::TooOld,
        Ok(Verdict::Fail(Failure::DependsOnFuture { .. })) => Expected::Future,
        Err(CertError::OutOfOrder { .. }) => Expected::OutOfOrder,
    }
}

/// Run one scenario file; `Err` describes the first mismatch.
pub fn run(name: &str, text: &str) -> Result<usize, String> {
    let mut certifier: Option<Certifier> = None;
    let mut reference: Option<ReferenceCertifier> = None;
    let mut checked = 0;
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(w) = line.strip_prefix("window ") {
            let window = w.trim().parse().map_err(|e| format!("{at}: {e}"))?;
            certifier = Some(Certifier::new(window));
            reference = Some(ReferenceCertifier::new(window));
            continue;
        }
        let (input, expected) = line
            .split_once("->")
            .ok_or(format!("{at}: expected `... -> verdict`"))?;
        let expected = parse_expected(expected).map_err(|e| format!("{at}: {e}"))?;
        let mut words = input.split_whitespace();
        let mut field = |what: &str| words.next().ok_or(format!("{at}: missing {what}"));
        let seqno: u64 = field("seqno")?.parse().map_err(|e| format!("{at}: {e}"))?;
        let mode = match field("mode")? {
            "trx" => Mode::Transaction,
            "toi" => Mode::TotalOrderIsolation,
            other => return Err(format!("{at}: mode `{other}` is not trx or toi")),
        };
        let depends_on: u64 = field("depends_on")?
            .parse()
            .map_err(|e| format!("{at}: {e}"))?;
        let keys = words
            .map(parse_key)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{at}: {e}"))?;
        let keys = certification_keys(&keys);
        let certifier = certifier
            .as_mut()
            .ok_or(format!("{at}: `window N` must come first"))?;
        let req = CertRequest {
            seqno,
            depends_on,
            mode,
            keys: &keys,
        };
        let got = observed(certifier.certify(&req));
        if got != expected {
            return Err(format!(
                "{at}: `{raw}`: certifier says {got:?}, scenario expects {expected:?}"
            ));
        }
        if got != Expected::OutOfOrder {
            let model = reference.as_mut().expect("set with the certifier");
            let by_model = observed(Ok(model.certify(seqno, depends_on, mode, &keys)));
            if by_model != expected {
                return Err(format!(
                    "{at}: `{raw}`: reference model says {by_model:?}, scenario expects {expected:?}"
                ));
            }
        }
        checked += 1;
    }
    Ok(checked)
}

#[test]
fn scenario_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/certify/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "scenario files missing in {}",
        dir.display()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable scenario");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match run(&name, &text) {
            Ok(checked) => assert!(checked > 0, "{name} checks nothing"),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_wrong_expectation_is_reported() {
    let text = "window 10\n1 trx 0 x:d.t/1 -> pass 0\n2 trx 0 x:d.t/1 -> pass 0\n";
    let err = run("t", text).unwrap_err();
    assert!(err.contains("t:3") && err.contains("Conflict"), "{err}");
}
