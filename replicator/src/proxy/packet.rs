//! MySQL wire framing: a 4-byte header (3-byte little-endian payload
//! length, 1-byte sequence id) before each payload; a payload of exactly
//! 0xFFFFFF bytes continues in the next packet. Owns reading and writing
//! whole logical packets with a size limit; knows nothing of what the
//! payloads mean.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload of one physical packet.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

/// Errors of the wire protocol, with what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed in the middle of a packet")]
    Truncated,
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("packet out of sequence: expected id {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// One logical packet: the payload of all its chunks, the sequence id of
/// its first chunk and of its last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub seq: u8,
    pub last_seq: u8,
    pub payload: Vec<u8>,
}

impl Packet {
    /// The sequence id the next packet in this exchange carries.
    pub fn next_seq(&self) -> u8 {
        self.last_seq.wrapping_add(1)
    }

    pub fn first_byte(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

/// Reads logical packets from `R`, refusing any above `max_len` bytes.
pub struct PacketReader<R> {
    inner: R,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub fn new(inner: R, max_len: usize) -> Self {
        Self { inner, max_len }
    }

    /// The next packet; `None` when the peer closed the connection
    /// between packets.
    pub async fn read(&mut self) -> Result<Option<Packet>, ProtocolError> {
        let mut payload = Vec::new();
        let mut first_seq = None;
        loop {
            let mut header = [0u8; 4];
            match self.inner.read_exact(&mut header[..1]).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return match first_seq {
                        None => Ok(None),
                        Some(_) => Err(ProtocolError::Truncated),
                    };
                }
                Err(e) => return Err(e.into()),
            }
            self.inner
                .read_exact(&mut header[1..])
                .await
                .map_err(truncated)?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
            let seq = header[3];
            if let Some(first) = first_seq {
                let expected = first_seq_plus(first, &payload);
                if seq != expected {
                    return Err(ProtocolError::Sequence { expected, got: seq });
                }
            }
            let total = payload.len() + len;
            if total > self.max_len {
                return Err(ProtocolError::TooLarge {
                    len: total,
                    max: self.max_len,
                });
            }
            let start = payload.len();
            payload.resize(total, 0);
            self.inner
                .read_exact(&mut payload[start..])
                .await
                .map_err(truncated)?;
            let first = *first_seq.get_or_insert(seq);
            if len < MAX_CHUNK {
                return Ok(Some(Packet {
                    seq: first,
                    last_seq: seq,
                    payload,
                }));
            }
        }
    }

    /// Like [`Self::read`], but the peer closing the connection is an
    /// error (a reply was due).
    pub async fn expect(&mut self) -> Result<Packet, ProtocolError> {
        self.read().await?.ok_or(ProtocolError::Truncated)
    }
}

/// The sequence id of the chunk after `payload.len() / MAX_CHUNK` full
/// chunks that started at `first`.
fn first_seq_plus(first: u8, payload: &[u8]) -> u8 {
    first.wrapping_add((payload.len() / MAX_CHUNK) as u8)
}

fn truncated(e: std::io::Error) -> ProtocolError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProtocolError::Truncated
    } else {
        ProtocolError::Io(e)
    }
}

/// Append the packet(s) carrying `payload` with sequence ids from `seq` to
/// `out`; returns the sequence id that follows.
pub fn encode_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        // A payload that is a multiple of MAX_CHUNK ends with an empty chunk.
        if n < MAX_CHUNK {
            return seq;
        }
    }
}

/// Write one logical packet; returns the sequence id that follows.
pub async fn write_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
) -> Result<u8, ProtocolError> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    let next = encode_packet(&mut buf, seq, payload);
    w.write_all(&buf).await?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    async fn roundtrip(payload: &[u8], seq: u8) -> Packet {
        let mut wire = Vec::new();
        encode_packet(&mut wire, seq, payload);
        let mut reader = PacketReader::new(wire.as_slice(), 64 << 20);
        let packet = reader.read().await.unwrap().unwrap();
        assert!(reader.read().await.unwrap().is_none());
        packet
    }

    #[tokio::test]
    async fn a_large_payload_spans_chunks_and_comes_back_whole() {
        for len in [0, 1, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 2 * MAX_CHUNK] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let packet = roundtrip(&payload, 250).await;
            assert_eq!(packet.payload.len(), len);
            assert_eq!(packet.payload, payload);
            assert_eq!(packet.seq, 250);
            assert_eq!(packet.last_seq, 250u8.wrapping_add((len / MAX_CHUNK) as u8));
        }
    }

    #[tokio::test]
    async fn truncation_and_oversize_are_errors() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, b"hello");
        let cut = &wire[..wire.len() - 1];
        let err = PacketReader::new(cut, 1024).read().await.unwrap_err();
        assert!(matches!(err, ProtocolError::Truncated), "{err}");
        let err = PacketReader::new(&wire[..2], 1024)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, ProtocolError::Truncated), "{err}");
        let err = PacketReader::new(wire.as_slice(), 4)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, ProtocolError::TooLarge { len: 5, max: 4 }));
    }

    #[tokio::test]
    async fn a_continuation_out_of_sequence_is_refused() {
        let payload = vec![7u8; MAX_CHUNK + 3];
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, &payload);
        wire[4 + MAX_CHUNK + 3] = 9; // second chunk's sequence id
        let err = PacketReader::new(wire.as_slice(), 64 << 20)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::Sequence {
                expected: 1,
                got: 9
            }
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut reader = PacketReader::new(bytes.as_slice(), 32);
                while let Ok(Some(_)) = reader.read().await {}
            });
        }

        #[test]
        fn small_payloads_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..300), seq in any::<u8>()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let packet = rt.block_on(roundtrip(&payload, seq));
            prop_assert_eq!(&packet.payload, &payload);
            prop_assert_eq!(packet.next_seq(), seq.wrapping_add(1));
        }
    }
}
