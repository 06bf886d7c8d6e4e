//! The response state machine: fed the server's packets after a command,
//! it says when the response is complete, whether the client must send
//! LOCAL INFILE data first, and what the outcome was (final status flags,
//! error, last OK). Pure: knows packet shapes, not sockets or sessions.

use super::packet::ProtocolError;
use super::wire::{self, ErrInfo, OkInfo, status};

/// The shape of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE: OK, ERR,
    /// result sets, LOCAL INFILE requests; several when
    /// `MORE_RESULTS_EXISTS` is set.
    Results,
    /// COM_STMT_PREPARE: prepare-OK with parameter and column definitions.
    Prepare,
    /// COM_STMT_FETCH: rows and a terminator.
    Fetch,
    /// COM_FIELD_LIST: column definitions and a terminator.
    FieldList,
    /// One OK / ERR / EOF packet (PING, INIT_DB, RESET_CONNECTION, …).
    Single,
    /// One packet of any shape (COM_STATISTICS).
    Opaque,
}

/// What feeding one packet led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More packets belong to this response.
    More,
    /// The server asked for a LOCAL INFILE: the client's file packets
    /// (ending with an empty one) go to the server, then the response
    /// goes on.
    LocalInfile,
    /// The response is complete.
    Done(Outcome),
}

/// Where a packet just fed carries server status flags, if it does: the
/// packets whose flags the proxy may rewrite. Rows, column and parameter
/// definitions and prepare-OKs carry none, whatever their first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPacket {
    /// An OK packet (header 0x00, or 0xFE as a terminator under
    /// DEPRECATE_EOF).
    Ok,
    /// An EOF packet (0xFE, flags at bytes 3–4).
    Eof,
}

/// How a response ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Status flags of the last OK / EOF, if any carried them.
    pub status: Option<u16>,
    /// The error that ended it, if it ended with one.
    pub error: Option<ErrInfo>,
    /// The last OK packet.
    pub ok: Option<OkInfo>,
    /// Statement id, parameter and column counts of a prepared statement.
    pub prepared: Option<(u32, u16, u16)>,
    /// Results (OK packets and result sets) in the response.
    pub results: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    PrepareParams { left: u16, columns: u16 },
    PrepareParamsEof { columns: u16 },
    PrepareColumns { left: u16 },
    PrepareColumnsEof,
    Finished,
}

/// Follows one response.
#[derive(Debug)]
pub struct ResponseReader {
    expect: Expect,
    deprecate_eof: bool,
    state: State,
    outcome: Outcome,
    /// What the packet fed last was, as far as status flags go.
    last: Option<StatusPacket>,
}

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(what.to_string())
}

impl ResponseReader {
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        let state = match expect {
            Expect::Fetch => State::Rows,
            Expect::FieldList => State::Columns { left: u64::MAX },
            _ => State::Start,
        };
        Self {
            expect,
            deprecate_eof,
            state,
            outcome: Outcome::default(),
            last: None,
        }
    }

    fn done(&mut self) -> Step {
        self.state = State::Finished;
        Step::Done(std::mem::take(&mut self.outcome))
    }

    fn fail(&mut self, payload: &[u8]) -> Result<Step, ProtocolError> {
        self.outcome.error = Some(wire::parse_err(payload).ok_or_else(|| malformed("ERR"))?);
        Ok(self.done())
    }

    /// After a result: another follows, or the response is complete.
    fn result_ended(&mut self, status: u16) -> Step {
        self.outcome.results += 1;
        self.outcome.status = Some(status);
        if status & status::MORE_RESULTS_EXISTS != 0 {
            self.state = State::Start;
            Step::More
        } else {
            self.done()
        }
    }

    /// The layout of a result-set terminator in this session.
    fn terminator(&self) -> StatusPacket {
        if self.deprecate_eof {
            StatusPacket::Ok
        } else {
            StatusPacket::Eof
        }
    }

    /// Whether the packet fed last carries status flags, and in which
    /// layout (`None` for rows, definitions, errors, …).
    pub fn status_packet(&self) -> Option<StatusPacket> {
        self.last
    }

    /// Feed the next server packet's payload.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Step, ProtocolError> {
        self.last = None;
        let first = payload.first().copied();
        match (self.state, self.expect) {
            (State::Finished, _) => Err(malformed("packet after the end of a response")),
            (_, Expect::Opaque) => Ok(self.done()),
            // MariaDB's progress report (CLIENT_PROGRESS): an ERR-shaped
            // packet with code 0xFFFF, in the middle of a response.
            (_, _) if payload.starts_with(&[0xff, 0xff, 0xff]) => Ok(Step::More),
            // A column definition starts with a length ("def"), a row with
            // a length, NULL (0xfb) or 0x00: 0xff is always an error.
            (_, _) if first == Some(0xff) => self.fail(payload),
            (State::Start, Expect::Single) => {
                if first == Some(0x00) || first == Some(0xfe) {
                    self.outcome.status = if first == Some(0x00) {
                        let ok = wire::parse_ok(payload).ok_or_else(|| malformed("OK"))?;
                        self.outcome.ok = Some(ok);
                        self.last = Some(StatusPacket::Ok);
                        Some(ok.status)
                    } else {
                        self.last = Some(self.terminator());
                        wire::terminator_status(payload, self.deprecate_eof)
                    };
                    Ok(self.done())
                } else {
                    Err(malformed("expected OK or ERR"))
                }
            }
            (State::Start, Expect::Results) => match first {
                Some(0x00) => {
                    let ok = wire::parse_ok(payload).ok_or_else(|| malformed("OK"))?;
                    self.outcome.ok = Some(ok);
                    self.last = Some(StatusPacket::Ok);
                    Ok(self.result_ended(ok.status))
                }
                Some(0xfb) => Ok(Step::LocalInfile),
                _ => {
                    let (columns, _) =
                        wire::lenenc_int(payload).ok_or_else(|| malformed("column count"))?;
                    if columns == 0 {
                        return Err(malformed("result set with no columns"));
                    }
                    self.state = State::Columns { left: columns };
                    Ok(Step::More)
                }
            },
            (State::Columns { .. }, Expect::FieldList) => {
                if wire::is_terminator(payload, self.deprecate_eof) {
                    self.outcome.status = wire::terminator_status(payload, self.deprecate_eof);
                    self.last = Some(self.terminator());
                    return Ok(self.done());
                }
                Ok(Step::More)
            }
            (State::Columns { left }, _) => {
                self.state = match left {
                    1 if self.deprecate_eof => State::Rows,
                    1 => State::ColumnsEof,
                    n => State::Columns { left: n - 1 },
                };
                Ok(Step::More)
            }
            (State::ColumnsEof, _) => {
                if !wire::is_terminator(payload, false) {
                    return Err(malformed("expected EOF after column definitions"));
                }
                self.last = Some(StatusPacket::Eof);
                let status = wire::parse_eof_status(payload).unwrap_or(0);
                if status & status::CURSOR_EXISTS != 0 {
                    // A cursor was opened: rows come with COM_STMT_FETCH.
                    self.outcome.status = Some(status);
                    self.outcome.results += 1;
                    return Ok(self.done());
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            (State::Rows, _) => {
                if wire::is_terminator(payload, self.deprecate_eof) {
                    let status = wire::terminator_status(payload, self.deprecate_eof)
                        .ok_or_else(|| malformed("result set terminator"))?;
                    self.last = Some(self.terminator());
                    if self.expect == Expect::Fetch {
                        self.outcome.status = Some(status);
                        return Ok(self.done());
                    }
                    return Ok(self.result_ended(status));
                }
                Ok(Step::More)
            }
            (State::Start, Expect::Prepare) => {
                if first != Some(0x00) || payload.len() < 12 {
                    return Err(malformed("expected a prepare OK"));
                }
                let id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                let columns = u16::from_le_bytes([payload[5], payload[6]]);
                let params = u16::from_le_bytes([payload[7], payload[8]]);
                self.outcome.prepared = Some((id, params, columns));
                self.state = State::PrepareParams {
                    left: params,
                    columns,
                };
                self.after_prepare_params()
            }
            (State::PrepareParams { left, columns }, _) => {
                self.state = State::PrepareParams {
                    left: left - 1,
                    columns,
                };
                self.after_prepare_params()
            }
            (State::PrepareParamsEof { columns }, _) => {
                if !wire::is_terminator(payload, false) {
                    return Err(malformed("expected EOF after parameter definitions"));
                }
                self.last = Some(StatusPacket::Eof);
                self.state = State::PrepareColumns { left: columns };
                self.after_prepare_columns()
            }
            (State::PrepareColumns { left }, _) => {
                self.state = State::PrepareColumns { left: left - 1 };
                self.after_prepare_columns()
            }
            (State::PrepareColumnsEof, _) => {
                if !wire::is_terminator(payload, false) {
                    return Err(malformed("expected EOF after column definitions"));
                }
                self.last = Some(StatusPacket::Eof);
                Ok(self.done())
            }
            (State::Start, Expect::Fetch | Expect::FieldList) => {
                Err(malformed("unexpected response state"))
            }
        }
    }

    /// Where a prepare response goes once `PrepareParams` counted down.
    fn after_prepare_params(&mut self) -> Result<Step, ProtocolError> {
        if let State::PrepareParams { left: 0, columns } = self.state {
            let had_params = self.outcome.prepared.is_some_and(|(_, p, _)| p > 0);
            if had_params && !self.deprecate_eof {
                self.state = State::PrepareParamsEof { columns };
                return Ok(Step::More);
            }
            self.state = State::PrepareColumns { left: columns };
            return self.after_prepare_columns();
        }
        Ok(Step::More)
    }

    fn after_prepare_columns(&mut self) -> Result<Step, ProtocolError> {
        if let State::PrepareColumns { left: 0 } = self.state {
            let had_columns = self.outcome.prepared.is_some_and(|(_, _, c)| c > 0);
            if had_columns && !self.deprecate_eof {
                self.state = State::PrepareColumnsEof;
                return Ok(Step::More);
            }
            return Ok(self.done());
        }
        Ok(Step::More)
    }

    /// Whether the next packet is a row (of a result set being read).
    pub fn in_rows(&self) -> bool {
        self.state == State::Rows
    }

    /// The LOCAL INFILE data was sent; the server's OK or ERR follows.
    pub fn infile_sent(&mut self) {
        self.state = State::Start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::wire::{err_packet, ok_packet, status};
    use proptest::prelude::*;

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    fn ok_terminator(status: u16) -> Vec<u8> {
        let mut p = ok_packet(0, 0, status, 0);
        p[0] = 0xfe;
        p
    }

    /// Feed all packets; the step after each.
    fn run(expect: Expect, deprecate_eof: bool, packets: &[Vec<u8>]) -> Vec<Step> {
        let mut r = ResponseReader::new(expect, deprecate_eof);
        packets.iter().map(|p| r.feed(p).unwrap()).collect()
    }

    fn ends_last(steps: &[Step]) -> Outcome {
        for s in &steps[..steps.len() - 1] {
            assert!(!matches!(s, Step::Done(_)), "ended early: {steps:?}");
        }
        match steps.last() {
            Some(Step::Done(o)) => o.clone(),
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn a_result_set_with_eof_packets() {
        let packets = vec![
            vec![2],
            b"col-a".to_vec(),
            b"col-b".to_vec(),
            eof(status::AUTOCOMMIT),
            b"\x011\x012".to_vec(),
            b"\x013\x014".to_vec(),
            eof(status::AUTOCOMMIT | status::IN_TRANS),
        ];
        let o = ends_last(&run(Expect::Results, false, &packets));
        assert_eq!(o.status, Some(status::AUTOCOMMIT | status::IN_TRANS));
        assert_eq!(o.results, 1);
    }

    #[test]
    fn a_result_set_with_deprecate_eof_then_more_results() {
        let packets = vec![
            vec![1],
            b"col".to_vec(),
            b"\x01x".to_vec(),
            ok_terminator(status::MORE_RESULTS_EXISTS),
            ok_packet(3, 9, status::IN_TRANS, 0),
        ];
        let o = ends_last(&run(Expect::Results, true, &packets));
        assert_eq!(o.results, 2);
        assert_eq!(o.ok.unwrap().affected_rows, 3);
        assert_eq!(o.status, Some(status::IN_TRANS));
    }

    #[test]
    fn an_error_ends_a_multi_result_response() {
        let packets = vec![
            ok_packet(1, 0, status::MORE_RESULTS_EXISTS, 0),
            err_packet(1146, "42S02", "no such table"),
        ];
        let o = ends_last(&run(Expect::Results, true, &packets));
        assert_eq!(o.error.unwrap().code, 1146);
    }

    #[test]
    fn a_row_that_looks_like_eof_is_a_row() {
        let mut big_row = vec![0xfe];
        big_row.extend_from_slice(&[0; 8]);
        let packets = vec![vec![1], b"c".to_vec(), eof(0), big_row, eof(0)];
        let steps = run(Expect::Results, false, &packets);
        assert_eq!(steps[3], Step::More);
        ends_last(&steps);
    }

    #[test]
    fn only_ok_and_eof_packets_are_status_packets() {
        // A binary row (always 0x00 first) and a text row whose first
        // column is '' look like OK packets; they carry no status flags.
        let binary_row = b"\x00\x00\x01\x01\x00\x00\x07\x00\x00\x00".to_vec();
        let text_row = b"\x00\x0512345".to_vec();
        for deprecate_eof in [false, true] {
            let mut r = ResponseReader::new(Expect::Results, deprecate_eof);
            let mut packets = vec![
                (vec![2], None),
                (b"c1".to_vec(), None),
                (b"c2".to_vec(), None),
            ];
            if !deprecate_eof {
                packets.push((eof(0), Some(StatusPacket::Eof)));
            }
            packets.push((binary_row.clone(), None));
            packets.push((text_row.clone(), None));
            let terminator = if deprecate_eof {
                (
                    ok_terminator(status::MORE_RESULTS_EXISTS),
                    Some(StatusPacket::Ok),
                )
            } else {
                (eof(status::MORE_RESULTS_EXISTS), Some(StatusPacket::Eof))
            };
            packets.push(terminator);
            packets.push((ok_packet(1, 0, 0, 0), Some(StatusPacket::Ok)));
            for (p, want) in packets {
                r.feed(&p).unwrap();
                assert_eq!(
                    r.status_packet(),
                    want,
                    "{p:?} (deprecate_eof {deprecate_eof})"
                );
            }
        }
        let mut r = ResponseReader::new(Expect::Fetch, false);
        r.feed(&binary_row).unwrap();
        assert_eq!(r.status_packet(), None);
        r.feed(&eof(0)).unwrap();
        assert_eq!(r.status_packet(), Some(StatusPacket::Eof));
    }

    #[test]
    fn progress_reports_do_not_end_a_response() {
        let mut r = ResponseReader::new(Expect::Results, true);
        assert_eq!(r.feed(b"\xfb/tmp/f").unwrap(), Step::LocalInfile);
        r.infile_sent();
        let progress = b"\xff\xff\xff\x01\x02\x02\x00\x00\x00\x0fEnd bulk insert";
        assert_eq!(r.feed(progress).unwrap(), Step::More);
        let step = r.feed(&ok_packet(1, 0, 0, 0)).unwrap();
        assert!(matches!(step, Step::Done(o) if o.error.is_none()));
    }

    #[test]
    fn local_infile_hands_over_to_the_client() {
        let mut r = ResponseReader::new(Expect::Results, true);
        assert_eq!(r.feed(b"\xfb/tmp/f").unwrap(), Step::LocalInfile);
        r.infile_sent();
        let step = r.feed(&ok_packet(5, 0, 0, 0)).unwrap();
        assert!(matches!(step, Step::Done(o) if o.ok.unwrap().affected_rows == 5));
    }

    #[test]
    fn prepare_with_params_and_columns_both_eof_modes() {
        let mut head = vec![0x00];
        head.extend_from_slice(&7u32.to_le_bytes());
        head.extend_from_slice(&2u16.to_le_bytes()); // columns
        head.extend_from_slice(&1u16.to_le_bytes()); // params
        head.extend_from_slice(&[0, 0, 0]);
        let with_eof = vec![
            head.clone(),
            b"p".to_vec(),
            eof(0),
            b"c1".to_vec(),
            b"c2".to_vec(),
            eof(0),
        ];
        let o = ends_last(&run(Expect::Prepare, false, &with_eof));
        assert_eq!(o.prepared, Some((7, 1, 2)));
        let without = vec![head, b"p".to_vec(), b"c1".to_vec(), b"c2".to_vec()];
        let o = ends_last(&run(Expect::Prepare, true, &without));
        assert_eq!(o.prepared, Some((7, 1, 2)));
    }

    #[test]
    fn prepare_without_params_or_columns_is_one_packet() {
        let mut head = vec![0x00];
        head.extend_from_slice(&1u32.to_le_bytes());
        head.extend_from_slice(&[0; 7]);
        let o = ends_last(&run(Expect::Prepare, false, &[head]));
        assert_eq!(o.prepared, Some((1, 0, 0)));
    }

    #[test]
    fn an_opened_cursor_ends_the_execute_response() {
        let packets = vec![vec![1], b"c".to_vec(), eof(status::CURSOR_EXISTS)];
        ends_last(&run(Expect::Results, false, &packets));
        let rows = vec![b"\x00\x00r".to_vec(), eof(0)];
        ends_last(&run(Expect::Fetch, false, &rows));
    }

    #[test]
    fn field_list_and_single_packets() {
        let o = ends_last(&run(
            Expect::FieldList,
            false,
            &[b"c1".to_vec(), b"c2".to_vec(), eof(2)],
        ));
        assert_eq!(o.status, Some(2));
        let o = ends_last(&run(Expect::Single, false, &[ok_packet(0, 0, 2, 0)]));
        assert_eq!(o.status, Some(2));
        let steps = run(Expect::Opaque, false, &[b"Uptime: 5".to_vec()]);
        ends_last(&steps);
    }

    proptest! {
        #[test]
        fn arbitrary_packets_never_panic(
            expect in prop_oneof![
                Just(Expect::Results), Just(Expect::Prepare), Just(Expect::Fetch),
                Just(Expect::FieldList), Just(Expect::Single), Just(Expect::Opaque)
            ],
            deprecate_eof in any::<bool>(),
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..12),
        ) {
            let mut r = ResponseReader::new(expect, deprecate_eof);
            for p in &packets {
                match r.feed(p) {
                    Ok(Step::Done(_)) | Err(_) => break,
                    Ok(Step::LocalInfile) => r.infile_sent(),
                    Ok(Step::More) => {}
                }
            }
        }
    }
}
