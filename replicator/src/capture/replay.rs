//! The SQL that replays a captured row-event body on another server:
//! `BINLOG '<base64>'` statements, the format description first (checked on
//! MariaDB 10.11: the server refuses row events in a `BINLOG` statement until
//! a format description event was given in the session).
//!
//! Owns the statement text and its base64 encoding only; running the
//! statements (in a transaction, in commit order) is the applier's job.

use crate::writeset::Body;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, no line breaks.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The statements replaying `body`, in order: `BINLOG '<format
/// description>'`, then `BINLOG '<events>'`. `None` for a TOI body.
pub fn binlog_statements(body: &Body) -> Option<[String; 2]> {
    match body {
        Body::Rows {
            format_description,
            events,
        } => Some([
            format!("BINLOG '{}'", base64(format_description)),
            format!("BINLOG '{}'", base64(events)),
        ]),
        Body::Toi(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn statements_put_the_format_description_first() {
        let body = Body::Rows {
            format_description: b"f".to_vec(),
            events: b"foo".to_vec(),
        };
        let [fde, events] = binlog_statements(&body).unwrap();
        assert_eq!(fde, "BINLOG 'Zg=='");
        assert_eq!(events, "BINLOG 'Zm9v'");
    }
}
