//! MariaDB GTIDs (`domain-server-seqno`) and GTID positions (comma-separated
//! lists of them, one per domain), as the server prints them.
//!
//! Owns parsing and printing only; it must not know about the binlog stream
//! or about which groups were captured.

use std::fmt;
use std::str::FromStr;

/// A GTID as MariaDB prints it: domain-server-seqno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

/// A string that is not a GTID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a GTID (expected domain-server-seqno, e.g. 0-1-5)")]
pub struct ParseGtidError {
    pub text: String,
}

impl FromStr for Gtid {
    type Err = ParseGtidError;

    fn from_str(s: &str) -> Result<Self, ParseGtidError> {
        let err = || ParseGtidError {
            text: s.to_string(),
        };
        let mut parts = s.trim().split('-');
        let (Some(domain), Some(server), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        // `u32::from_str` accepts a leading `+`; the server never prints one.
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !(digits(domain) && digits(server) && digits(seq)) {
            return Err(err());
        }
        Ok(Gtid {
            domain: domain.parse().map_err(|_| err())?,
            server: server.parse().map_err(|_| err())?,
            seq: seq.parse().map_err(|_| err())?,
        })
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// Parse a GTID position such as `@@gtid_binlog_pos` or `BINLOG_GTID_POS()`
/// prints it: `0-1-5,1-2-9`; the empty string is the empty position.
pub fn parse_position(text: &str) -> Result<Vec<Gtid>, ParseGtidError> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Gtid::from_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_server_prints() {
        assert_eq!(
            "0-1-5".parse::<Gtid>(),
            Ok(Gtid {
                domain: 0,
                server: 1,
                seq: 5
            })
        );
        let big: Gtid = "4294967295-4294967295-18446744073709551615"
            .parse()
            .unwrap();
        assert_eq!(big.seq, u64::MAX);
        assert_eq!(
            big.to_string(),
            "4294967295-4294967295-18446744073709551615"
        );
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "0-1",
            "0-1-2-3",
            "a-1-2",
            "0--2",
            "-0-1-2",
            "0-1-+2",
            "0-1-2 x",
            "0-1-99999999999999999999",
        ] {
            assert!(bad.parse::<Gtid>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn positions_list_one_gtid_per_domain() {
        assert_eq!(parse_position("").unwrap(), vec![]);
        let pos = parse_position("0-1-5,7-2-9").unwrap();
        assert_eq!(pos.len(), 2);
        assert_eq!(pos[1].domain, 7);
        assert!(parse_position("0-1-5,x").is_err());
    }
}
