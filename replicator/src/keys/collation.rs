//! String normalization per collation, for key values.
//!
//! A collation is identified by its MariaDB name (as `information_schema`
//! reports it). [`Collation::normalize`] maps a column value to bytes such
//! that any two values the collation calls equal map to the same bytes:
//!
//! - `binary`: the bytes themselves (no padding rule);
//! - `*_bin` (utf8mb4, utf8mb3, latin1): the bytes without trailing spaces
//!   (PAD SPACE), or as they are for `*_nopad_bin`;
//! - `utf8mb4/utf8mb3` `_general_ci`, `_unicode_ci`, `_unicode_520_ci` and
//!   `latin1_swedish_ci`: the concatenated primary weights of the
//!   characters, from tables generated from MariaDB itself (see
//!   [`super::weights`]), without trailing space weights unless `_nopad_`;
//! - anything else: the empty string — every value equal, a conservative
//!   rule that can cause false conflicts but never misses one.

use std::sync::OnceLock;

use super::weights::WeightTable;

/// Which rule a collation's values are normalized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Compare bytes.
    Bytes,
    /// Primary weights from a table.
    Weights(TableId),
    /// Unknown: every value is equal.
    AllEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableId {
    Utf8General,
    Utf8Unicode400,
    Utf8Unicode520,
    Latin1Swedish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Latin1,
    Binary,
}

/// A collation as far as key normalization needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collation {
    encoding: Encoding,
    rule: Rule,
    /// PAD SPACE: trailing spaces do not count.
    pad_space: bool,
}

/// A value that cannot be normalized under its collation (e.g. bytes that
/// are not valid in the column's character set). The caller must fall back
/// to a coarser key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("value is not valid in its column's character set")]
pub struct Unnormalizable;

const UTF8_GENERAL: &[u8] = include_bytes!("data/utf8mb4_general_ci.rpw");
const UTF8_UNICODE_400: &[u8] = include_bytes!("data/utf8mb4_unicode_ci.rpw");
const UTF8_UNICODE_520: &[u8] = include_bytes!("data/utf8mb4_unicode_520_ci.rpw");
const LATIN1_SWEDISH: &[u8] = include_bytes!("data/latin1_swedish_ci.rpw");

fn table(id: TableId) -> &'static WeightTable {
    static TABLES: [OnceLock<WeightTable>; 4] = [const { OnceLock::new() }; 4];
    let (slot, bytes) = match id {
        TableId::Utf8General => (&TABLES[0], UTF8_GENERAL),
        TableId::Utf8Unicode400 => (&TABLES[1], UTF8_UNICODE_400),
        TableId::Utf8Unicode520 => (&TABLES[2], UTF8_UNICODE_520),
        TableId::Latin1Swedish => (&TABLES[3], LATIN1_SWEDISH),
    };
    // The tables are compiled in and covered by tests: a decode failure is a
    // build defect, not an input error.
    slot.get_or_init(|| WeightTable::decode(bytes).expect("built-in collation table is valid"))
}

impl Collation {
    /// The collation named `name` (case-insensitive), e.g.
    /// `utf8mb4_unicode_ci`. Unknown names get the all-equal rule.
    pub fn from_name(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if name == "binary" {
            return Self {
                encoding: Encoding::Binary,
                rule: Rule::Bytes,
                pad_space: false,
            };
        }
        let (charset, rest) = name.split_once('_').unwrap_or((name.as_str(), ""));
        let encoding = match charset {
            "utf8mb4" | "utf8mb3" | "utf8" => Encoding::Utf8,
            "latin1" => Encoding::Latin1,
            _ => {
                return Self {
                    encoding: Encoding::Binary,
                    rule: Rule::AllEqual,
                    pad_space: false,
                };
            }
        };
        let (rest, pad_space) = match rest.split_once("nopad_") {
            Some((a, b)) => (format!("{a}{b}"), false),
            None => (rest.to_string(), true),
        };
        let rule = match (encoding, rest.as_str()) {
            (_, "bin") => Rule::Bytes,
            (Encoding::Utf8, "general_ci") => Rule::Weights(TableId::Utf8General),
            (Encoding::Utf8, "unicode_ci") => Rule::Weights(TableId::Utf8Unicode400),
            (Encoding::Utf8, "unicode_520_ci") => Rule::Weights(TableId::Utf8Unicode520),
            (Encoding::Latin1, "swedish_ci") => Rule::Weights(TableId::Latin1Swedish),
            _ => Rule::AllEqual,
        };
        Self {
            encoding,
            rule,
            pad_space,
        }
    }

    /// Whether this collation is compared exactly (no tables, no fallback).
    pub fn is_all_equal_fallback(&self) -> bool {
        self.rule == Rule::AllEqual
    }

    /// Append the normalized form of `value`, truncated first to
    /// `prefix_chars` characters when the index is a prefix index.
    pub fn normalize(
        &self,
        value: &[u8],
        prefix_chars: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), Unnormalizable> {
        match self.encoding {
            Encoding::Utf8 => {
                let text = std::str::from_utf8(value).map_err(|_| Unnormalizable)?;
                let text = match prefix_chars {
                    Some(n) => text.char_indices().nth(n).map_or(text, |(i, _)| &text[..i]),
                    None => text,
                };
                self.normalize_chars(text.chars().map(u32::from), text.as_bytes(), out);
            }
            Encoding::Latin1 | Encoding::Binary => {
                let value = match prefix_chars {
                    Some(n) => &value[..n.min(value.len())],
                    None => value,
                };
                self.normalize_chars(value.iter().map(|b| u32::from(*b)), value, out);
            }
        }
        Ok(())
    }

    fn normalize_chars(&self, chars: impl Iterator<Item = u32>, raw: &[u8], out: &mut Vec<u8>) {
        match self.rule {
            Rule::AllEqual => {}
            Rule::Bytes => {
                let raw = if self.pad_space {
                    let keep = raw.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
                    &raw[..keep]
                } else {
                    raw
                };
                out.extend_from_slice(raw);
            }
            Rule::Weights(id) => {
                let table = table(id);
                let start = out.len();
                for cp in chars {
                    // A code point the table lacks cannot be stored in the
                    // column; treat it like the replacement character.
                    let weights = table.lookup(cp).or_else(|| table.lookup(0xFFFD));
                    for w in weights.iter().flat_map(|w| w.as_slice().iter()) {
                        out.extend_from_slice(&w.to_be_bytes());
                    }
                }
                if self.pad_space {
                    let space = table.lookup(u32::from(b' ')).map(|w| w.as_slice().to_vec());
                    if let Some(space) = space.filter(|s| s.len() == 1) {
                        let space = space[0].to_be_bytes();
                        while out.len() >= start + 2 && out[out.len() - 2..] == space {
                            out.truncate(out.len() - 2);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(collation: &str, value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        Collation::from_name(collation)
            .normalize(value.as_bytes(), None, &mut out)
            .unwrap();
        out
    }

    fn latin1_key(collation: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Collation::from_name(collation)
            .normalize(value, None, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn case_and_trailing_spaces_under_ci_collations() {
        for c in [
            "utf8mb4_general_ci",
            "utf8mb4_unicode_ci",
            "utf8mb4_unicode_520_ci",
            "utf8mb3_general_ci",
        ] {
            assert_eq!(key(c, "abc"), key(c, "ABC"), "{c}");
            assert_eq!(key(c, "abc"), key(c, "abc   "), "{c}");
            assert_ne!(key(c, "abc"), key(c, "abd"), "{c}");
            assert_ne!(key(c, "abc"), key(c, " abc"), "{c}");
        }
    }

    #[test]
    fn expansions_and_accents() {
        assert_eq!(
            key("utf8mb4_unicode_ci", "ß"),
            key("utf8mb4_unicode_ci", "ss")
        );
        assert_eq!(
            key("utf8mb4_unicode_520_ci", "ß"),
            key("utf8mb4_unicode_520_ci", "SS")
        );
        // general_ci maps ß to s, and does not expand it.
        assert_eq!(
            key("utf8mb4_general_ci", "ß"),
            key("utf8mb4_general_ci", "s")
        );
        assert_eq!(
            key("utf8mb4_general_ci", "é"),
            key("utf8mb4_general_ci", "E")
        );
        assert_eq!(
            key("utf8mb4_unicode_ci", "é"),
            key("utf8mb4_unicode_ci", "e")
        );
    }

    #[test]
    fn supplementary_characters() {
        // utf8mb4_general_ci and unicode_ci weigh every supplementary
        // character as U+FFFD: two different emoji are equal.
        for c in ["utf8mb4_general_ci", "utf8mb4_unicode_ci"] {
            assert_eq!(key(c, "😀"), key(c, "😁"), "{c}");
        }
        assert_ne!(
            key("utf8mb4_unicode_520_ci", "😀"),
            key("utf8mb4_unicode_520_ci", "😁")
        );
        // Mathematical bold A is an A under UCA 5.2.0.
        assert_eq!(
            key("utf8mb4_unicode_520_ci", "𝐀"),
            key("utf8mb4_unicode_520_ci", "a")
        );
    }

    #[test]
    fn bin_and_binary() {
        assert_eq!(key("utf8mb4_bin", "a "), key("utf8mb4_bin", "a"));
        assert_ne!(key("utf8mb4_bin", "a"), key("utf8mb4_bin", "A"));
        assert_ne!(
            key("utf8mb4_nopad_bin", "a "),
            key("utf8mb4_nopad_bin", "a")
        );
        assert_ne!(key("binary", "a "), key("binary", "a"));
        assert_ne!(
            key("utf8mb4_general_nopad_ci", "a "),
            key("utf8mb4_general_nopad_ci", "A")
        );
        assert_eq!(
            key("utf8mb4_general_nopad_ci", "a "),
            key("utf8mb4_general_nopad_ci", "A ")
        );
    }

    #[test]
    fn latin1_swedish() {
        // In latin1_swedish_ci, 'Ä' (0xC4) and 'ä' (0xE4) are equal; 'a' differs.
        assert_eq!(
            latin1_key("latin1_swedish_ci", b"\xC4"),
            latin1_key("latin1_swedish_ci", b"\xE4")
        );
        assert_ne!(
            latin1_key("latin1_swedish_ci", b"a"),
            latin1_key("latin1_swedish_ci", b"\xE4")
        );
        assert_eq!(
            latin1_key("latin1_swedish_ci", b"Ab "),
            latin1_key("latin1_swedish_ci", b"aB")
        );
    }

    #[test]
    fn unknown_collations_call_everything_equal() {
        for c in [
            "utf8mb4_czech_ci",
            "cp1251_general_ci",
            "utf16_unicode_ci",
            "nonsense",
        ] {
            assert!(Collation::from_name(c).is_all_equal_fallback(), "{c}");
            assert_eq!(key(c, "x"), key(c, "y"), "{c}");
        }
    }

    #[test]
    fn prefix_counts_characters() {
        let c = Collation::from_name("utf8mb4_bin");
        let mut a = Vec::new();
        let mut b = Vec::new();
        c.normalize("éèxyz".as_bytes(), Some(2), &mut a).unwrap();
        c.normalize("éèabc".as_bytes(), Some(2), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, "éè".as_bytes());
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let c = Collation::from_name("utf8mb4_unicode_ci");
        assert_eq!(
            c.normalize(b"\xff\xfe", None, &mut Vec::new()),
            Err(Unnormalizable)
        );
    }
}
