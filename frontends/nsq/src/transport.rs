//! The connection's byte stream: plain, or compressed once IDENTIFY negotiated snappy or
//! deflate.
//!
//! nsqd wraps the connection, in both directions, after it sent the IDENTIFY JSON:
//! - deflate: Go's `compress/flate`, a raw DEFLATE stream (no zlib header); every flush is a
//!   sync flush, so each response reaches the client whole;
//! - snappy: golang/snappy's framing format: a `sNaPpY` stream identifier chunk, then chunks of
//!   at most 64 KiB, each with the masked CRC-32C of its uncompressed bytes.
//!
//! ```text
//! snappy chunk:  [u8 type][u24 LE length][length bytes]
//!   0xff  stream identifier  "sNaPpY"
//!   0x00  compressed         [u32 LE masked crc32c][snappy block]
//!   0x01  uncompressed       [u32 LE masked crc32c][bytes]
//!   0x80..=0xfe skippable; 0x02..=0x7f reserved (a corrupt stream)
//! ```
//!
//! # Invariants
//! - Memory per connection is bounded: at most one snappy chunk (or 16 KiB of inflated
//!   output) is decoded ahead of the reader, and compressed output waiting for the socket is
//!   drained before more is accepted once it passes [`WRITE_HIGH_WATER`].
//! - Bytes the session had already read when it switched are decoded as compressed input.
//! - Corrupt input (bad checksum, bad chunk, bad DEFLATE) is an `InvalidData` error, never a
//!   panic.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Stream compression a client can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// golang/snappy's framing format.
    Snappy,
    /// Raw DEFLATE at this level (1..=9).
    Deflate(u32),
}

/// Compressed output kept before writes wait for the socket.
pub const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Largest uncompressed snappy chunk (golang/snappy `maxBlockSize`).
const SNAPPY_BLOCK: usize = 64 * 1024;
/// The snappy stream identifier chunk, header included.
const SNAPPY_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";
/// Bytes read from the socket at a time, and inflated at a time.
const CHUNK: usize = 16 * 1024;

/// A connection that can switch to compression between two frames.
#[derive(Debug)]
pub struct Transport<S> {
    io: S,
    codec: Option<Box<Compressed>>,
}

/// Compression state of both directions.
#[derive(Debug)]
struct Compressed {
    kind: Kind,
    /// Compressed bytes read, not yet decoded.
    raw_in: BytesMut,
    /// Decoded bytes not yet handed to the reader.
    plain_in: BytesMut,
    /// Compressed bytes not yet written.
    raw_out: BytesMut,
    eof: bool,
}

enum Kind {
    Deflate {
        inflate: Decompress,
        deflate: Compress,
        /// Data compressed since the last sync flush.
        unflushed: bool,
    },
    Snappy {
        encoder: Box<snap::raw::Encoder>,
        decoder: snap::raw::Decoder,
        identified_in: bool,
        identified_out: bool,
    },
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Deflate { .. } => "Deflate",
            Kind::Snappy { .. } => "Snappy",
        })
    }
}

impl<S> Transport<S> {
    /// A plain connection.
    pub fn new(io: S) -> Self {
        Self { io, codec: None }
    }

    /// Switches both directions to `compression`; `read_ahead` holds bytes already read
    /// from the socket (compressed by the client).
    pub fn upgrade(&mut self, compression: Compression, read_ahead: BytesMut) {
        let kind = match compression {
            Compression::Deflate(level) => Kind::Deflate {
                inflate: Decompress::new(false),
                deflate: Compress::new(flate2::Compression::new(level), false),
                unflushed: false,
            },
            Compression::Snappy => Kind::Snappy {
                encoder: Box::new(snap::raw::Encoder::new()),
                decoder: snap::raw::Decoder::new(),
                identified_in: false,
                identified_out: false,
            },
        };
        self.codec = Some(Box::new(Compressed {
            kind,
            raw_in: read_ahead,
            plain_in: BytesMut::new(),
            raw_out: BytesMut::new(),
            eof: false,
        }));
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Kind {
    /// Decodes what `raw` allows into `plain`; false when more input is needed.
    fn decode(&mut self, raw: &mut BytesMut, plain: &mut BytesMut) -> io::Result<bool> {
        match self {
            Kind::Deflate { inflate, .. } => inflate_some(inflate, raw, plain),
            Kind::Snappy {
                decoder,
                identified_in,
                ..
            } => snappy_chunk(decoder, identified_in, raw, plain),
        }
    }

    /// Compresses `data` onto `out`.
    fn encode(&mut self, data: &[u8], out: &mut BytesMut) -> io::Result<()> {
        match self {
            Kind::Deflate {
                deflate, unflushed, ..
            } => {
                *unflushed |= !data.is_empty();
                deflate_run(deflate, data, out, FlushCompress::None)
            }
            Kind::Snappy {
                encoder,
                identified_out,
                ..
            } => {
                if !*identified_out && !data.is_empty() {
                    out.put_slice(SNAPPY_IDENTIFIER);
                    *identified_out = true;
                }
                data.chunks(SNAPPY_BLOCK)
                    .try_for_each(|block| snappy_encode(encoder, block, out))
            }
        }
    }

    /// What a flush puts on the wire: deflate's sync flush (snappy chunks are complete).
    fn flush(&mut self, out: &mut BytesMut) -> io::Result<()> {
        match self {
            Kind::Deflate {
                deflate, unflushed, ..
            } if *unflushed => {
                *unflushed = false;
                deflate_run(deflate, &[], out, FlushCompress::Sync)
            }
            _ => Ok(()),
        }
    }
}

/// Inflates up to [`CHUNK`] bytes.
fn inflate_some(
    inflate: &mut Decompress,
    raw: &mut BytesMut,
    plain: &mut BytesMut,
) -> io::Result<bool> {
    let mut scratch = [0u8; CHUNK];
    let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
    let status = inflate
        .decompress(raw, &mut scratch, FlushDecompress::None)
        .map_err(|_| corrupt("invalid deflate stream"))?;
    let consumed = usize::try_from(inflate.total_in() - before_in).unwrap_or(usize::MAX);
    let produced = usize::try_from(inflate.total_out() - before_out).unwrap_or(usize::MAX);
    raw.advance(consumed.min(raw.len()));
    plain.put_slice(scratch.get(..produced).unwrap_or_default());
    if status == Status::StreamEnd && produced == 0 {
        return Err(corrupt("deflate stream ended"));
    }
    Ok(consumed > 0 || produced > 0)
}

/// Runs the compressor over `data` with `flush` until it has nothing more to emit.
fn deflate_run(
    deflate: &mut Compress,
    mut data: &[u8],
    out: &mut BytesMut,
    flush: FlushCompress,
) -> io::Result<()> {
    let mut scratch = [0u8; CHUNK];
    loop {
        let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
        deflate
            .compress(data, &mut scratch, flush)
            .map_err(|_| corrupt("deflate failed"))?;
        let consumed = usize::try_from(deflate.total_in() - before_in).unwrap_or(usize::MAX);
        let produced = usize::try_from(deflate.total_out() - before_out).unwrap_or(usize::MAX);
        data = data.get(consumed..).unwrap_or_default();
        out.put_slice(scratch.get(..produced).unwrap_or_default());
        if data.is_empty() && produced < scratch.len() {
            return Ok(());
        }
    }
}

/// Writes one snappy chunk for `block` (at most [`SNAPPY_BLOCK`] bytes): compressed unless
/// compression does not pay, as golang/snappy decides.
fn snappy_encode(
    encoder: &mut snap::raw::Encoder,
    block: &[u8],
    out: &mut BytesMut,
) -> io::Result<()> {
    let crc = masked_crc32c(block);
    let compressed = encoder
        .compress_vec(block)
        .map_err(|_| corrupt("snappy compression failed"))?;
    let (kind, body) = if compressed.len() < block.len() - block.len() / 8 {
        (0x00, compressed.as_slice())
    } else {
        (0x01, block)
    };
    let len = u32::try_from(body.len() + 4).map_err(|_| corrupt("snappy chunk too long"))?;
    out.put_u8(kind);
    out.put_slice(len.to_le_bytes().get(..3).unwrap_or_default());
    out.put_u32_le(crc);
    out.put_slice(body);
    Ok(())
}

/// Decodes one complete snappy chunk from `raw`; false when it is not all there yet.
fn snappy_chunk(
    decoder: &mut snap::raw::Decoder,
    identified: &mut bool,
    raw: &mut BytesMut,
    plain: &mut BytesMut,
) -> io::Result<bool> {
    let Some(&[kind, l0, l1, l2]) = raw.get(..4) else {
        return Ok(false);
    };
    let len = usize::from(l0) | usize::from(l1) << 8 | usize::from(l2) << 16;
    if len > snap::raw::max_compress_len(SNAPPY_BLOCK) + 4 {
        return Err(corrupt("snappy chunk too long"));
    }
    if raw.len() < 4 + len {
        return Ok(false);
    }
    raw.advance(4);
    let body = raw.split_to(len);
    if !*identified && kind != 0xff {
        return Err(corrupt("snappy stream without identifier"));
    }
    match kind {
        0xff if body.as_ref() == b"sNaPpY" => *identified = true,
        0x00 | 0x01 => {
            let (crc, data) = body
                .split_at_checked(4)
                .ok_or(corrupt("short snappy chunk"))?;
            let start = plain.len();
            if kind == 0x00 {
                let size = snap::raw::decompress_len(data).map_err(|_| corrupt("bad snappy"))?;
                if size > SNAPPY_BLOCK {
                    return Err(corrupt("snappy block too long"));
                }
                plain.resize(start + size, 0);
                let target = plain.get_mut(start..).unwrap_or_default();
                decoder
                    .decompress(data, target)
                    .map_err(|_| corrupt("bad snappy block"))?;
            } else if data.len() <= SNAPPY_BLOCK {
                plain.put_slice(data);
            } else {
                return Err(corrupt("snappy block too long"));
            }
            let expected = u32::from_le_bytes(crc.try_into().unwrap_or_default());
            if masked_crc32c(plain.get(start..).unwrap_or_default()) != expected {
                return Err(corrupt("snappy checksum mismatch"));
            }
        }
        0x80..=0xfe => {}
        _ => return Err(corrupt("reserved snappy chunk")),
    }
    Ok(true)
}

/// CRC-32C (Castagnoli) lookup table, computed at compile time (`i < 256` by the loop).
#[allow(clippy::indexing_slicing)]
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The snappy framing format's masked CRC-32C.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = !data.iter().fold(!0u32, |crc, &b| {
        let index = usize::from((crc as u8) ^ b);
        (crc >> 8) ^ CRC32C_TABLE.get(index).copied().unwrap_or_default()
    });
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

impl<S: AsyncRead + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(codec) = this.codec.as_deref_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        loop {
            if !codec.plain_in.is_empty() {
                let n = buf.remaining().min(codec.plain_in.len());
                buf.put_slice(&codec.plain_in.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if codec.kind.decode(&mut codec.raw_in, &mut codec.plain_in)? {
                continue;
            }
            if codec.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            codec.eof = read.filled().is_empty();
            codec.raw_in.put_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> Transport<S> {
    /// Writes out every compressed byte waiting.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(codec) = self.codec.as_deref_mut() else {
            return Poll::Ready(Ok(()));
        };
        while !codec.raw_out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &codec.raw_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            codec.raw_out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.codec.is_none() {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        if this
            .codec
            .as_deref()
            .is_some_and(|c| c.raw_out.len() >= WRITE_HIGH_WATER)
        {
            ready!(this.poll_drain(cx))?;
        }
        if let Some(codec) = this.codec.as_deref_mut() {
            codec.kind.encode(data, &mut codec.raw_out)?;
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(codec) = this.codec.as_deref_mut() {
            codec.kind.flush(&mut codec.raw_out)?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn crc_matches_the_framing_format() {
        // CRC-32C("123456789") = 0xe3069283 (RFC 3720); masked as the framing format says.
        let crc: u32 = 0xe306_9283;
        assert_eq!(
            masked_crc32c(b"123456789"),
            crc.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    async fn round_trip(compression: Compression, reference: impl Fn(&[u8]) -> Vec<u8>) {
        let (client, server) = duplex(1 << 20);
        let mut transport = Transport::new(server);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // The client's stream, as a reference implementation encodes it; its first bytes
        // arrive before the switch, as read-ahead.
        let encoded = reference(&payload);
        let (ahead, rest) = encoded.split_at(7);
        transport.upgrade(compression, BytesMut::from(ahead));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(rest).await.unwrap();
        drop(client_write);
        let mut decoded = Vec::new();
        let mut buf = [0u8; 1000];
        while decoded.len() < payload.len() {
            let n = transport.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "stream ended early");
            decoded.extend_from_slice(&buf[..n]);
        }
        assert_eq!(decoded, payload);
        transport.write_all(&payload).await.unwrap();
        transport.write_all(b"tail").await.unwrap();
        transport.flush().await.unwrap();
        let mut wire = vec![0u8; 0];
        let mut chunk = [0u8; 65536];
        let expected = payload.len() + 4;
        let mut plain = Vec::new();
        while plain.len() < expected {
            let n = client_read.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0);
            wire.extend_from_slice(&chunk[..n]);
            plain = decode_reference(compression, &wire);
        }
        assert_eq!(&plain[..payload.len()], &payload[..]);
        assert_eq!(&plain[payload.len()..], b"tail");
    }

    /// Decodes what has arrived so far with the reference implementations.
    fn decode_reference(compression: Compression, wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match compression {
            Compression::Snappy => {
                let _ = snap::read::FrameDecoder::new(wire).read_to_end(&mut out);
            }
            Compression::Deflate(_) => {
                let _ = flate2::read::DeflateDecoder::new(wire).read_to_end(&mut out);
            }
        }
        out
    }

    #[tokio::test]
    async fn snappy_round_trips_with_the_reference_framing() {
        round_trip(Compression::Snappy, |data| {
            let mut writer = snap::write::FrameEncoder::new(Vec::new());
            writer.write_all(data).unwrap();
            writer.into_inner().unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn deflate_round_trips_with_a_reference_encoder() {
        round_trip(Compression::Deflate(6), |data| {
            let mut writer =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
            writer.write_all(data).unwrap();
            writer.flush().unwrap();
            writer.get_ref().clone()
        })
        .await;
    }

    /// Runs a decoder over `input` until it needs more or fails.
    fn decode_until_stuck(compression: Compression, input: &[u8]) -> io::Result<usize> {
        let mut transport = Transport::new(());
        transport.upgrade(compression, BytesMut::from(input));
        let codec = transport.codec.as_deref_mut().unwrap();
        let mut plain = BytesMut::new();
        for _ in 0..=input.len() {
            if !codec.kind.decode(&mut codec.raw_in, &mut plain)? {
                break;
            }
            // Bounded memory: one step decodes at most one block.
            assert!(plain.len() <= SNAPPY_BLOCK.max(CHUNK));
            plain.clear();
        }
        Ok(codec.raw_in.len())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            identified in proptest::prelude::any::<bool>(),
        ) {
            let mut snappy = if identified { SNAPPY_IDENTIFIER.to_vec() } else { Vec::new() };
            snappy.extend_from_slice(&input);
            let _ = decode_until_stuck(Compression::Snappy, &snappy);
            let _ = decode_until_stuck(Compression::Deflate(6), &input);
        }
    }

    #[tokio::test]
    async fn corrupt_snappy_is_an_error() {
        let (mut client, server) = duplex(1024);
        let mut transport = Transport::new(server);
        transport.upgrade(Compression::Snappy, BytesMut::new());
        let mut chunk = SNAPPY_IDENTIFIER.to_vec();
        chunk.extend_from_slice(b"\x01\x05\x00\x00\x00\x00\x00\x00x");
        client.write_all(&chunk).await.unwrap();
        let err = transport.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let (mut client, server) = duplex(1024);
        let mut transport = Transport::new(server);
        transport.upgrade(Compression::Snappy, BytesMut::new());
        client.write_all(b"\x00\x05\x00\x00abcde").await.unwrap();
        assert!(transport.read(&mut [0u8; 16]).await.is_err());
    }
}
