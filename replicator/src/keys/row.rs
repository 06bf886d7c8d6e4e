//! Encoding of an index entry's column values into the `values` of a row key.

use super::collation::{Collation, Unnormalizable};

/// One index column's value, as decoded from a row image.
#[derive(Debug, Clone, Copy)]
pub enum ColumnValue<'a> {
    Null,
    /// Every integer type (signed or unsigned), YEAR, ENUM and SET (stored
    /// as numbers).
    Int(i128),
    /// FLOAT and DOUBLE.
    Float(f64),
    /// DECIMAL, as text.
    Decimal(&'a str),
    /// A character string column and its collation; `prefix_chars` for a
    /// prefix index (`KEY (c(10))`).
    Text {
        bytes: &'a [u8],
        collation: Collation,
        prefix_chars: Option<usize>,
    },
    /// BINARY(n): the server pads with 0x00, so trailing zeros do not count.
    FixedBinary {
        bytes: &'a [u8],
        prefix_bytes: Option<usize>,
    },
    /// Everything compared byte for byte as stored: VARBINARY, BLOB, BIT,
    /// and temporal types in their row-image encoding.
    Bytes {
        bytes: &'a [u8],
        prefix_bytes: Option<usize>,
    },
}

/// Builds the normalized `values` of a row key from an index's columns.
#[derive(Debug, Default)]
pub struct RowKeyEncoder {
    buf: Vec<u8>,
}

/// The outcome of encoding one index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKeyValues {
    /// The normalized values.
    Key(Vec<u8>),
    /// A column is NULL: a unique index holds no entry (NULLs never
    /// collide), so the row has no key in this index.
    HasNull,
}

fn put(buf: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

fn prefix(bytes: &[u8], n: Option<usize>) -> &[u8] {
    n.map_or(bytes, |n| &bytes[..n.min(bytes.len())])
}

/// Decimal text in a canonical form: no sign on zero, no leading zeros in
/// the integer part, no trailing zeros in the fraction (`-00.50` → `0.5`).
fn canonical_decimal(text: &str) -> String {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.is_empty();
    let mut out = String::with_capacity(text.len());
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

impl RowKeyEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encode one index entry. `Err` means a value cannot be normalized and
    /// the caller must use a whole-table key instead (see the safety rule in
    /// the module documentation).
    pub fn encode(&mut self, columns: &[ColumnValue<'_>]) -> Result<RowKeyValues, Unnormalizable> {
        self.buf.clear();
        let mut scratch = Vec::new();
        for column in columns {
            match *column {
                ColumnValue::Null => return Ok(RowKeyValues::HasNull),
                ColumnValue::Int(i) => put(&mut self.buf, 1, &i.to_be_bytes()),
                ColumnValue::Float(f) => {
                    if f.is_nan() {
                        return Err(Unnormalizable);
                    }
                    // 0.0 and -0.0 compare equal.
                    let f = if f == 0.0 { 0.0 } else { f };
                    put(&mut self.buf, 2, &f.to_bits().to_be_bytes());
                }
                ColumnValue::Decimal(text) => {
                    put(&mut self.buf, 3, canonical_decimal(text).as_bytes());
                }
                ColumnValue::Text {
                    bytes,
                    collation,
                    prefix_chars,
                } => {
                    scratch.clear();
                    collation.normalize(bytes, prefix_chars, &mut scratch)?;
                    put(&mut self.buf, 4, &scratch);
                }
                ColumnValue::FixedBinary {
                    bytes,
                    prefix_bytes,
                } => {
                    let bytes = prefix(bytes, prefix_bytes);
                    let keep = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                    put(&mut self.buf, 5, &bytes[..keep]);
                }
                ColumnValue::Bytes {
                    bytes,
                    prefix_bytes,
                } => put(&mut self.buf, 6, prefix(bytes, prefix_bytes)),
            }
        }
        Ok(RowKeyValues::Key(self.buf.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(columns: &[ColumnValue<'_>]) -> RowKeyValues {
        RowKeyEncoder::new().encode(columns).unwrap()
    }

    #[test]
    fn null_in_a_unique_index_gives_no_key() {
        assert_eq!(
            key(&[ColumnValue::Int(1), ColumnValue::Null]),
            RowKeyValues::HasNull
        );
    }

    #[test]
    fn column_boundaries_are_unambiguous() {
        let ci = Collation::from_name("utf8mb4_bin");
        let text = |s: &'static str| ColumnValue::Text {
            bytes: s.as_bytes(),
            collation: ci,
            prefix_chars: None,
        };
        assert_ne!(key(&[text("ab"), text("c")]), key(&[text("a"), text("bc")]));
        assert_ne!(key(&[ColumnValue::Int(1)]), key(&[ColumnValue::Float(1.0)]));
    }

    #[test]
    fn numerically_equal_values_get_equal_keys() {
        assert_eq!(
            key(&[ColumnValue::Float(0.0)]),
            key(&[ColumnValue::Float(-0.0)])
        );
        assert_eq!(
            key(&[ColumnValue::Decimal("-0.00")]),
            key(&[ColumnValue::Decimal("0")])
        );
        assert_eq!(
            key(&[ColumnValue::Decimal("0012.500")]),
            key(&[ColumnValue::Decimal("12.5")])
        );
        assert_ne!(
            key(&[ColumnValue::Decimal("-12.5")]),
            key(&[ColumnValue::Decimal("12.5")])
        );
        assert_eq!(
            key(&[ColumnValue::Int(i128::from(u64::MAX))]),
            key(&[ColumnValue::Int(18446744073709551615)])
        );
    }

    #[test]
    fn binary_padding_and_prefixes() {
        let fixed = |b: &'static [u8]| ColumnValue::FixedBinary {
            bytes: b,
            prefix_bytes: None,
        };
        assert_eq!(key(&[fixed(b"ab\0\0")]), key(&[fixed(b"ab")]));
        assert_ne!(key(&[fixed(b"a\0b")]), key(&[fixed(b"ab")]));
        let pre = |b: &'static [u8]| ColumnValue::Bytes {
            bytes: b,
            prefix_bytes: Some(3),
        };
        assert_eq!(key(&[pre(b"abcX")]), key(&[pre(b"abcY")]));
        assert_ne!(key(&[pre(b"abX")]), key(&[pre(b"abY")]));
    }

    #[test]
    fn unnormalizable_values_are_reported() {
        let text = ColumnValue::Text {
            bytes: b"\xC3",
            collation: Collation::from_name("utf8mb4_general_ci"),
            prefix_chars: None,
        };
        assert!(RowKeyEncoder::new().encode(&[text]).is_err());
        assert!(
            RowKeyEncoder::new()
                .encode(&[ColumnValue::Float(f64::NAN)])
                .is_err()
        );
    }
}
