//! Per-character collation weight tables, and their compact file format.
//!
//! The tables are generated from a real MariaDB 10.11 (`WEIGHT_STRING` of
//! every code point) by `cargo run -p e2e --bin gen-collation-tables`, and
//! checked against a live server by `tests/tests/collation_keys.rs`. A table
//! maps each code point (or latin1 byte) to its primary weights: none for an
//! ignorable character, several for an expansion (`ß` → `ss`).
//!
//! # File format (all integers little-endian)
//!
//! `b"RPW1"`, then records until the end, each introduced by a tag byte:
//!
//! | tag | record | meaning |
//! |---|---|---|
//! | 1 | `start:u32 end:u32 base:u16` | implicit weights `[base + (cp >> 15), (cp & 0x7FFF) \| 0x8000]` |
//! | 2 | `start:u32 end:u32 n:u8 w:[u16; n]` | every code point has weights `w` |
//! | 3 | `start:u32 end:u32` | weights `[cp]` (identity) |
//! | 4 | `start:u32 count:u32` then `count` × `n:u8 w:[u16; n]` | explicit weights |
//!
//! Ranges are inclusive and ascending; code points not covered have no
//! representation in the charset (e.g. surrogates).

/// How the weights of a run of code points are found.
#[derive(Debug, Clone)]
enum RunKind {
    Implicit {
        base: u16,
    },
    Constant {
        weights: Vec<u16>,
    },
    Identity,
    /// Offsets into [`WeightTable::pool`], one per code point, plus one past
    /// the end.
    Explicit {
        offsets: Vec<u32>,
    },
}

#[derive(Debug, Clone)]
struct Run {
    start: u32,
    end: u32,
    kind: RunKind,
}

/// A decoded weight table.
#[derive(Debug, Clone)]
pub struct WeightTable {
    runs: Vec<Run>,
    pool: Vec<u16>,
}

/// A table file that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("collation weight table is corrupt at byte {offset}: {what}")]
pub struct TableError {
    pub offset: usize,
    pub what: &'static str,
}

/// A run's weights for one code point, borrowed or computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights<'a> {
    Slice(&'a [u16]),
    Pair([u16; 2]),
    One(u16),
}

impl Weights<'_> {
    pub fn as_slice(&self) -> &[u16] {
        match self {
            Weights::Slice(s) => s,
            Weights::Pair(p) => p,
            Weights::One(w) => std::slice::from_ref(w),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TableError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(TableError {
            offset: self.pos,
            what: "truncated record",
        })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, TableError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TableError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, TableError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn weights(&mut self, into: &mut Vec<u16>) -> Result<(), TableError> {
        let n = self.u8()?;
        for _ in 0..n {
            into.push(self.u16()?);
        }
        Ok(())
    }
}

impl WeightTable {
    /// Decode a table file.
    pub fn decode(bytes: &[u8]) -> Result<Self, TableError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4)? != b"RPW1" {
            return Err(TableError {
                offset: 0,
                what: "bad magic",
            });
        }
        let mut runs: Vec<Run> = Vec::new();
        let mut pool = Vec::new();
        while r.pos < bytes.len() {
            let at = r.pos;
            let tag = r.u8()?;
            let start = r.u32()?;
            let (end, kind) = match tag {
                1 => (r.u32()?, RunKind::Implicit { base: r.u16()? }),
                2 => {
                    let end = r.u32()?;
                    let mut weights = Vec::new();
                    r.weights(&mut weights)?;
                    (end, RunKind::Constant { weights })
                }
                3 => (r.u32()?, RunKind::Identity),
                4 => {
                    let count = r.u32()?;
                    if count == 0 {
                        return Err(TableError {
                            offset: at,
                            what: "empty explicit run",
                        });
                    }
                    let mut offsets = Vec::with_capacity(count as usize + 1);
                    for _ in 0..count {
                        offsets.push(pool.len() as u32);
                        r.weights(&mut pool)?;
                    }
                    offsets.push(pool.len() as u32);
                    (start + (count - 1), RunKind::Explicit { offsets })
                }
                _ => {
                    return Err(TableError {
                        offset: at,
                        what: "unknown record tag",
                    });
                }
            };
            let ordered = runs.last().is_none_or(|last| last.end < start);
            if end < start || !ordered {
                return Err(TableError {
                    offset: at,
                    what: "ranges not ascending",
                });
            }
            runs.push(Run { start, end, kind });
        }
        Ok(Self { runs, pool })
    }

    /// The weights of code point `cp`, or `None` if the table has none.
    pub fn lookup(&self, cp: u32) -> Option<Weights<'_>> {
        let i = self.runs.partition_point(|run| run.end < cp);
        let run = self.runs.get(i).filter(|run| run.start <= cp)?;
        Some(match &run.kind {
            RunKind::Implicit { base } => Weights::Pair([
                base.wrapping_add((cp >> 15) as u16),
                ((cp & 0x7FFF) | 0x8000) as u16,
            ]),
            RunKind::Constant { weights } => Weights::Slice(weights),
            RunKind::Identity => Weights::One(cp as u16),
            RunKind::Explicit { offsets } => {
                let k = (cp - run.start) as usize;
                Weights::Slice(&self.pool[offsets[k] as usize..offsets[k + 1] as usize])
            }
        })
    }

    /// Encode per-code-point weights (ascending, gaps allowed) in the file
    /// format, choosing the most compact run for each stretch.
    pub fn encode(entries: &[(u32, Vec<u16>)]) -> Vec<u8> {
        fn class(cp: u32, w: &[u16]) -> Option<(u8, u16)> {
            if w.len() == 2 && w[1] == ((cp & 0x7FFF) | 0x8000) as u16 {
                return Some((1, w[0].wrapping_sub((cp >> 15) as u16)));
            }
            if cp <= 0xFFFF && w.len() == 1 && w[0] == cp as u16 {
                return Some((3, 0));
            }
            None
        }
        let mut out = b"RPW1".to_vec();
        let put_weights = |out: &mut Vec<u8>, w: &[u16]| {
            out.push(w.len() as u8);
            for x in w {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        let mut i = 0;
        while i < entries.len() {
            let (start, ref w0) = entries[i];
            let contiguous = |j: usize| j < entries.len() && entries[j].0 == entries[j - 1].0 + 1;
            // Longest run of the same rule from i.
            let mut j = i + 1;
            if let Some(c) = class(start, w0) {
                while contiguous(j) && class(entries[j].0, &entries[j].1) == Some(c) {
                    j += 1;
                }
                if j - i >= 4 {
                    out.push(c.0);
                    out.extend_from_slice(&start.to_le_bytes());
                    out.extend_from_slice(&entries[j - 1].0.to_le_bytes());
                    if c.0 == 1 {
                        out.extend_from_slice(&c.1.to_le_bytes());
                    }
                    i = j;
                    continue;
                }
            }
            j = i + 1;
            while contiguous(j) && entries[j].1 == *w0 {
                j += 1;
            }
            if j - i >= 4 {
                out.push(2);
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&entries[j - 1].0.to_le_bytes());
                put_weights(&mut out, w0);
                i = j;
                continue;
            }
            // Explicit: extend until a gap or the start of a long uniform run.
            j = i + 1;
            while contiguous(j) {
                let uniform = (j..j + 4).all(|k| {
                    k < entries.len()
                        && entries[k].0 == entries[j].0 + (k - j) as u32
                        && (entries[k].1 == entries[j].1
                            || (class(entries[k].0, &entries[k].1).is_some()
                                && class(entries[k].0, &entries[k].1)
                                    == class(entries[j].0, &entries[j].1)))
                });
                if uniform {
                    break;
                }
                j += 1;
            }
            out.push(4);
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&((j - i) as u32).to_le_bytes());
            for (_, w) in &entries[i..j] {
                put_weights(&mut out, w);
            }
            i = j;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn weights_of(table: &WeightTable, cp: u32) -> Option<Vec<u16>> {
        table.lookup(cp).map(|w| w.as_slice().to_vec())
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            raw in proptest::collection::btree_map(
                0u32..300,
                prop_oneof![
                    Just(vec![]),
                    Just(vec![7u16]),
                    proptest::collection::vec(any::<u16>(), 0..4),
                ],
                0..200,
            ),
            implicit_from in 1000u32..2000,
        ) {
            let mut entries: Vec<(u32, Vec<u16>)> = raw.into_iter().collect();
            // Add stretches that compress as implicit and identity runs.
            for cp in implicit_from..implicit_from + 50 {
                entries.push((cp, vec![0xFBC0 + (cp >> 15) as u16, ((cp & 0x7FFF) | 0x8000) as u16]));
            }
            for cp in 5000u32..5010 {
                entries.push((cp, vec![cp as u16]));
            }
            let table = WeightTable::decode(&WeightTable::encode(&entries)).unwrap();
            let mut expected = std::collections::BTreeMap::new();
            for (cp, w) in &entries { expected.insert(*cp, w.clone()); }
            for cp in 0..5100 {
                prop_assert_eq!(weights_of(&table, cp), expected.get(&cp).cloned(), "cp {}", cp);
            }
        }

        #[test]
        fn corrupt_tables_are_refused_not_panicked_on(garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = b"RPW1".to_vec();
            bytes.extend(garbage);
            let _ = WeightTable::decode(&bytes);
        }
    }

    #[test]
    fn truncation_is_an_error() {
        let entries: Vec<(u32, Vec<u16>)> = (0..10).map(|cp| (cp, vec![cp as u16 * 3])).collect();
        let bytes = WeightTable::encode(&entries);
        for cut in 5..bytes.len() {
            assert!(WeightTable::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(WeightTable::decode(b"XXXX").is_err());
    }
}
