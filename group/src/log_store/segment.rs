//! One segment file: records appended at the end, an in-memory index of
//! where each record starts, checksum verification on recovery and on read.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{LogError, io_err};

/// `len` + `crc32c` + `index`.
const HEADER: usize = 4 + 4 + 8;
/// Largest payload a record may carry.
pub const MAX_PAYLOAD: usize = 256 << 20;

pub fn file_name(first_index: u64) -> String {
    format!("segment-{first_index:020}.log")
}

pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".log")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload)
}

#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    file: File,
    first_index: u64,
    /// Byte offset of each record; record `i` holds `first_index + i`.
    offsets: Vec<u64>,
    /// Bytes written (records end here).
    len: u64,
    /// Records written since the last sync.
    unsynced: bool,
    /// When a record was last written (the file's mtime when recovered):
    /// retention by age purges whole segments by it.
    last_write: SystemTime,
}

/// What parsing found at one offset.
enum Parsed {
    Record {
        index: u64,
        end: u64,
    },
    /// Not a whole valid record here.
    Bad(String),
}

fn parse_at(bytes: &[u8], at: usize) -> Parsed {
    let rest = &bytes[at..];
    if rest.len() < HEADER {
        return Parsed::Bad(format!(
            "{} bytes, shorter than a record header",
            rest.len()
        ));
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD || rest.len() < HEADER + len {
        return Parsed::Bad(format!("record of {len} bytes runs past the end"));
    }
    let payload = &rest[HEADER..HEADER + len];
    if checksum(index, payload) != crc {
        return Parsed::Bad("checksum mismatch".into());
    }
    Parsed::Record {
        index,
        end: (at + HEADER + len) as u64,
    }
}

impl Segment {
    pub fn create(dir: &Path, first_index: u64) -> Result<Self, LogError> {
        let path = dir.join(file_name(first_index));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Self {
            path,
            file,
            first_index,
            offsets: Vec::new(),
            len: 0,
            unsynced: false,
            last_write: SystemTime::now(),
        })
    }

    /// Scan an existing segment. In the last segment, a bad tail with no
    /// valid record after it is cut off and its size returned.
    pub fn recover(
        path: PathBuf,
        first_index: u64,
        is_last: bool,
    ) -> Result<(Self, u64), LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let mut offsets = Vec::new();
        let mut at = 0usize;
        let mut torn = 0u64;
        while at < bytes.len() {
            let expected = first_index + offsets.len() as u64;
            match parse_at(&bytes, at) {
                Parsed::Record { index, end } if index == expected => {
                    offsets.push(at as u64);
                    at = end as usize;
                }
                Parsed::Record { index, .. } => {
                    return Err(LogError::Corrupt {
                        path,
                        offset: at as u64,
                        what: format!("record has index {index}, expected {expected}"),
                    });
                }
                Parsed::Bad(what) => {
                    // Torn tail only if this is the last segment and no
                    // valid record follows; otherwise acknowledged data
                    // would be silently dropped.
                    // Cheap index check before the checksum, so a large torn
                    // record does not make this scan quadratic.
                    let plausible = |o: usize| {
                        bytes.get(o + 8..o + 16).is_some_and(|b| {
                            let index = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                            index >= expected && index - expected < (bytes.len() as u64)
                        })
                    };
                    let later = (at + 1..bytes.len()).find(|&o| {
                        plausible(o)
                            && matches!(parse_at(&bytes, o), Parsed::Record { index, .. } if index >= expected)
                    });
                    if !is_last || later.is_some() {
                        return Err(LogError::Corrupt {
                            path,
                            offset: at as u64,
                            what: format!("{what}, with valid records after it"),
                        });
                    }
                    torn = (bytes.len() - at) as u64;
                    tracing::warn!(
                        path = %path.display(),
                        offset = at,
                        bytes = torn,
                        reason = %what,
                        "cutting off a torn write at the end of the log"
                    );
                    file.set_len(at as u64).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                    break;
                }
            }
        }
        let len = at as u64;
        let last_write = file
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Ok((
            Self {
                path,
                file,
                first_index,
                offsets,
                len,
                unsynced: false,
                last_write,
            },
            torn,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The index the next record must have.
    pub fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// When a record was last written.
    pub fn last_write(&self) -> SystemTime {
        self.last_write
    }

    pub fn append(&mut self, index: u64, payload: &[u8]) -> Result<(), LogError> {
        debug_assert_eq!(index, self.next_index());
        if payload.len() > MAX_PAYLOAD {
            return Err(LogError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(index, payload).to_le_bytes());
        record.extend_from_slice(&index.to_le_bytes());
        record.extend_from_slice(payload);
        self.file
            .write_all_at(&record, self.len)
            .map_err(io_err(&self.path))?;
        self.offsets.push(self.len);
        self.len += record.len() as u64;
        self.last_write = SystemTime::now();
        self.unsynced = true;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.unsynced {
            self.file.sync_data().map_err(io_err(&self.path))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Drop records at `index` and above (`index` inside this segment).
    pub fn truncate_from(&mut self, index: u64) -> Result<(), LogError> {
        let keep = (index - self.first_index) as usize;
        if keep >= self.offsets.len() {
            return Ok(());
        }
        let new_len = self.offsets[keep];
        self.file.set_len(new_len).map_err(io_err(&self.path))?;
        self.file.sync_all().map_err(io_err(&self.path))?;
        self.offsets.truncate(keep);
        self.len = new_len;
        self.unsynced = false;
        Ok(())
    }

    fn record_end(&self, k: usize) -> u64 {
        self.offsets.get(k + 1).copied().unwrap_or(self.len)
    }

    pub fn read(&self, index: u64) -> Result<Vec<u8>, LogError> {
        Ok(self
            .read_range(index, index)?
            .pop()
            .expect("index is inside this segment")
            .1)
    }

    /// Records `from..=to`, all inside this segment, checksums verified.
    pub fn read_range(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let a = (from - self.first_index) as usize;
        let b = (to - self.first_index) as usize;
        let start = self.offsets[a];
        let end = self.record_end(b);
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut bytes, start)
            .map_err(io_err(&self.path))?;
        let mut out = Vec::with_capacity(b - a + 1);
        for k in a..=b {
            let at = (self.offsets[k] - start) as usize;
            match parse_at(&bytes, at) {
                Parsed::Record { index, end } if index == self.first_index + k as u64 => {
                    out.push((index, bytes[at + HEADER..end as usize].to_vec()));
                }
                _ => {
                    return Err(LogError::Corrupt {
                        path: self.path.clone(),
                        offset: self.offsets[k],
                        what: "record changed on disk since it was written".into(),
                    });
                }
            }
        }
        Ok(out)
    }
}
