//! One client session: the command loop between a client and its own
//! backend connection to the local MariaDB. Owns framing of the session
//! (sequence ids towards each side) and relaying each command's response;
//! transaction handling decides per command what is sent (see
//! [`super::transaction`]).

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};

use super::handshake::{self, Handshake};
use super::packet::{Packet, PacketReader, ProtocolError, encode_packet};
use super::response::{Expect, Outcome, ResponseReader, StatusPacket, Step};
use super::wire::{self, cap, com};

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// How the response of a command sent to the server is handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relay {
    /// Forward the response to the client (else the proxy consumes it).
    pub to_client: bool,
    /// Keep the last packet back (the caller decides, e.g. after a
    /// commit, whether the client gets it or an error instead).
    pub hold_last: bool,
    /// Status flags cleared in every OK / EOF forwarded.
    pub clear_status: u16,
    /// Status flags set in every OK / EOF forwarded.
    pub set_status: u16,
    /// Keep the row packets of a response the proxy consumes.
    pub collect_rows: bool,
}

/// The outcome of a relayed command, and the packet held back, if asked.
#[derive(Debug)]
pub struct Relayed {
    pub outcome: Outcome,
    pub held: Option<Vec<u8>>,
    /// Row packets, when collected.
    pub rows: Vec<Vec<u8>>,
}

/// The two connections of a session and their sequence numbering.
pub struct Wire {
    pub client_in: PacketReader<BoxRead>,
    pub client_out: BufWriter<BoxWrite>,
    pub server_in: PacketReader<BoxRead>,
    pub server_out: BufWriter<BoxWrite>,
    /// Sequence id of the next packet to the client in this command.
    client_seq: u8,
    /// Sequence id of the next packet to the server in this command.
    server_seq: u8,
    pub handshake: Handshake,
}

impl Wire {
    /// Relay the handshake; the session is then authenticated.
    pub async fn open(
        client: (BoxRead, BoxWrite),
        server: (BoxRead, BoxWrite),
        max_packet: usize,
    ) -> Result<Self, ProtocolError> {
        let mut client_in = PacketReader::new(client.0, max_packet);
        let mut client_out = BufWriter::with_capacity(64 << 10, client.1);
        let mut server_in = PacketReader::new(server.0, max_packet);
        let mut server_out = BufWriter::with_capacity(64 << 10, server.1);
        let handshake = handshake::relay(
            &mut client_in,
            &mut client_out,
            &mut server_in,
            &mut server_out,
        )
        .await?;
        Ok(Self {
            client_in,
            client_out,
            server_in,
            server_out,
            client_seq: 0,
            server_seq: 0,
            handshake,
        })
    }

    pub fn deprecate_eof(&self) -> bool {
        self.handshake.has(cap::CLIENT_DEPRECATE_EOF)
    }

    /// The next command from the client; `None` when it disconnected.
    pub async fn next_command(&mut self) -> Result<Option<Packet>, ProtocolError> {
        let packet = self.client_in.read().await?;
        if let Some(p) = &packet {
            self.client_seq = p.next_seq();
        }
        Ok(packet)
    }

    /// Send a packet to the client with the session's numbering.
    pub async fn to_client(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let mut buf = Vec::with_capacity(payload.len() + 4);
        self.client_seq = encode_packet(&mut buf, self.client_seq, payload);
        self.client_out.write_all(&buf).await?;
        Ok(())
    }

    pub async fn flush_client(&mut self) -> Result<(), ProtocolError> {
        self.client_out.flush().await?;
        Ok(())
    }

    /// Send the client an error (and flush).
    pub async fn error_to_client(
        &mut self,
        code: u16,
        state: &str,
        message: &str,
    ) -> Result<(), ProtocolError> {
        self.to_client(&wire::err_packet(code, state, message))
            .await?;
        self.flush_client().await
    }

    /// Send the server a new command (sequence restarts at 0).
    pub async fn command_to_server(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        self.server_seq = 0;
        self.packet_to_server(payload).await?;
        self.server_out.flush().await?;
        Ok(())
    }

    async fn packet_to_server(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let mut buf = Vec::with_capacity(payload.len() + 4);
        self.server_seq = encode_packet(&mut buf, self.server_seq, payload);
        self.server_out.write_all(&buf).await?;
        Ok(())
    }

    /// Send `payload` as a command and follow its response as `relay` says.
    pub async fn run(
        &mut self,
        payload: &[u8],
        expect: Expect,
        relay: Relay,
    ) -> Result<Relayed, ProtocolError> {
        self.command_to_server(payload).await?;
        self.follow(expect, relay).await
    }

    /// Run one of the proxy's own statements; its response stays here.
    pub async fn query(&mut self, sql: &str) -> Result<Outcome, ProtocolError> {
        Ok(self
            .run(&query_payload(sql), Expect::Results, Relay::default())
            .await?
            .outcome)
    }

    /// Run one of the proxy's own single-value queries (text protocol):
    /// the first column of the first row, `None` for NULL or no row.
    pub async fn query_value(&mut self, sql: &str) -> Result<Option<String>, ProtocolError> {
        let relayed = self
            .run(
                &query_payload(sql),
                Expect::Results,
                Relay {
                    collect_rows: true,
                    ..Relay::default()
                },
            )
            .await?;
        if let Some(e) = relayed.outcome.error {
            return Err(ProtocolError::Malformed(format!(
                "{sql}: {} ({})",
                e.message, e.code
            )));
        }
        let Some(row) = relayed.rows.first() else {
            return Ok(None);
        };
        if row.first() == Some(&0xfb) {
            return Ok(None);
        }
        let (len, at) = wire::lenenc_int(row)
            .ok_or_else(|| ProtocolError::Malformed(format!("{sql}: bad row")))?;
        let value = row
            .get(at..at + len as usize)
            .ok_or_else(|| ProtocolError::Malformed(format!("{sql}: short row")))?;
        Ok(Some(String::from_utf8_lossy(value).into_owned()))
    }

    /// Read the response of the command just sent.
    pub async fn follow(&mut self, expect: Expect, relay: Relay) -> Result<Relayed, ProtocolError> {
        let mut reader = ResponseReader::new(expect, self.deprecate_eof());
        let mut rows = Vec::new();
        loop {
            let mut packet = self.server_in.expect().await?;
            self.server_seq = packet.next_seq();
            let in_rows = reader.in_rows();
            let step = reader.feed(&packet.payload)?;
            if relay.to_client {
                edit_status(&mut packet.payload, reader.status_packet(), relay);
            }
            match step {
                Step::More => {
                    if relay.to_client {
                        self.to_client(&packet.payload).await?;
                    } else if relay.collect_rows && in_rows {
                        rows.push(packet.payload);
                    }
                }
                Step::LocalInfile => {
                    if !relay.to_client {
                        return Err(ProtocolError::Malformed(
                            "the server asked for a local file during an internal statement".into(),
                        ));
                    }
                    self.to_client(&packet.payload).await?;
                    self.flush_client().await?;
                    self.relay_infile().await?;
                    reader.infile_sent();
                }
                Step::Done(outcome) => {
                    let held = if relay.to_client && relay.hold_last {
                        Some(packet.payload)
                    } else {
                        if relay.to_client {
                            self.to_client(&packet.payload).await?;
                            self.flush_client().await?;
                        }
                        None
                    };
                    return Ok(Relayed {
                        outcome,
                        held,
                        rows,
                    });
                }
            }
        }
    }

    /// Copy the client's LOCAL INFILE packets to the server, up to and
    /// including the empty one that ends them.
    async fn relay_infile(&mut self) -> Result<(), ProtocolError> {
        loop {
            let packet = self.client_in.expect().await?;
            self.client_seq = packet.next_seq();
            self.packet_to_server(&packet.payload).await?;
            if packet.payload.is_empty() {
                self.server_out.flush().await?;
                return Ok(());
            }
        }
    }

    /// Relay a COM_CHANGE_USER: the client's command and the
    /// authentication rounds that follow, until OK or ERR.
    pub async fn change_user(&mut self, command: &[u8]) -> Result<Outcome, ProtocolError> {
        self.command_to_server(command).await?;
        loop {
            let packet = self.server_in.expect().await?;
            self.server_seq = packet.next_seq();
            self.to_client(&packet.payload).await?;
            self.flush_client().await?;
            match packet.first_byte() {
                Some(0x00) => {
                    return Ok(Outcome {
                        ok: wire::parse_ok(&packet.payload),
                        status: wire::parse_ok(&packet.payload).map(|o| o.status),
                        ..Outcome::default()
                    });
                }
                Some(0xff) => {
                    return Ok(Outcome {
                        error: wire::parse_err(&packet.payload),
                        ..Outcome::default()
                    });
                }
                _ if packet.payload == [0x01, 0x03] => {}
                _ => {
                    let answer = self.client_in.expect().await?;
                    self.client_seq = answer.next_seq();
                    self.packet_to_server(&answer.payload).await?;
                    self.server_out.flush().await?;
                }
            }
        }
    }

    /// Forward a command that gets no response (COM_STMT_CLOSE, …).
    pub async fn send_only(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        self.command_to_server(payload).await
    }
}

/// A COM_QUERY payload.
pub fn query_payload(sql: impl AsRef<[u8]>) -> Vec<u8> {
    let sql = sql.as_ref();
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(com::QUERY);
    payload.extend_from_slice(sql);
    payload
}

/// Apply `relay`'s status edits to a packet that carries status flags, as
/// the response reader classified it (`kind`). Rows are never touched,
/// even when they look like an OK packet: binary rows always start with
/// 0x00, and so does a text row whose first column is ''.
fn edit_status(payload: &mut [u8], kind: Option<StatusPacket>, relay: Relay) {
    if relay.clear_status | relay.set_status == 0 {
        return;
    }
    let edit = |s: u16| (s & !relay.clear_status) | relay.set_status;
    match kind {
        Some(StatusPacket::Ok) => {
            if let Some(ok) = wire::parse_ok(payload) {
                wire::set_ok_status(payload, edit(ok.status));
            }
        }
        Some(StatusPacket::Eof) => {
            if let Some(s) = wire::parse_eof_status(payload) {
                wire::set_eof_status(payload, edit(s));
            }
        }
        None => {}
    }
}

/// What response a client command gets, or why the proxy refuses it.
pub fn expect_for(command: u8) -> Result<Option<Expect>, &'static str> {
    Ok(Some(match command {
        com::QUERY | com::STMT_EXECUTE | com::STMT_BULK_EXECUTE => Expect::Results,
        0x0a /* PROCESS_INFO */ => Expect::Results,
        com::STMT_PREPARE => Expect::Prepare,
        com::STMT_FETCH => Expect::Fetch,
        com::FIELD_LIST => Expect::FieldList,
        com::INIT_DB
        | com::PING
        | com::RESET_CONNECTION
        | com::SET_OPTION
        | com::STMT_RESET
        | com::PROCESS_KILL
        | 0x07 /* REFRESH */
        | 0x0d /* DEBUG */ => Expect::Single,
        com::STATISTICS => Expect::Opaque,
        com::STMT_CLOSE | com::STMT_SEND_LONG_DATA => return Ok(None),
        0x05 | 0x06 => {
            return Err("COM_CREATE_DB / COM_DROP_DB are not supported: use CREATE DATABASE / DROP DATABASE");
        }
        0x08 => return Err("COM_SHUTDOWN is not allowed through the replicator: stop the node instead"),
        0x12 | 0x13 | 0x14 | 0x15 | 0x1e => {
            return Err("replication commands are not supported through the replicator");
        }
        _ => return Err("unknown or unsupported command"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::wire::{ok_packet, status};

    /// Relay `packets` through the response reader and the status edits,
    /// as [`Wire::follow`] does; what the client would get.
    fn relayed(packets: &[Vec<u8>], deprecate_eof: bool, relay: Relay) -> Vec<Vec<u8>> {
        let mut reader = ResponseReader::new(Expect::Results, deprecate_eof);
        packets
            .iter()
            .map(|p| {
                let mut p = p.clone();
                reader.feed(&p).unwrap();
                edit_status(&mut p, reader.status_packet(), relay);
                p
            })
            .collect()
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    #[test]
    fn rows_that_look_like_ok_packets_are_not_edited() {
        // Binary row of (257, 7): header 0x00, NULL bitmap 0x00, then
        // 01 01 00 00 — read as an OK packet its "status" is 0x0001.
        let binary_row = b"\x00\x00\x01\x01\x00\x00\x07\x00\x00\x00".to_vec();
        // Text row ('', '12345').
        let text_row = b"\x00\x0512345".to_vec();
        let relay = Relay {
            to_client: true,
            clear_status: status::IN_TRANS,
            set_status: status::MORE_RESULTS_EXISTS,
            ..Relay::default()
        };
        for deprecate_eof in [false, true] {
            let mut packets = vec![vec![2], b"c1".to_vec(), b"c2".to_vec()];
            if !deprecate_eof {
                packets.push(eof(status::IN_TRANS));
            }
            packets.push(binary_row.clone());
            packets.push(text_row.clone());
            let mut end = ok_packet(0, 0, status::IN_TRANS | status::AUTOCOMMIT, 0);
            if deprecate_eof {
                end[0] = 0xfe;
            } else {
                end = eof(status::IN_TRANS | status::AUTOCOMMIT);
            }
            packets.push(end);
            let out = relayed(&packets, deprecate_eof, relay);
            let rows = if deprecate_eof { 3..5 } else { 4..6 };
            assert_eq!(
                out[rows.clone()],
                packets[rows],
                "rows are relayed as they came"
            );
            let last = out.last().unwrap();
            let flags = if deprecate_eof {
                wire::parse_ok(last).unwrap().status
            } else {
                wire::parse_eof_status(last).unwrap()
            };
            assert_eq!(flags, status::AUTOCOMMIT | status::MORE_RESULTS_EXISTS);
        }
    }

    #[test]
    fn ok_packets_are_edited() {
        let relay = Relay {
            to_client: true,
            clear_status: status::IN_TRANS,
            ..Relay::default()
        };
        let out = relayed(
            &[ok_packet(1, 0, status::IN_TRANS | status::AUTOCOMMIT, 0)],
            true,
            relay,
        );
        assert_eq!(wire::parse_ok(&out[0]).unwrap().status, status::AUTOCOMMIT);
    }
}
