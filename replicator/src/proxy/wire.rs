//! Payload-level pieces of the MySQL protocol the proxy needs: capability
//! and status flags, length-encoded integers, and the OK / ERR / EOF
//! packets it reads, rewrites or makes itself. Pure functions over byte
//! slices; no I/O.

/// Capability flags (the subset the proxy looks at).
pub mod cap {
    pub const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const CLIENT_COMPRESS: u32 = 0x0000_0020;
    pub const CLIENT_LOCAL_FILES: u32 = 0x0000_0080;
    pub const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
    pub const CLIENT_SSL: u32 = 0x0000_0800;
    pub const CLIENT_TRANSACTIONS: u32 = 0x0000_2000;
    pub const CLIENT_MULTI_STATEMENTS: u32 = 0x0001_0000;
    pub const CLIENT_MULTI_RESULTS: u32 = 0x0002_0000;
    pub const CLIENT_PS_MULTI_RESULTS: u32 = 0x0004_0000;
    pub const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const CLIENT_SESSION_TRACK: u32 = 0x0080_0000;
    pub const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
    /// MariaDB extended capabilities (the upper 32 bits).
    pub const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;
    /// Column definitions carry an extra length-encoded field.
    pub const MARIADB_CLIENT_EXTENDED_METADATA: u32 = 1 << 3;
}

/// Server status flags.
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
}

/// Command bytes.
pub mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;
}

/// A length-encoded integer at the start of `b`: its value and its size.
pub fn lenenc_int(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let (len, value) = match first {
        0..=0xfa => return Some((u64::from(first), 1)),
        0xfc => (2, b.get(1..3)?),
        0xfd => (3, b.get(1..4)?),
        0xfe => (8, b.get(1..9)?),
        _ => return None,
    };
    let mut bytes = [0u8; 8];
    bytes[..len].copy_from_slice(value);
    Some((u64::from_le_bytes(bytes), 1 + len))
}

pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfa => out.push(v as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// The parts of an OK packet (header 0x00, or 0xFE as a result-set
/// terminator under DEPRECATE_EOF) the proxy uses, and where its status
/// flags are so they can be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    /// Byte offset of the status flags in the payload.
    pub status_at: usize,
}

pub fn parse_ok(payload: &[u8]) -> Option<OkInfo> {
    let (affected_rows, a) = lenenc_int(payload.get(1..)?)?;
    let (last_insert_id, b) = lenenc_int(payload.get(1 + a..)?)?;
    let status_at = 1 + a + b;
    let flags = payload.get(status_at..status_at + 4)?;
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status: u16::from_le_bytes([flags[0], flags[1]]),
        warnings: u16::from_le_bytes([flags[2], flags[3]]),
        status_at,
    })
}

/// Status flags of an EOF packet (0xFE, shorter than 9 bytes).
pub fn parse_eof_status(payload: &[u8]) -> Option<u16> {
    let b = payload.get(3..5)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Whether a packet read where a row may come is the end of the rows:
/// an EOF packet, or (DEPRECATE_EOF) an OK packet with the 0xFE header.
/// A row can start with 0xFE only as an 8-byte length, so it is at least
/// 9 bytes long; the OK terminator can be longer (info text) but never a
/// full chunk.
pub fn is_terminator(payload: &[u8], deprecate_eof: bool) -> bool {
    payload.first() == Some(&0xfe)
        && if deprecate_eof {
            payload.len() < super::packet::MAX_CHUNK
        } else {
            payload.len() < 9
        }
}

/// Status flags of a terminator packet of either form.
pub fn terminator_status(payload: &[u8], deprecate_eof: bool) -> Option<u16> {
    if deprecate_eof {
        parse_ok(payload).map(|ok| ok.status)
    } else {
        parse_eof_status(payload)
    }
}

/// Error code, SQL state and message of an ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    pub state: String,
    pub message: String,
}

pub fn parse_err(payload: &[u8]) -> Option<ErrInfo> {
    if payload.first() != Some(&0xff) {
        return None;
    }
    let code = u16::from_le_bytes([*payload.get(1)?, *payload.get(2)?]);
    let (state, message) = match payload.get(3) {
        Some(b'#') => (
            String::from_utf8_lossy(payload.get(4..9)?).into_owned(),
            payload.get(9..)?,
        ),
        _ => ("HY000".to_string(), payload.get(3..).unwrap_or_default()),
    };
    Some(ErrInfo {
        code,
        state,
        message: String::from_utf8_lossy(message).into_owned(),
    })
}

/// An ERR packet payload (protocol 4.1 form).
pub fn err_packet(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut out = vec![0xff];
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    let mut state = state.as_bytes().to_vec();
    state.resize(5, b'0');
    out.extend_from_slice(&state);
    out.extend_from_slice(message.as_bytes());
    out
}

/// An OK packet payload.
pub fn ok_packet(affected_rows: u64, last_insert_id: u64, status: u16, warnings: u16) -> Vec<u8> {
    let mut out = vec![0x00];
    put_lenenc_int(&mut out, affected_rows);
    put_lenenc_int(&mut out, last_insert_id);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&warnings.to_le_bytes());
    out
}

/// Replace the status flags of an OK packet (header 0x00 or 0xFE) in place.
pub fn set_ok_status(payload: &mut [u8], status: u16) -> bool {
    match parse_ok(payload) {
        Some(ok) => {
            payload[ok.status_at..ok.status_at + 2].copy_from_slice(&status.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Replace the status flags of an EOF packet in place.
pub fn set_eof_status(payload: &mut [u8], status: u16) -> bool {
    match payload.get_mut(3..5) {
        Some(b) => {
            b.copy_from_slice(&status.to_le_bytes());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ok_packets_round_trip_and_their_status_can_be_rewritten() {
        let mut p = ok_packet(300, 70_000, status::IN_TRANS | status::AUTOCOMMIT, 2);
        let ok = parse_ok(&p).unwrap();
        assert_eq!(
            (ok.affected_rows, ok.last_insert_id, ok.warnings),
            (300, 70_000, 2)
        );
        assert_eq!(ok.status, status::IN_TRANS | status::AUTOCOMMIT);
        assert!(set_ok_status(&mut p, status::AUTOCOMMIT));
        assert_eq!(parse_ok(&p).unwrap().status, status::AUTOCOMMIT);
        assert_eq!(parse_ok(&p).unwrap().affected_rows, 300);
    }

    #[test]
    fn err_packets_carry_code_state_and_message() {
        let p = err_packet(1213, "40001", "Deadlock found");
        assert_eq!(
            parse_err(&p).unwrap(),
            ErrInfo {
                code: 1213,
                state: "40001".into(),
                message: "Deadlock found".into()
            }
        );
        assert!(parse_err(&[0xff, 1]).is_none());
        assert!(parse_err(&[0x00]).is_none());
    }

    #[test]
    fn terminators_are_told_from_rows() {
        assert!(is_terminator(&[0xfe, 0, 0, 2, 0], false));
        let mut row = vec![0xfe];
        row.extend_from_slice(&[1; 8]);
        assert!(!is_terminator(&row, false));
        assert!(is_terminator(&[0xfe, 0, 0, 2, 0, 0, 0], true));
        assert!(!is_terminator(&[0x01, 0x41], true));
    }

    proptest! {
        #[test]
        fn lenenc_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            prop_assert_eq!(lenenc_int(&out), Some((v, out.len())));
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_ok(&bytes);
            let _ = parse_err(&bytes);
            let _ = parse_eof_status(&bytes);
            let _ = lenenc_int(&bytes);
            let mut b = bytes.clone();
            let _ = set_ok_status(&mut b, 3);
            let _ = set_eof_status(&mut b, 3);
        }
    }
}
