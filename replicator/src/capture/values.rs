//! From a column's stored bytes in a row image to the [`ColumnValue`] the
//! key encoder takes: which kind of key value a column's SQL type gives,
//! the reinterpretation of the stored (signed) integer for UNSIGNED
//! columns, and canonical bytes for temporal values (see `image`).
//!
//! Pure: no I/O, no metadata lookups (the caller passes the column's
//! [`ColumnKind`], derived once from `information_schema`, and its binlog
//! type from the table map). It must not decide which indexes get keys;
//! `extract` does.

use super::image::{self, BinlogType, code};
use crate::keys::{Collation, ColumnValue};

/// How a column's values become key values, from `DATA_TYPE`,
/// `COLUMN_TYPE` and `COLLATION_NAME`.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// TINYINT (8), SMALLINT (16), MEDIUMINT (24), INT (32), BIGINT (64).
    Int {
        bits: u32,
        unsigned: bool,
    },
    Year,
    Enum,
    Set,
    Float,
    Decimal,
    Text(Collation),
    FixedBinary,
    /// VARBINARY, BLOB types, BIT, and fixed-size binary types (UUID, INET6,
    /// INET4) whose stored bytes are their identity.
    Bytes,
    Date,
    DateTime,
    Timestamp,
    Time,
    /// A type we do not know how to key (geometry, …): the table gets a
    /// whole-table key instead.
    Unkeyable(String),
}

impl ColumnKind {
    /// The kind of a column as `information_schema.COLUMNS` describes it.
    pub fn from_information_schema(
        data_type: &str,
        column_type: &str,
        collation: Option<&str>,
    ) -> Self {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        let int = |bits| ColumnKind::Int { bits, unsigned };
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "bool" | "boolean" => int(8),
            "smallint" => int(16),
            "mediumint" => int(24),
            "int" | "integer" => int(32),
            "bigint" => int(64),
            "year" => ColumnKind::Year,
            "enum" => ColumnKind::Enum,
            "set" => ColumnKind::Set,
            "float" | "double" | "real" | "double precision" => ColumnKind::Float,
            "decimal" | "numeric" | "fixed" => ColumnKind::Decimal,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "json" => {
                ColumnKind::Text(Collation::from_name(collation.unwrap_or("binary")))
            }
            "binary" => ColumnKind::FixedBinary,
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit" | "uuid"
            | "inet6" | "inet4" => ColumnKind::Bytes,
            "date" => ColumnKind::Date,
            "datetime" => ColumnKind::DateTime,
            "timestamp" => ColumnKind::Timestamp,
            "time" => ColumnKind::Time,
            other => ColumnKind::Unkeyable(other.to_string()),
        }
    }
}

/// An owned key value, borrowed as a [`ColumnValue`] for encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyPart {
    Null,
    Int(i128),
    Float(f64),
    Decimal(String),
    Text {
        bytes: Vec<u8>,
        collation: Collation,
        prefix_chars: Option<usize>,
    },
    FixedBinary {
        bytes: Vec<u8>,
        prefix_bytes: Option<usize>,
    },
    Bytes {
        bytes: Vec<u8>,
        prefix_bytes: Option<usize>,
    },
}

impl KeyPart {
    pub fn as_column_value(&self) -> ColumnValue<'_> {
        match self {
            KeyPart::Null => ColumnValue::Null,
            KeyPart::Int(i) => ColumnValue::Int(*i),
            KeyPart::Float(f) => ColumnValue::Float(*f),
            KeyPart::Decimal(d) => ColumnValue::Decimal(d),
            KeyPart::Text {
                bytes,
                collation,
                prefix_chars,
            } => ColumnValue::Text {
                bytes,
                collation: *collation,
                prefix_chars: *prefix_chars,
            },
            KeyPart::FixedBinary {
                bytes,
                prefix_bytes,
            } => ColumnValue::FixedBinary {
                bytes,
                prefix_bytes: *prefix_bytes,
            },
            KeyPart::Bytes {
                bytes,
                prefix_bytes,
            } => ColumnValue::Bytes {
                bytes,
                prefix_bytes: *prefix_bytes,
            },
        }
    }
}

/// Why a value could not become a key value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertError {
    /// The column's type cannot be keyed: use a whole-table key.
    Unkeyable(String),
    /// The stored value does not fit the column's type: the metadata does
    /// not describe the table the row event was written for.
    Mismatch(String),
}

/// Reinterpret a stored integer, read sign-extended, for an UNSIGNED column
/// of `bits` width.
pub fn unsigned_from_signed(value: i64, bits: u32) -> u64 {
    let raw = value as u64;
    if bits >= 64 {
        raw
    } else {
        raw & ((1u64 << bits) - 1)
    }
}

fn int_bits(code: u8) -> Option<u32> {
    match code {
        code::TINY => Some(8),
        code::SHORT => Some(16),
        code::INT24 => Some(24),
        code::LONG => Some(32),
        code::LONGLONG => Some(64),
        _ => None,
    }
}

/// The bytes of a string or blob value without its length prefix.
fn string_payload(ty: BinlogType, bytes: &[u8]) -> Option<&[u8]> {
    let [m0, m1] = ty.meta;
    let prefix = match ty.code {
        code::VARCHAR | code::VAR_STRING => {
            if u16::from_le_bytes([m0, m1]) < 256 {
                1
            } else {
                2
            }
        }
        code::STRING => {
            if (usize::from((m0 & 0x30) ^ 0x30) << 4) | usize::from(m1) < 256 {
                1
            } else {
                2
            }
        }
        code::TINY_BLOB
        | code::MEDIUM_BLOB
        | code::LONG_BLOB
        | code::BLOB
        | code::GEOMETRY
        | code::JSON => usize::from(m0),
        _ => return None,
    };
    bytes.get(prefix..)
}

/// The key value of one column of a row image: `raw` is its stored bytes
/// (`None` for NULL), `ty` its binlog type, `kind` how to key it, `prefix`
/// the index's prefix length (`SUB_PART`: characters for text, bytes
/// otherwise).
pub fn key_part(
    raw: Option<&[u8]>,
    ty: BinlogType,
    kind: &ColumnKind,
    prefix: Option<usize>,
) -> Result<KeyPart, ConvertError> {
    let Some(bytes) = raw else {
        return Ok(KeyPart::Null);
    };
    if let ColumnKind::Unkeyable(t) = kind {
        return Err(ConvertError::Unkeyable(t.clone()));
    }
    let bad = || {
        ConvertError::Mismatch(format!(
            "a value of binlog type {} ({} bytes) for a column of kind {kind:?}",
            ty.code,
            bytes.len()
        ))
    };
    let part = match kind {
        ColumnKind::Int { bits, unsigned } => {
            if int_bits(ty.code) != Some(*bits) {
                return Err(bad());
            }
            let v = image::signed_int(bytes).ok_or_else(bad)?;
            if *unsigned {
                KeyPart::Int(i128::from(unsigned_from_signed(v, *bits)))
            } else {
                KeyPart::Int(i128::from(v))
            }
        }
        ColumnKind::Year if ty.code == code::YEAR && bytes.len() == 1 => {
            KeyPart::Int(if bytes[0] == 0 {
                0
            } else {
                1900 + i128::from(bytes[0])
            })
        }
        ColumnKind::Enum if ty.code == code::ENUM && bytes.len() <= 2 => {
            KeyPart::Int(i128::from(image::le(bytes)))
        }
        ColumnKind::Set if ty.code == code::SET && bytes.len() <= 8 => {
            KeyPart::Int(i128::from(image::le(bytes)))
        }
        ColumnKind::Float => match (ty.code, bytes.len()) {
            (code::FLOAT, 4) => KeyPart::Float(f64::from(f32::from_le_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3],
            ]))),
            (code::DOUBLE, 8) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                KeyPart::Float(f64::from_le_bytes(b))
            }
            _ => return Err(bad()),
        },
        ColumnKind::Decimal if ty.code == code::NEWDECIMAL => {
            KeyPart::Decimal(image::decimal_text(bytes, ty.meta[0], ty.meta[1]).ok_or_else(bad)?)
        }
        ColumnKind::Text(collation) => KeyPart::Text {
            bytes: string_payload(ty, bytes).ok_or_else(bad)?.to_vec(),
            collation: *collation,
            prefix_chars: prefix,
        },
        ColumnKind::FixedBinary => KeyPart::FixedBinary {
            bytes: string_payload(ty, bytes).ok_or_else(bad)?.to_vec(),
            prefix_bytes: prefix,
        },
        ColumnKind::Bytes => {
            let payload = if ty.code == code::BIT {
                bytes
            } else {
                string_payload(ty, bytes).ok_or_else(bad)?
            };
            KeyPart::Bytes {
                bytes: payload.to_vec(),
                prefix_bytes: prefix,
            }
        }
        ColumnKind::Date | ColumnKind::DateTime | ColumnKind::Timestamp | ColumnKind::Time => {
            KeyPart::Bytes {
                bytes: image::temporal_key(ty, bytes).ok_or_else(bad)?,
                prefix_bytes: None,
            }
        }
        _ => return Err(bad()),
    };
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{RowKeyEncoder, RowKeyValues};

    fn ty(code: u8, m0: u8, m1: u8) -> BinlogType {
        BinlogType {
            code,
            meta: [m0, m1],
        }
    }

    fn int(bits: u32, unsigned: bool) -> ColumnKind {
        ColumnKind::Int { bits, unsigned }
    }

    #[test]
    fn unsigned_columns_reinterpret_the_stored_integer() {
        assert_eq!(unsigned_from_signed(-1, 8), 255);
        assert_eq!(unsigned_from_signed(-128, 8), 128);
        assert_eq!(unsigned_from_signed(-1, 16), 65_535);
        assert_eq!(unsigned_from_signed(-1, 24), 16_777_215);
        assert_eq!(unsigned_from_signed(-2, 32), 4_294_967_294);
        assert_eq!(unsigned_from_signed(-1, 64), u64::MAX);
        assert_eq!(unsigned_from_signed(5, 32), 5);
        let all_ones = [0xffu8; 8];
        for (code, bits) in [
            (code::TINY, 8),
            (code::SHORT, 16),
            (code::INT24, 24),
            (code::LONG, 32),
            (code::LONGLONG, 64),
        ] {
            let bytes = &all_ones[..bits as usize / 8];
            let max = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            assert_eq!(
                key_part(Some(bytes), ty(code, 0, 0), &int(bits, true), None),
                Ok(KeyPart::Int(i128::from(max)))
            );
            assert_eq!(
                key_part(Some(bytes), ty(code, 0, 0), &int(bits, false), None),
                Ok(KeyPart::Int(-1))
            );
        }
        // A width that does not match the metadata is a mismatch.
        assert!(matches!(
            key_part(Some(&[1, 0]), ty(code::SHORT, 0, 0), &int(32, false), None),
            Err(ConvertError::Mismatch(_))
        ));
    }

    #[test]
    fn kinds_from_information_schema() {
        assert_eq!(
            ColumnKind::from_information_schema("int", "int(10) unsigned", None),
            int(32, true)
        );
        assert_eq!(
            ColumnKind::from_information_schema("mediumint", "mediumint(9)", None),
            int(24, false)
        );
        assert_eq!(
            ColumnKind::from_information_schema(
                "varchar",
                "varchar(10)",
                Some("utf8mb4_general_ci")
            ),
            ColumnKind::Text(Collation::from_name("utf8mb4_general_ci"))
        );
        assert!(matches!(
            ColumnKind::from_information_schema("point", "point", None),
            ColumnKind::Unkeyable(_)
        ));
    }

    #[test]
    fn keys_from_values() {
        let ci = ColumnKind::Text(Collation::from_name("utf8mb4_general_ci"));
        let varchar = ty(code::VARCHAR, 80, 0);
        let abc = key_part(Some(b"\x03abc"), varchar, &ci, None).unwrap();
        let upper = key_part(Some(b"\x03ABC"), varchar, &ci, None).unwrap();
        let mut enc = RowKeyEncoder::new();
        let one = KeyPart::Int(1);
        let k1 = enc
            .encode(&[one.as_column_value(), abc.as_column_value()])
            .unwrap();
        let k2 = enc
            .encode(&[one.as_column_value(), upper.as_column_value()])
            .unwrap();
        assert_eq!(k1, k2);
        assert!(matches!(k1, RowKeyValues::Key(_)));
        let null = key_part(None, varchar, &ci, None).unwrap();
        assert_eq!(
            enc.encode(&[one.as_column_value(), null.as_column_value()])
                .unwrap(),
            RowKeyValues::HasNull
        );
        // A long VARCHAR has a two-byte length.
        assert_eq!(
            key_part(
                Some(b"\x01\x00z"),
                ty(code::VARCHAR, 0, 4),
                &ColumnKind::Bytes,
                None
            ),
            Ok(KeyPart::Bytes {
                bytes: b"z".to_vec(),
                prefix_bytes: None
            })
        );
        assert_eq!(
            key_part(
                Some(&[5, 0]),
                ty(code::SET, 0xf8, 2),
                &ColumnKind::Set,
                None
            ),
            Ok(KeyPart::Int(5))
        );
        assert_eq!(
            key_part(Some(&[124]), ty(code::YEAR, 0, 0), &ColumnKind::Year, None),
            Ok(KeyPart::Int(2024))
        );
        assert_eq!(
            key_part(
                Some(&[0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2]),
                ty(code::NEWDECIMAL, 14, 4),
                &ColumnKind::Decimal,
                None
            ),
            Ok(KeyPart::Decimal("1234567890.1234".into()))
        );
        assert_eq!(
            key_part(
                Some(&1.5f64.to_le_bytes()),
                ty(code::DOUBLE, 8, 0),
                &ColumnKind::Float,
                None
            ),
            Ok(KeyPart::Float(1.5))
        );
    }

    #[test]
    fn mismatches_and_unkeyable_types_are_reported() {
        assert!(matches!(
            key_part(
                Some(&[1, 0, 0, 0]),
                ty(code::LONG, 0, 0),
                &ColumnKind::Text(Collation::from_name("binary")),
                None
            ),
            Err(ConvertError::Mismatch(_))
        ));
        assert!(matches!(
            key_part(
                Some(&[1]),
                ty(code::GEOMETRY, 1, 0),
                &ColumnKind::Unkeyable("point".into()),
                None
            ),
            Err(ConvertError::Unkeyable(_))
        ));
        // NULL never needs the type.
        assert_eq!(
            key_part(
                None,
                ty(code::GEOMETRY, 1, 0),
                &ColumnKind::Unkeyable("point".into()),
                None
            ),
            Ok(KeyPart::Null)
        );
    }
}
