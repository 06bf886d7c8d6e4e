//! Tests of the log store: round trips, truncation, purge, recovery from
//! torn tails, refusal of corruption, and a model-based property test.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;

fn small() -> LogStoreOptions {
    LogStoreOptions { segment_bytes: 200 }
}

fn payload(index: u64) -> Vec<u8> {
    format!("entry-{index}-")
        .repeat((index % 5 + 1) as usize)
        .into_bytes()
}

fn append_range(store: &mut LogStore, range: std::ops::RangeInclusive<u64>) {
    let payloads: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
    store
        .append(payloads.iter().map(|(i, p)| (*i, p.as_slice())))
        .unwrap();
    store.sync().unwrap();
}

fn assert_holds(store: &LogStore, range: std::ops::RangeInclusive<u64>) {
    assert_eq!(store.first_index(), Some(*range.start()));
    assert_eq!(store.last_index(), Some(*range.end()));
    for i in range.clone() {
        assert_eq!(store.read(i).unwrap(), Some(payload(i)), "entry {i}");
    }
    let all = store.read_range(range.clone()).unwrap();
    assert_eq!(all.len() as u64, range.end() - range.start() + 1);
    assert!(all.iter().all(|(i, p)| *p == payload(*i)));
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn entries_survive_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, report) = LogStore::open(dir.path(), small()).unwrap();
    assert_eq!(report, RecoveryReport::default());
    append_range(&mut store, 1..=50);
    assert!(
        segment_files(dir.path()).len() > 3,
        "small segments roll over"
    );
    drop(store);
    let (store, report) = LogStore::open(dir.path(), small()).unwrap();
    assert_eq!(report, RecoveryReport::default());
    assert_holds(&store, 1..=50);
    assert_eq!(store.read(51).unwrap(), None);
    assert_eq!(store.read(0).unwrap(), None);
}

#[test]
fn appends_must_be_consecutive() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 10..=12);
    let err = store.append([(14u64, b"x".as_slice())]).unwrap_err();
    assert!(
        matches!(err, LogError::NotConsecutive { last: 12, got: 14 }),
        "{err}"
    );
    assert_holds(&store, 10..=12);
}

#[test]
fn truncation_is_durable_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 1..=40);
    store.truncate_from(17).unwrap();
    assert_holds(&store, 1..=16);
    drop(store);
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    assert_holds(&store, 1..=16);
    append_range(&mut store, 17..=20);
    drop(store);
    let (store, _) = LogStore::open(dir.path(), small()).unwrap();
    assert_holds(&store, 1..=20);
}

#[test]
fn purge_deletes_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 1..=60);
    let before = store.disk_bytes();
    let first = store.purge_through(30).unwrap().unwrap();
    assert!(first <= 31, "nothing above the purge point is deleted");
    assert!(first > 1, "whole segments below it are");
    assert!(store.disk_bytes() < before);
    assert_holds(&store, first..=60);
    drop(store);
    let (store, _) = LogStore::open(dir.path(), small()).unwrap();
    assert_holds(&store, first..=60);
}

#[test]
fn the_bytes_window_keeps_the_newest_segments_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 1..=60);
    let total = store.disk_bytes();
    assert_eq!(store.purge_point_for_bytes(total), None, "everything fits");
    let limit = total / 2;
    let point = store.purge_point_for_bytes(limit).unwrap();
    store.purge_through(point).unwrap();
    assert!(
        store.disk_bytes() <= limit,
        "{} > {limit}",
        store.disk_bytes()
    );
    assert_holds(&store, point + 1..=60);
    assert_eq!(
        store.purge_point_for_bytes(store.disk_bytes()),
        None,
        "what was kept fits"
    );
    // A limit smaller than one segment still keeps the one being written.
    let point = store.purge_point_for_bytes(1).unwrap();
    store.purge_through(point).unwrap();
    assert_eq!(store.last_index(), Some(60));
    assert_eq!(store.purge_point_for_bytes(1), None);
}

#[test]
fn purge_point_for_age_drops_old_segments_but_never_the_one_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 1..=60);
    let hour = std::time::Duration::from_secs(3600);
    let now = std::time::SystemTime::now();
    assert_eq!(
        store.purge_point_for_age(hour, now),
        None,
        "nothing is an hour old"
    );
    // An hour later every segment is old; the newest one still stays.
    let later = now + 2 * hour;
    let point = store.purge_point_for_age(hour, later).unwrap();
    assert!(point < 60, "the segment being written is kept: {point}");
    store.purge_through(point).unwrap();
    assert_holds(&store, point + 1..=60);
    assert_eq!(store.purge_point_for_age(hour, later), None);
    // Ages survive a reopen (taken from the files).
    drop(store);
    let (store, _) = LogStore::open(dir.path(), small()).unwrap();
    assert_eq!(store.purge_point_for_age(hour, now), None);
}

#[test]
fn purging_everything_lets_the_log_restart_at_any_index() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 1..=20);
    assert_eq!(store.purge_through(100).unwrap(), None);
    assert_eq!(store.last_index(), None);
    append_range(&mut store, 101..=105);
    drop(store);
    let (store, _) = LogStore::open(dir.path(), small()).unwrap();
    assert_holds(&store, 101..=105);
}

#[test]
fn a_torn_tail_is_cut_off_and_everything_synced_survives() {
    for tail in [
        &b"\x05\x00"[..], // half a header
        &b"\x40\x00\x00\x00\x00\x00\x00\x00\x15\x00\x00\x00\x00\x00\x00\x00abc"[..], // header, short payload
        &[0u8; 37][..], // zeros from a file extended but never written
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
        append_range(&mut store, 1..=20);
        drop(store);
        let last = segment_files(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let synced_len = bytes.len();
        bytes.extend_from_slice(tail);
        std::fs::write(&last, &bytes).unwrap();

        let (mut store, report) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
        assert_eq!(report.torn_bytes, tail.len() as u64);
        assert_holds(&store, 1..=20);
        assert_eq!(std::fs::metadata(&last).unwrap().len() as usize, synced_len);
        append_range(&mut store, 21..=21);
        assert_holds(&store, 1..=21);
    }
}

#[test]
fn a_half_written_last_record_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
    append_range(&mut store, 1..=10);
    drop(store);
    let last = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    // Cut the last record in half.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (store, report) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
    assert!(report.torn_bytes > 0);
    assert_holds(&store, 1..=9);
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn directory_snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn corruption_before_valid_records_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
    append_range(&mut store, 1..=10);
    drop(store);
    let last = segment_files(dir.path()).pop().unwrap();
    flip_byte(&last, 20); // inside the first record's payload
    let before = directory_snapshot(dir.path());
    let err = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { offset: 0, .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(directory_snapshot(dir.path()), before);
}

#[test]
fn corruption_in_an_older_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 1..=40);
    drop(store);
    let files = segment_files(dir.path());
    let older = &files[files.len() - 2];
    let len = std::fs::metadata(older).unwrap().len() as usize;
    flip_byte(older, len - 1); // the last record of a segment that is not last
    let before = directory_snapshot(dir.path());
    assert!(matches!(
        LogStore::open(dir.path(), small()),
        Err(LogError::Corrupt { .. })
    ));
    assert_eq!(directory_snapshot(dir.path()), before);
}

#[test]
fn a_missing_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
    append_range(&mut store, 1..=40);
    drop(store);
    let files = segment_files(dir.path());
    std::fs::remove_file(&files[1]).unwrap();
    let err = LogStore::open(dir.path(), small()).unwrap_err();
    assert!(err.to_string().contains("previous one ends"), "{err}");
}

#[test]
fn corruption_found_on_read_is_an_error_not_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
    append_range(&mut store, 1..=3);
    let last = segment_files(dir.path()).pop().unwrap();
    flip_byte(&last, 20);
    assert!(matches!(store.read(1), Err(LogError::Corrupt { .. })));
}

#[test]
fn atomic_file_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vote");
    write_file_atomically(&path, b"one").unwrap();
    write_file_atomically(&path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    assert!(!path.with_extension("tmp").exists());
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Truncate(u8),
    Purge(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..8).prop_map(Op::Append),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => any::<u8>().prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The store behaves as an ordered map with suffix truncation and
    /// prefix purge, across reopens.
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path(), small()).unwrap();
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut next = 1u64;
        for op in ops {
            match op {
                Op::Append(n) => {
                    let batch: Vec<(u64, Vec<u8>)> = (next..next + u64::from(n)).map(|i| (i, payload(i))).collect();
                    store.append(batch.iter().map(|(i, p)| (*i, p.as_slice()))).unwrap();
                    store.sync().unwrap();
                    model.extend(batch);
                    next += u64::from(n);
                }
                Op::Truncate(at) => {
                    let Some((&first, _)) = model.first_key_value() else { continue };
                    let index = first + u64::from(at) % (next - first + 1);
                    store.truncate_from(index).unwrap();
                    model.retain(|i, _| *i < index);
                    next = index.max(first);
                    if model.is_empty() {
                        // An empty log may restart anywhere; keep counting.
                        next = index;
                    }
                }
                Op::Purge(at) => {
                    let Some((&first, _)) = model.first_key_value() else { continue };
                    let index = first + u64::from(at) % (next - first + 1);
                    let kept = store.purge_through(index).unwrap();
                    match kept {
                        Some(kept) => {
                            prop_assert!(kept <= index + 1);
                            model.retain(|i, _| *i >= kept);
                        }
                        None => {
                            model.clear();
                            next = index + 1;
                        }
                    }
                }
                Op::Reopen => {
                    drop(store);
                    let (s, report) = LogStore::open(dir.path(), small()).unwrap();
                    prop_assert_eq!(report.torn_bytes, 0);
                    store = s;
                }
            }
            prop_assert_eq!(store.first_index(), model.first_key_value().map(|(i, _)| *i));
            prop_assert_eq!(store.last_index(), model.last_key_value().map(|(i, _)| *i));
            if let (Some(first), Some(last)) = (store.first_index(), store.last_index()) {
                let all = store.read_range(first..=last).unwrap();
                let want: Vec<(u64, Vec<u8>)> = model.clone().into_iter().collect();
                prop_assert_eq!(all, want);
            }
        }
    }
}
