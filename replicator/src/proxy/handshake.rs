//! Pass-through authentication: the server's greeting goes to the client
//! (with the capabilities the proxy does not relay cleared), the client's
//! answer and every later authentication packet go through unchanged, in
//! both directions, until the server says OK or ERR. The replicator never
//! sees a password: it only copies bytes it does not interpret.
//!
//! Cleared in the greeting, so clients never ask for them:
//! - `CLIENT_SSL` — TLS between client and proxy is not offered yet (run
//!   the client port on a trusted network or loopback);
//! - `CLIENT_COMPRESS` — the proxy reads every packet, so it would have to
//!   decompress and recompress them;
//! - MariaDB's `CACHE_METADATA` — result sets always carry their metadata.
//!
//! Cleared in the client's answer before it goes to the server:
//! `CLIENT_MULTI_STATEMENTS` (with `CLIENT_MULTI_RESULTS` kept on for a
//! client that asked for it). The proxy splits a client's multi-statement
//! query itself and sends the statements one by one, so the server must
//! never split one: a query it would split differently then fails there
//! as a syntax error instead of running a statement the proxy did not see.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::packet::{Packet, PacketReader, ProtocolError, write_packet};
use super::wire::cap;

/// What the proxy learned from the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Capabilities the client asked for (lower 32 bits: the standard
    /// flags; upper 32: MariaDB's extended flags).
    pub client_caps: u64,
    pub connection_id: u32,
    pub server_version: String,
}

impl Handshake {
    pub fn has(&self, flag: u32) -> bool {
        self.client_caps & u64::from(flag) != 0
    }

    /// Whether the client asked for one of MariaDB's extended capabilities.
    pub fn has_extended(&self, flag: u32) -> bool {
        (self.client_caps >> 32) & u64::from(flag) != 0
    }
}

/// Offsets in the greeting that the proxy edits.
struct Greeting {
    caps_lower_at: usize,
    extended_caps_at: Option<usize>,
    connection_id: u32,
    server_version: String,
}

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(what.to_string())
}

fn parse_greeting(p: &[u8]) -> Result<Greeting, ProtocolError> {
    if p.first() != Some(&10) {
        return Err(malformed("server greeting is not protocol 10"));
    }
    let nul = p
        .iter()
        .skip(1)
        .position(|b| *b == 0)
        .ok_or_else(|| malformed("server version"))?;
    let server_version = String::from_utf8_lossy(&p[1..1 + nul]).into_owned();
    let mut at = 1 + nul + 1;
    let id = p
        .get(at..at + 4)
        .ok_or_else(|| malformed("connection id"))?;
    let connection_id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
    at += 4 + 8 + 1; // id, scramble part 1, filler
    let caps_lower_at = at;
    let lower = p.get(at..at + 2).ok_or_else(|| malformed("capabilities"))?;
    let lower = u16::from_le_bytes([lower[0], lower[1]]);
    // charset (1), status (2), upper capabilities (2), scramble length (1),
    // filler (6), then MariaDB's extended capabilities (4) when the server
    // does not announce CLIENT_MYSQL (bit 0).
    let extended = at + 2 + 1 + 2 + 2 + 1 + 6;
    let extended_caps_at = (lower & 1 == 0 && p.len() >= extended + 4).then_some(extended);
    Ok(Greeting {
        caps_lower_at,
        extended_caps_at,
        connection_id,
        server_version,
    })
}

fn clear_bits(p: &mut [u8], at: usize, bits: u32, width: usize) {
    let mut value = [0u8; 4];
    value[..width].copy_from_slice(&p[at..at + width]);
    let cleared = u32::from_le_bytes(value) & !bits;
    p[at..at + width].copy_from_slice(&cleared.to_le_bytes()[..width]);
}

/// Relay the handshake between a client and a freshly connected server.
/// On success the session is authenticated on the server and the command
/// phase begins; an ERR from the server has already been passed to the
/// client and is returned as an error.
pub async fn relay<CR, CW, SR, SW>(
    client_in: &mut PacketReader<CR>,
    client_out: &mut CW,
    server_in: &mut PacketReader<SR>,
    server_out: &mut SW,
) -> Result<Handshake, ProtocolError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let mut greeting = server_in.expect().await?;
    if greeting.first_byte() == Some(0xff) {
        // e.g. "too many connections": the client gets the server's words.
        forward(client_out, &greeting).await?;
        return Err(malformed("the server refused the connection"));
    }
    let parsed = parse_greeting(&greeting.payload)?;
    clear_bits(
        &mut greeting.payload,
        parsed.caps_lower_at,
        cap::CLIENT_SSL | cap::CLIENT_COMPRESS,
        2,
    );
    if let Some(at) = parsed.extended_caps_at {
        clear_bits(
            &mut greeting.payload,
            at,
            cap::MARIADB_CLIENT_CACHE_METADATA,
            4,
        );
    }
    forward(client_out, &greeting).await?;

    let mut response = client_in.expect().await?;
    let p = &response.payload;
    let caps = p
        .get(0..4)
        .ok_or_else(|| malformed("client capabilities"))?;
    let lower = u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]);
    if lower & cap::CLIENT_PROTOCOL_41 == 0 {
        return Err(malformed("the client does not speak protocol 4.1"));
    }
    if lower & (cap::CLIENT_SSL | cap::CLIENT_COMPRESS) != 0 {
        return Err(malformed(
            "the client asked for TLS or compression, which the proxy does not offer",
        ));
    }
    let extended = match (parsed.extended_caps_at, p.get(28..32)) {
        (Some(_), Some(e)) if lower & 1 == 0 => u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
        _ => 0,
    };
    if extended & cap::MARIADB_CLIENT_CACHE_METADATA != 0 {
        return Err(malformed(
            "the client asked for metadata caching, which the proxy does not offer",
        ));
    }
    let to_server = server_capabilities(lower);
    response.payload[0..4].copy_from_slice(&to_server.to_le_bytes());
    forward(server_out, &response).await?;

    // Authentication rounds alternate: each server packet that is neither
    // OK nor ERR (auth switch 0xFE, more data 0x01, a dialog prompt) is
    // answered by one client packet — except caching_sha2's "fast auth
    // succeeded" (0x01 0x03), which the OK follows directly.
    loop {
        let packet = server_in.expect().await?;
        forward(client_out, &packet).await?;
        match packet.first_byte() {
            Some(0x00) => break,
            Some(0xff) => return Err(malformed("authentication failed")),
            _ if packet.payload == [0x01, 0x03] => continue,
            _ => {
                let answer = client_in.expect().await?;
                forward(server_out, &answer).await?;
            }
        }
    }
    Ok(Handshake {
        client_caps: u64::from(lower) | (u64::from(extended) << 32),
        connection_id: parsed.connection_id,
        server_version: parsed.server_version,
    })
}

/// The capabilities the proxy asks of the server for a client that asked
/// for `client`: multi-statements off (the proxy splits), multi-results on
/// when the client wants several statements' results.
fn server_capabilities(client: u32) -> u32 {
    if client & cap::CLIENT_MULTI_STATEMENTS == 0 {
        return client;
    }
    (client & !cap::CLIENT_MULTI_STATEMENTS) | cap::CLIENT_MULTI_RESULTS
}

/// Copy a packet with its own sequence id, and flush.
pub async fn forward<W: AsyncWrite + Unpin>(w: &mut W, p: &Packet) -> Result<(), ProtocolError> {
    write_packet(w, p.seq, &p.payload).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(lower: u16, extended: u32) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.19-MariaDB\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"12345678\0");
        p.extend_from_slice(&lower.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x00ffu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&extended.to_le_bytes());
        p.extend_from_slice(b"abcdefghijkl\0mysql_native_password\0");
        p
    }

    #[test]
    fn the_greeting_loses_tls_compression_and_metadata_caching() {
        let lower = (cap::CLIENT_SSL | cap::CLIENT_COMPRESS | cap::CLIENT_PROTOCOL_41) as u16;
        let mut p = greeting(lower, cap::MARIADB_CLIENT_CACHE_METADATA | 1);
        let g = parse_greeting(&p).unwrap();
        assert_eq!(g.connection_id, 42);
        assert_eq!(g.server_version, "10.11.19-MariaDB");
        clear_bits(
            &mut p,
            g.caps_lower_at,
            cap::CLIENT_SSL | cap::CLIENT_COMPRESS,
            2,
        );
        clear_bits(
            &mut p,
            g.extended_caps_at.unwrap(),
            cap::MARIADB_CLIENT_CACHE_METADATA,
            4,
        );
        let at = g.caps_lower_at;
        assert_eq!(
            u16::from_le_bytes([p[at], p[at + 1]]),
            cap::CLIENT_PROTOCOL_41 as u16
        );
        let e = g.extended_caps_at.unwrap();
        assert_eq!(u32::from_le_bytes([p[e], p[e + 1], p[e + 2], p[e + 3]]), 1);
        assert!(
            p.ends_with(b"mysql_native_password\0"),
            "the rest is untouched"
        );
    }

    #[test]
    fn the_server_never_gets_multi_statements() {
        let base = cap::CLIENT_PROTOCOL_41 | cap::CLIENT_PLUGIN_AUTH;
        assert_eq!(server_capabilities(base), base);
        assert_eq!(
            server_capabilities(base | cap::CLIENT_MULTI_STATEMENTS),
            base | cap::CLIENT_MULTI_RESULTS
        );
        assert_eq!(
            server_capabilities(base | cap::CLIENT_MULTI_STATEMENTS | cap::CLIENT_MULTI_RESULTS),
            base | cap::CLIENT_MULTI_RESULTS
        );
    }

    #[test]
    fn garbage_greetings_are_errors_not_panics() {
        for p in [
            &b""[..],
            b"\x0a",
            b"\x0a10.11",
            b"\x09abc\0",
            b"\x0aabc\0\x01\x02",
        ] {
            assert!(parse_greeting(p).is_err());
        }
    }
}
