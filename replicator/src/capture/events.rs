//! The MariaDB-specific parts of the binlog format that `mysql_common` does
//! not decode: event type numbers above 0x26, the body of MariaDB's GTID
//! event (with the XA transaction id of a prepared XA group), the body of the
//! XA_prepare event, and rewriting a row event's flags (with its checksum).
//!
//! Pure byte handling: no I/O, no knowledge of groups or keys. Layouts are
//! those of `sql/log_event.h` in MariaDB 10.11 (checked against
//! `mariadb-binlog --hexdump` output of a 10.11 server).

/// Event type numbers, as in the binlog event header.
pub mod types {
    pub const QUERY: u8 = 0x02;
    pub const ROTATE: u8 = 0x04;
    pub const FORMAT_DESCRIPTION: u8 = 0x0f;
    pub const XID: u8 = 0x10;
    pub const TABLE_MAP: u8 = 0x13;
    /// Version-1 row events, which MariaDB writes.
    pub const WRITE_ROWS_V1: u8 = 0x17;
    pub const UPDATE_ROWS_V1: u8 = 0x18;
    pub const DELETE_ROWS_V1: u8 = 0x19;
    pub const HEARTBEAT: u8 = 0x1b;
    /// Version-2 row events (MySQL's; accepted as well).
    pub const WRITE_ROWS_V2: u8 = 0x1e;
    pub const UPDATE_ROWS_V2: u8 = 0x1f;
    pub const DELETE_ROWS_V2: u8 = 0x20;
    pub const XA_PREPARE: u8 = 0x26;
    pub const GTID: u8 = 0xa2;
    pub const START_ENCRYPTION: u8 = 0xa4;
    pub const QUERY_COMPRESSED: u8 = 0xa5;
    /// Compressed row events (`log_bin_compress=ON`): 0xa6..=0xab.
    pub const FIRST_COMPRESSED_ROWS: u8 = 0xa6;
    pub const LAST_COMPRESSED_ROWS: u8 = 0xab;

    /// Whether `t` is an (uncompressed) row event this module can decode.
    pub fn is_rows(t: u8) -> bool {
        matches!(
            t,
            WRITE_ROWS_V1
                | UPDATE_ROWS_V1
                | DELETE_ROWS_V1
                | WRITE_ROWS_V2
                | UPDATE_ROWS_V2
                | DELETE_ROWS_V2
        )
    }

    pub fn is_compressed_rows(t: u8) -> bool {
        (FIRST_COMPRESSED_ROWS..=LAST_COMPRESSED_ROWS).contains(&t)
    }
}

/// Header flag: the event was made up by the server for the stream (fake
/// rotate, re-sent format description); its `log_pos` is not a position.
pub const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;

/// Length of the common event header.
pub const HEADER_LEN: usize = 19;

/// GTID event `flags2` bits.
mod gtid_flags {
    pub const STANDALONE: u8 = 1;
    pub const GROUP_COMMIT_ID: u8 = 2;
    pub const PREPARED_XA: u8 = 64;
    pub const COMPLETED_XA: u8 = 128;
}

/// An XA transaction id (`XID` in the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xid {
    pub format_id: u32,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

/// The body of MariaDB's GTID event (type 0xa2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GtidEvent {
    pub seq: u64,
    pub domain: u32,
    /// The group is one statement with no BEGIN/COMMIT (DDL, `XA COMMIT`).
    pub standalone: bool,
    /// The group is the `XA PREPARE` of [`GtidEvent::xid`].
    pub prepared_xa: bool,
    /// The group is an `XA COMMIT`/`XA ROLLBACK` of [`GtidEvent::xid`].
    pub completed_xa: bool,
    pub xid: Option<Xid>,
}

/// A body shorter than its layout needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} event body is truncated ({len} bytes)")]
pub struct Truncated {
    pub event: &'static str,
    pub len: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    event: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], event: &'static str) -> Self {
        Self {
            bytes,
            at: 0,
            event,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Truncated {
                event: self.event,
                len: self.bytes.len(),
            });
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Truncated> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Truncated> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Parse the body (after the common header, without checksum) of a GTID
/// event: `seq_no:8 domain_id:4 flags2:1 [commit_id:8]
/// [format_id:4 gtrid_len:1 bqual_len:1 data]` and extra flags we ignore.
pub fn parse_gtid(body: &[u8]) -> Result<GtidEvent, Truncated> {
    let mut r = Reader::new(body, "GTID");
    let seq = r.u64()?;
    let domain = r.u32()?;
    let flags = r.u8()?;
    if flags & gtid_flags::GROUP_COMMIT_ID != 0 {
        r.take(8)?;
    }
    let prepared_xa = flags & gtid_flags::PREPARED_XA != 0;
    let completed_xa = flags & gtid_flags::COMPLETED_XA != 0;
    let xid = if prepared_xa || completed_xa {
        let format_id = r.u32()?;
        let gtrid_len = usize::from(r.u8()?);
        let bqual_len = usize::from(r.u8()?);
        Some(Xid {
            format_id,
            gtrid: r.take(gtrid_len)?.to_vec(),
            bqual: r.take(bqual_len)?.to_vec(),
        })
    } else {
        None
    };
    Ok(GtidEvent {
        seq,
        domain,
        standalone: flags & gtid_flags::STANDALONE != 0,
        prepared_xa,
        completed_xa,
        xid,
    })
}

/// Parse the body of an XA_prepare event: `one_phase:1 format_id:4
/// gtrid_len:4 bqual_len:4 data`.
pub fn parse_xa_prepare(body: &[u8]) -> Result<Xid, Truncated> {
    let mut r = Reader::new(body, "XA_prepare");
    let _one_phase = r.u8()?;
    let format_id = r.u32()?;
    let gtrid_len = r.u32()? as usize;
    let bqual_len = r.u32()? as usize;
    // An XID holds at most 128 bytes; refuse absurd lengths before slicing.
    if gtrid_len > 64 || bqual_len > 64 {
        return Err(Truncated {
            event: "XA_prepare",
            len: body.len(),
        });
    }
    Ok(Xid {
        format_id,
        gtrid: r.take(gtrid_len)?.to_vec(),
        bqual: r.take(bqual_len)?.to_vec(),
    })
}

/// Whether a row event body (after the header) has the end-of-statement
/// flag. The post-header is `table_id:6 flags:2`.
pub fn rows_stmt_end(body: &[u8]) -> bool {
    body.get(6).is_some_and(|f| f & 1 != 0)
}

/// Set the end-of-statement flag on a complete serialized row event
/// (header, body, and a CRC32 checksum if `checksummed`), recomputing the
/// checksum. Returns false if the event is too short to be a row event.
pub fn set_rows_stmt_end(event: &mut [u8], checksummed: bool) -> bool {
    let min = HEADER_LEN + 8 + if checksummed { 4 } else { 0 };
    if event.len() < min {
        return false;
    }
    event[HEADER_LEN + 6] |= 1;
    if checksummed {
        let n = event.len() - 4;
        let crc = crc32(&event[..n]);
        event[n..].copy_from_slice(&crc.to_le_bytes());
    }
    true
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and the binlog use it).
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for b in bytes {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn gtid_of_a_prepared_xa_group() {
        // From a 10.11 binlog: GTID 0-1-6 of `XA PREPARE 'x1'`.
        let body = [
            0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x4c, 0x01, 0, 0, 0, 0x02, 0x00, b'x', b'1',
            0x01, 0xff,
        ];
        let g = parse_gtid(&body).unwrap();
        assert_eq!((g.seq, g.domain), (6, 0));
        assert!(g.prepared_xa && !g.completed_xa && !g.standalone);
        assert_eq!(
            g.xid,
            Some(Xid {
                format_id: 1,
                gtrid: b"x1".to_vec(),
                bqual: vec![]
            })
        );
        // An ordinary transaction: no xid.
        let plain = [5, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x0c];
        let g = parse_gtid(&plain).unwrap();
        assert_eq!((g.seq, g.domain, g.xid), (5, 3, None));
        assert!(parse_gtid(&body[..18]).is_err());
        assert!(parse_gtid(&[]).is_err());
    }

    #[test]
    fn xa_prepare_body() {
        let body = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'1'];
        let x = parse_xa_prepare(&body).unwrap();
        assert_eq!(x.gtrid, b"x1");
        assert!(x.bqual.is_empty());
        assert!(parse_xa_prepare(&body[..14]).is_err());
        let absurd = [0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(parse_xa_prepare(&absurd).is_err());
    }

    #[test]
    fn stmt_end_flag_is_set_and_checksum_recomputed() {
        let mut ev = vec![0u8; HEADER_LEN + 10 + 4];
        ev[HEADER_LEN..HEADER_LEN + 6].copy_from_slice(&[7, 0, 0, 0, 0, 0]);
        assert!(!rows_stmt_end(&ev[HEADER_LEN..]));
        assert!(set_rows_stmt_end(&mut ev, true));
        assert!(rows_stmt_end(&ev[HEADER_LEN..]));
        let n = ev.len() - 4;
        assert_eq!(ev[n..], crc32(&ev[..n]).to_le_bytes());
        assert!(!set_rows_stmt_end(&mut [0u8; 10], false));
    }
}
