//! The durable log: a segmented, append-only file of checksummed records.
//!
//! Owns the files in one directory: `segment-<first index>.log`, each a
//! sequence of records `[len: u32][crc32c: u32][index: u64][payload]`
//! (little-endian; the checksum covers index and payload). It knows nothing
//! of Raft: entries are opaque bytes at consecutive indexes.
//!
//! # Durability contract
//!
//! 1. [`LogStore::append`] only buffers into the OS; nothing is durable
//!    until [`LogStore::sync`] returns. Callers acknowledge an entry only
//!    after the `sync` that follows its `append` (group commit: many appends,
//!    one sync).
//! 2. [`LogStore::truncate_from`] is durable when it returns: removed
//!    entries never come back after a crash.
//! 3. [`LogStore::purge_through`] deletes only whole segments whose entries
//!    are all at or below the given index; other entries at or below it may
//!    stay readable. Callers that need "purged" to be exact persist the
//!    purge point themselves, before purging.
//!
//! # Recovery
//!
//! On open every segment is scanned and every checksum verified. A bad
//! record at the end of the last segment, with nothing valid after it, is a
//! torn write from a crash during an append that was never acknowledged: it
//! is cut off (and reported). A bad record anywhere else, or a gap in the
//! indexes, is corruption: the store refuses to open and changes nothing.

pub(crate) mod segment;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use segment::Segment;

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct LogStoreOptions {
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
        }
    }
}

/// What recovery found when the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut off the end of the last segment (a torn write).
    pub torn_bytes: u64,
    /// Empty segment files removed.
    pub empty_segments_removed: usize,
}

/// Errors of the log store. Every one names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log file {path} is corrupt at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error(
        "append of index {got} to a log whose last index is {last}: indexes must be consecutive"
    )]
    NotConsecutive { last: u64, got: u64 },
    #[error("entry of {len} bytes is larger than the {max}-byte record limit")]
    TooLarge { len: usize, max: usize },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The open log. Not thread-safe by itself: the Raft storage adapter wraps
/// it for its writer thread and readers.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    options: LogStoreOptions,
    /// Oldest first; the last one is the one appended to. Never empty of
    /// entries except the last.
    segments: Vec<Segment>,
    /// A segment was created or deleted since the last directory sync.
    dir_dirty: bool,
}

impl LogStore {
    /// Open (or create) the log in `dir`, recovering from a torn tail.
    pub fn open(
        dir: impl Into<PathBuf>,
        options: LogStoreOptions,
    ) -> Result<(Self, RecoveryReport), LogError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            if let Some(first) = segment::parse_file_name(&name.to_string_lossy()) {
                paths.push((first, entry.path()));
            }
        }
        paths.sort();
        let mut report = RecoveryReport::default();
        let mut segments: Vec<Segment> = Vec::new();
        let count = paths.len();
        for (n, (first, path)) in paths.into_iter().enumerate() {
            let is_last = n + 1 == count;
            let (segment, torn) = Segment::recover(path, first, is_last)?;
            report.torn_bytes += torn;
            if let Some(prev) = segments.last() {
                let expected = prev.next_index();
                if segment.first_index() != expected && !segment.is_empty() {
                    return Err(LogError::Corrupt {
                        path: segment.path().to_path_buf(),
                        offset: 0,
                        what: format!(
                            "segment starts at index {} but the previous one ends before {expected}",
                            segment.first_index()
                        ),
                    });
                }
            }
            segments.push(segment);
        }
        // Empty segments other than the last carry nothing; drop them so
        // the invariant "only the last may be empty" holds.
        let mut kept = Vec::with_capacity(segments.len());
        let total = segments.len();
        for (n, segment) in segments.into_iter().enumerate() {
            if segment.is_empty() && n + 1 != total {
                std::fs::remove_file(segment.path()).map_err(io_err(segment.path()))?;
                report.empty_segments_removed += 1;
            } else {
                kept.push(segment);
            }
        }
        let mut store = Self {
            dir,
            options,
            segments: kept,
            dir_dirty: report.empty_segments_removed > 0,
        };
        if report.torn_bytes > 0 || store.dir_dirty {
            store.sync()?;
        }
        Ok((store, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the oldest entry on disk, if any.
    pub fn first_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| !s.is_empty())
            .map(|s| s.first_index())
    }

    /// Index of the newest entry, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.is_empty())
            .map(|s| s.next_index() - 1)
    }

    /// Buffer entries at consecutive indexes after the last one (any index
    /// if the log is empty). Durable only after [`LogStore::sync`].
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), LogError> {
        for (index, payload) in entries {
            match self.last_index() {
                Some(last) if index != last + 1 => {
                    return Err(LogError::NotConsecutive { last, got: index });
                }
                _ => {}
            }
            let needs_new = match self.segments.last() {
                None => true,
                Some(s) if s.is_empty() && s.first_index() != index => true,
                Some(s) => !s.is_empty() && s.len_bytes() >= self.options.segment_bytes,
            };
            if needs_new {
                self.start_segment(index)?;
            }
            let active = self
                .segments
                .last_mut()
                .expect("a segment was just ensured");
            active.append(index, payload)?;
        }
        Ok(())
    }

    fn start_segment(&mut self, first_index: u64) -> Result<(), LogError> {
        // The previous active segment gets no more writes: make it durable.
        if let Some(prev) = self.segments.last_mut() {
            prev.sync()?;
            if prev.is_empty() {
                let prev = self.segments.pop().expect("checked above");
                std::fs::remove_file(prev.path()).map_err(io_err(prev.path()))?;
            }
        }
        let segment = Segment::create(&self.dir, first_index)?;
        self.segments.push(segment);
        self.dir_dirty = true;
        Ok(())
    }

    /// Make every appended entry durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if let Some(active) = self.segments.last_mut() {
            active.sync()?;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Remove every entry at `index` and above, durably.
    pub fn truncate_from(&mut self, index: u64) -> Result<(), LogError> {
        // Newest segments first, so that a crash part-way leaves a prefix.
        while let Some(last) = self.segments.last_mut() {
            if last.first_index() >= index {
                let segment = self.segments.pop().expect("just seen");
                std::fs::remove_file(segment.path()).map_err(io_err(segment.path()))?;
                self.dir_dirty = true;
                continue;
            }
            if !last.is_empty() && last.next_index() > index {
                // Make the deletions above durable first: a crash must not
                // leave a truncated segment followed by a deleted one that
                // comes back (a gap, which recovery refuses).
                if self.dir_dirty {
                    sync_dir(&self.dir)?;
                    self.dir_dirty = false;
                }
                let last = self.segments.last_mut().expect("just seen");
                last.truncate_from(index)?;
            }
            break;
        }
        self.sync()
    }

    /// Delete the segments whose entries are all at or below `index`;
    /// everything, if `index` is at or past the last entry (the next append
    /// may then start at any index). Returns the first index still on disk.
    pub fn purge_through(&mut self, index: u64) -> Result<Option<u64>, LogError> {
        if self.last_index().is_none_or(|last| last <= index) {
            self.clear()?;
            return Ok(None);
        }
        while self.segments[0].next_index() - 1 <= index {
            // Forget a segment only once its file is gone.
            let path = self.segments[0].path().to_path_buf();
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(0);
            self.dir_dirty = true;
        }
        self.sync()?;
        Ok(self.first_index())
    }

    /// Remove everything, durably.
    pub fn clear(&mut self) -> Result<(), LogError> {
        // Newest first, each forgotten only once its file is gone, so a
        // failure part-way leaves a consistent prefix on disk and in memory.
        while let Some(segment) = self.segments.last() {
            let path = segment.path().to_path_buf();
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.pop();
            self.dir_dirty = true;
        }
        self.dir_dirty = true;
        self.sync()
    }

    /// The entry at `index`, if present.
    pub fn read(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        let i = self.segments.partition_point(|s| s.next_index() <= index);
        match self.segments.get(i) {
            Some(s) if s.first_index() <= index => s.read(index).map(Some),
            _ => Ok(None),
        }
    }

    /// The entries in `range` that are present, in order.
    pub fn read_range(&self, range: RangeInclusive<u64>) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let (Some(first), Some(last)) = (self.first_index(), self.last_index()) else {
            return Ok(Vec::new());
        };
        let from = (*range.start()).max(first);
        let to = (*range.end()).min(last);
        let mut out = Vec::new();
        let mut index = from;
        while index <= to {
            let i = self.segments.partition_point(|s| s.next_index() <= index);
            let segment = &self.segments[i];
            let end = to.min(segment.next_index() - 1);
            for (idx, payload) in segment.read_range(index, end)? {
                out.push((idx, payload));
            }
            index = end + 1;
        }
        Ok(out)
    }

    /// The last index of the newest segment that does not fit in
    /// `max_bytes` together with every newer segment: purging through it
    /// keeps the log within `max_bytes` (the newest segment with entries
    /// always stays). `None` when everything fits.
    pub fn purge_point_for_bytes(&self, max_bytes: u64) -> Option<u64> {
        let mut kept = 0u64;
        let mut newest_with_entries = true;
        for segment in self.segments.iter().rev().filter(|s| !s.is_empty()) {
            if !newest_with_entries && kept + segment.len_bytes() > max_bytes {
                return Some(segment.next_index() - 1);
            }
            newest_with_entries = false;
            kept += segment.len_bytes();
        }
        None
    }

    /// The purge point that drops every whole segment last written before
    /// `now - max_age`: the last index of the newest such segment. The
    /// segment being written is always kept.
    pub fn purge_point_for_age(
        &self,
        max_age: std::time::Duration,
        now: std::time::SystemTime,
    ) -> Option<u64> {
        let cutoff = now.checked_sub(max_age)?;
        let mut with_entries = self.segments.iter().filter(|s| !s.is_empty());
        // The newest segment with entries stays, whatever its age.
        let _newest = with_entries.next_back()?;
        with_entries
            .filter(|s| s.last_write() <= cutoff)
            .map(|s| s.next_index() - 1)
            .next_back()
    }

    /// Total bytes of all segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len_bytes()).sum()
    }
}

/// fsync a directory so that file creations, renames and deletions in it
/// are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Replace `path` with `bytes` atomically and durably: write a temporary
/// file, fsync it, rename it over `path`, fsync the directory. After a crash
/// the file holds either the old or the new contents, never a mix.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir)
}
