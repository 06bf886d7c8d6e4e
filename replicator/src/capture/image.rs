//! Row images as the binlog stores them: each column's binlog type (from
//! the table map), the length of each stored value, splitting an image into
//! per-column byte slices, and decoding the value formats key extraction
//! needs (integers, DECIMAL, temporal types).
//!
//! Written here rather than taken from `mysql_common`, whose row decoder
//! panics on some valid MariaDB values (a negative `TIME(2)` overflows in
//! `my_time_packed_from_binary`). Every function here returns an error on
//! malformed input instead of panicking. Layouts follow MariaDB's
//! `Field_*::pack` and `sql/compat56.cc`; pure, no I/O.

use mysql_async::binlog::events::TableMapEvent;

/// Column type codes as they appear in table map events.
pub mod code {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// A column's binlog type: the real type code (ENUM and SET resolved from
/// the STRING metadata) and its table map metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinlogType {
    pub code: u8,
    pub meta: [u8; 2],
}

/// The binlog types of every column of a table map.
pub fn column_types(tme: &TableMapEvent<'_>) -> Result<Vec<BinlogType>, String> {
    let n = tme.columns_count() as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let raw = match tme.get_raw_column_type(i) {
            Ok(Some(t)) => t as u8,
            Ok(None) => return Err(format!("the table map has no type for column {}", i + 1)),
            Err(e) => {
                return Err(format!(
                    "column {} has a type this reader does not know ({e}); compressed columns \
                     are not supported",
                    i + 1
                ));
            }
        };
        let meta = tme
            .get_column_metadata(i)
            .ok_or_else(|| format!("the table map's metadata for column {} is truncated", i + 1))?;
        let mut m = [0u8; 2];
        for (slot, b) in m.iter_mut().zip(meta) {
            *slot = *b;
        }
        let code = if raw == code::STRING && m[0] != 0 {
            match m[0] | 0x30 {
                code::ENUM => code::ENUM,
                code::SET => code::SET,
                code::STRING => code::STRING,
                other => return Err(format!("column {} has string subtype {other}", i + 1)),
            }
        } else {
            raw
        };
        out.push(BinlogType { code, meta: m });
    }
    Ok(out)
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Stored size of a DECIMAL(precision, scale).
pub fn decimal_size(precision: u8, scale: u8) -> Option<usize> {
    let (precision, scale) = (usize::from(precision), usize::from(scale));
    let intg = precision.checked_sub(scale)?;
    Some(intg / 9 * 4 + DIG2BYTES[intg % 9] + scale / 9 * 4 + DIG2BYTES[scale % 9])
}

fn frac_bytes(fsp: u8) -> usize {
    usize::from(fsp.min(6)).div_ceil(2)
}

pub fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Size of a length-prefixed value: prefix plus the length it holds.
fn prefixed(data: &[u8], prefix: usize) -> Result<usize, String> {
    let len = data
        .get(..prefix)
        .ok_or_else(|| "row image truncated in a length prefix".to_string())?;
    usize::try_from(le(len))
        .ok()
        .and_then(|n| n.checked_add(prefix))
        .ok_or_else(|| "absurd value length".into())
}

/// The stored size of the value at the start of `data`.
pub fn value_len(ty: BinlogType, data: &[u8]) -> Result<usize, String> {
    use code::*;
    let [m0, m1] = ty.meta;
    Ok(match ty.code {
        TINY | YEAR => 1,
        SHORT => 2,
        INT24 | DATE | NEWDATE | TIME => 3,
        LONG | FLOAT | TIMESTAMP => 4,
        LONGLONG | DOUBLE | DATETIME => 8,
        NULL => 0,
        TIMESTAMP2 => 4 + frac_bytes(m0),
        DATETIME2 => 5 + frac_bytes(m0),
        TIME2 => 3 + frac_bytes(m0),
        NEWDECIMAL => {
            decimal_size(m0, m1).ok_or_else(|| format!("bad DECIMAL metadata {m0},{m1}"))?
        }
        VARCHAR | VAR_STRING => {
            let max = u16::from_le_bytes([m0, m1]);
            prefixed(data, if max < 256 { 1 } else { 2 })?
        }
        STRING => {
            let max = (usize::from((m0 & 0x30) ^ 0x30) << 4) | usize::from(m1);
            prefixed(data, if max < 256 { 1 } else { 2 })?
        }
        ENUM | SET => usize::from(m1),
        BIT => usize::from(m1) + usize::from(m0 > 0),
        TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB | GEOMETRY | JSON => {
            if !(1..=4).contains(&m0) {
                return Err(format!("bad BLOB length size {m0}"));
            }
            prefixed(data, usize::from(m0))?
        }
        DECIMAL => return Err("pre-5.0 DECIMAL columns are not supported".into()),
        other => return Err(format!("column type {other} is not supported")),
    })
}

/// One row image: each column's stored bytes, `None` for NULL.
pub type Image<'a> = Vec<Option<&'a [u8]>>;

/// Read one full row image (every column present) at `*at` in `data`,
/// advancing `*at` past it.
pub fn read_image<'a>(
    types: &[BinlogType],
    data: &'a [u8],
    at: &mut usize,
) -> Result<Image<'a>, String> {
    let n = types.len();
    let bitmap_len = n.div_ceil(8);
    let nulls = data
        .get(*at..*at + bitmap_len)
        .ok_or_else(|| "row image truncated in its NULL bitmap".to_string())?;
    let mut pos = *at + bitmap_len;
    let mut image = Vec::with_capacity(n);
    for (i, ty) in types.iter().enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) != 0 {
            image.push(None);
            continue;
        }
        let rest = &data[pos.min(data.len())..];
        let len = value_len(*ty, rest).map_err(|e| format!("column {}: {e}", i + 1))?;
        let value = rest
            .get(..len)
            .ok_or_else(|| format!("row image truncated in column {}", i + 1))?;
        image.push(Some(value));
        pos += len;
    }
    *at = pos;
    Ok(image)
}

/// A stored integer (TINY … LONGLONG, little-endian), sign-extended.
pub fn signed_int(bytes: &[u8]) -> Option<i64> {
    let width = bytes.len();
    if !(1..=8).contains(&width) {
        return None;
    }
    let raw = le(bytes);
    let shift = 64 - 8 * width as u32;
    Some(((raw << shift) as i64) >> shift)
}

/// A stored DECIMAL(precision, scale) as text (`-12.500`).
pub fn decimal_text(bytes: &[u8], precision: u8, scale: u8) -> Option<String> {
    if decimal_size(precision, scale)? != bytes.len() || bytes.is_empty() {
        return None;
    }
    let (precision, scale) = (usize::from(precision), usize::from(scale));
    let intg = precision - scale;
    let mut b = bytes.to_vec();
    let negative = b[0] & 0x80 == 0;
    b[0] ^= 0x80;
    if negative {
        for x in &mut b {
            *x = !*x;
        }
    }
    let mut at = 0usize;
    let mut group = |digits: usize| -> Option<String> {
        let size = if digits == 9 { 4 } else { DIG2BYTES[digits] };
        let value = be(b.get(at..at + size)?);
        at += size;
        if value >= 10u64.pow(digits as u32) {
            return None;
        }
        Some(format!("{value:0digits$}"))
    };
    let mut int = String::new();
    if intg % 9 > 0 {
        int.push_str(&group(intg % 9)?);
    }
    for _ in 0..intg / 9 {
        int.push_str(&group(9)?);
    }
    let mut frac = String::new();
    for _ in 0..scale / 9 {
        frac.push_str(&group(9)?);
    }
    if scale % 9 > 0 {
        frac.push_str(&group(scale % 9)?);
    }
    let int = int.trim_start_matches('0');
    let mut out = String::with_capacity(precision + 2);
    if negative {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(&frac);
    }
    Some(out)
}

/// MariaDB's packed temporal value: integer part shifted left 24 bits plus
/// microseconds (`MY_PACKED_TIME_MAKE`).
fn packed(intpart: i64, frac: i64) -> i64 {
    (intpart << 24) + frac
}

/// DATETIME2 → packed datetime (independent of the column's precision).
pub fn datetime2_packed(bytes: &[u8], fsp: u8) -> Option<i64> {
    if bytes.len() != 5 + frac_bytes(fsp) {
        return None;
    }
    let intpart = be(&bytes[..5]) as i64 - 0x80_0000_0000;
    let frac = match fsp.min(6) {
        0 => 0,
        1 | 2 => i64::from(bytes[5] as i8) * 10_000,
        3 | 4 => i64::from(i16::from_be_bytes([bytes[5], bytes[6]])) * 100,
        _ => ((be(&bytes[5..8]) as i64) << 40) >> 40,
    };
    Some(packed(intpart, frac))
}

/// TIME2 → packed time (independent of the column's precision).
pub fn time2_packed(bytes: &[u8], fsp: u8) -> Option<i64> {
    if bytes.len() != 3 + frac_bytes(fsp) {
        return None;
    }
    const INT_OFS: i64 = 0x80_0000;
    let mut intpart = be(&bytes[..3]) as i64 - INT_OFS;
    Some(match fsp.min(6) {
        0 => packed(intpart, 0),
        1 | 2 => {
            let mut frac = i64::from(bytes[3]);
            if intpart < 0 && frac != 0 {
                intpart += 1;
                frac -= 0x100;
            }
            packed(intpart, frac * 10_000)
        }
        3 | 4 => {
            let mut frac = be(&bytes[3..5]) as i64;
            if intpart < 0 && frac != 0 {
                intpart += 1;
                frac -= 0x1_0000;
            }
            packed(intpart, frac * 100)
        }
        _ => be(&bytes[..6]) as i64 - 0x8000_0000_0000,
    })
}

/// TIMESTAMP2 → (seconds, microseconds).
pub fn timestamp2(bytes: &[u8], fsp: u8) -> Option<(u64, i64)> {
    if bytes.len() != 4 + frac_bytes(fsp) {
        return None;
    }
    let sec = be(&bytes[..4]);
    let usec = match fsp.min(6) {
        0 => 0,
        1 | 2 => i64::from(bytes[4]) * 10_000,
        3 | 4 => i64::from(i16::from_be_bytes([bytes[4], bytes[5]])) * 100,
        _ => ((be(&bytes[4..7]) as i64) << 40) >> 40,
    };
    Some((sec, usec))
}

/// Canonical key bytes of a temporal value of binlog type `ty`: equal
/// values give equal bytes whatever the column's fractional precision.
pub fn temporal_key(ty: BinlogType, bytes: &[u8]) -> Option<Vec<u8>> {
    let tagged = |tag: u8, v: i64| {
        let mut out = vec![tag];
        out.extend_from_slice(&v.to_be_bytes());
        out
    };
    match ty.code {
        code::DATETIME2 => datetime2_packed(bytes, ty.meta[0]).map(|v| tagged(b'D', v)),
        code::TIME2 => time2_packed(bytes, ty.meta[0]).map(|v| tagged(b'T', v)),
        code::TIMESTAMP2 => timestamp2(bytes, ty.meta[0]).map(|(s, us)| {
            let mut out = tagged(b'S', s as i64);
            out.extend_from_slice(&us.to_be_bytes());
            out
        }),
        code::TIMESTAMP if bytes.len() == 4 => {
            let mut out = tagged(b'S', le(bytes) as i64);
            out.extend_from_slice(&0i64.to_be_bytes());
            Some(out)
        }
        // Old formats and DATE: the stored integer is canonical.
        code::DATE | code::NEWDATE | code::TIME | code::DATETIME => {
            let mut out = vec![b'O', ty.code];
            out.extend_from_slice(bytes);
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(code: u8, m0: u8, m1: u8) -> BinlogType {
        BinlogType {
            code,
            meta: [m0, m1],
        }
    }

    #[test]
    fn decimal_layout_from_the_mysql_documentation() {
        // decimal.c: DECIMAL(14,4) 1234567890.1234 is 81 0D FB 38 D2 04 D2.
        let pos = [0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2];
        assert_eq!(decimal_size(14, 4), Some(7));
        assert_eq!(
            decimal_text(&pos, 14, 4).as_deref(),
            Some("1234567890.1234")
        );
        let neg: Vec<u8> = pos.iter().map(|b| !b).collect();
        assert_eq!(
            decimal_text(&neg, 14, 4).as_deref(),
            Some("-1234567890.1234")
        );
        // Zero in DECIMAL(5,2): 80 00 00.
        assert_eq!(decimal_text(&[0x80, 0, 0], 5, 2).as_deref(), Some("0.00"));
        // Wrong size or digits out of range: refused, not misread.
        assert_eq!(decimal_text(&pos[..6], 14, 4), None);
        assert_eq!(decimal_text(&[0x80, 0xff, 0xff], 5, 2), None);
        assert_eq!(decimal_size(2, 5), None);
    }

    #[test]
    fn integers_are_sign_extended() {
        assert_eq!(signed_int(&[0xff]), Some(-1));
        assert_eq!(signed_int(&[0xff, 0xff, 0x7f]), Some(8_388_607));
        assert_eq!(signed_int(&[0, 0, 0x80]), Some(-8_388_608));
        assert_eq!(signed_int(&[0xff; 8]), Some(-1));
        assert_eq!(signed_int(&[]), None);
    }

    #[test]
    fn temporal_values_decode_independently_of_precision() {
        // 2024-02-29 23:59:59.5 as DATETIME(1) and DATETIME(6).
        let ymd = ((2024i64 * 13 + 2) << 5) | 29;
        let hms = (23 << 12) | (59 << 6) | 59;
        let int = ((ymd << 17) | hms) + 0x80_0000_0000;
        let mut d1 = int.to_be_bytes()[3..].to_vec();
        d1.push(50);
        let mut d6 = int.to_be_bytes()[3..].to_vec();
        d6.extend_from_slice(&500_000u32.to_be_bytes()[1..]);
        assert_eq!(datetime2_packed(&d1, 1), datetime2_packed(&d6, 6));
        assert_eq!(
            datetime2_packed(&d1, 1),
            Some(((ymd << 17 | hms) << 24) + 500_000)
        );
        assert_eq!(datetime2_packed(&d1, 6), None);
        // TIME(2) -838:59:59.99 from a 10.11 binlog: 4b 91 04 9d.
        let t = time2_packed(&[0x4b, 0x91, 0x04, 0x9d], 2).unwrap();
        let hms = (838i64 << 12) | (59 << 6) | 59;
        assert_eq!(t, -((hms << 24) + 990_000));
        // TIME(0) -01:00:00: 7f f0 00.
        assert_eq!(
            time2_packed(&[0x7f, 0xf0, 0x00], 0),
            Some(-((1i64 << 12) << 24))
        );
        assert_eq!(
            temporal_key(ty(code::TIME2, 0, 0), &[0x7f, 0xf0, 0x00]),
            temporal_key(ty(code::TIME2, 6, 0), &{
                let v = (-((1i64 << 12) << 24) + 0x8000_0000_0000) as u64;
                v.to_be_bytes()[2..].to_vec()
            })
        );
        assert_eq!(
            timestamp2(&[0, 0, 0, 12, 0x01, 0xf4], 3),
            Some((12, 50_000))
        );
    }

    #[test]
    fn images_split_into_columns() {
        let types = [
            ty(code::LONG, 0, 0),
            ty(code::VARCHAR, 20, 0),
            ty(code::BLOB, 2, 0),
            ty(code::STRING, 0xfe, 10),
            ty(code::NEWDECIMAL, 5, 2),
        ];
        // NULL bitmap: column 3 (STRING) is NULL.
        let data = [
            0b0000_1000,
            7,
            0,
            0,
            0,
            2,
            b'h',
            b'i',
            3,
            0,
            b'a',
            b'b',
            b'c',
            0x80,
            0,
            5,
        ];
        let mut at = 0;
        let image = read_image(&types, &data, &mut at).unwrap();
        assert_eq!(at, data.len());
        assert_eq!(image[0], Some(&[7u8, 0, 0, 0][..]));
        assert_eq!(image[1], Some(&[2u8, b'h', b'i'][..]));
        assert_eq!(image[2], Some(&[3u8, 0, b'a', b'b', b'c'][..]));
        assert_eq!(image[3], None);
        assert_eq!(
            decimal_text(image[4].unwrap(), 5, 2).as_deref(),
            Some("0.05")
        );
        // Truncated anywhere: an error, never a panic.
        for cut in 0..data.len() {
            let mut at = 0;
            assert!(read_image(&types, &data[..cut], &mut at).is_err(), "{cut}");
        }
        assert!(value_len(ty(code::BLOB, 9, 0), &[0; 9]).is_err());
        assert!(value_len(ty(200, 0, 0), &[]).is_err());
    }
}
