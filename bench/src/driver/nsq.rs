//! NSQ driver: the TCP protocol V2 spoken as raw bytes over tokio.
//!
//! ```text
//! client → server: "  V2"                                   (once, first)
//!                  PUB <topic>\n [u32 size][body]
//!                  MPUB <topic>\n [u32 body size][u32 count] ([u32 size][body])*
//!                  SUB <topic> <channel>\n   RDY <n>\n   FIN <id>\n   NOP\n
//! server → client: [u32 size][u32 type][data]               size = 4 + len(data)
//!                  type 0 response (`OK`, `_heartbeat_`), 1 error, 2 message:
//!                  [i64 timestamp ns][u16 attempts][16-byte id][body]
//! ```
//!
//! Subjects are NSQ topic names as they are (`bench.1`). Without a group every subscriber
//! reads its own channel, so each gets every message; a group is one channel shared by its
//! members. A publisher pipelines: a writer task batches whatever is queued into one write, a
//! reader task counts the `OK`s, and `flush` waits until every command has its `OK`.
//!
//! # Invariants
//! - Frame sizes are checked before a frame is buffered; nothing here panics on server bytes.
//! - Every `_heartbeat_` is answered with `NOP`; every message is answered with `FIN`.
//! - `flush` returns only when the `OK` count equals the commands sent (an error frame ends
//!   the publisher and is reported).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{unique_name, Publisher, Subscriber};

/// The protocol magic a client sends first.
const MAGIC: &[u8] = b"  V2";
/// Messages in flight from the broker to one subscriber (nsqd's default max-rdy-count).
const RDY: u32 = 2500;
/// Largest frame accepted from the broker (nsqd's max-body-size).
const MAX_FRAME: usize = 5 * 1024 * 1024;
/// Bytes gathered into one write.
const WRITE_CHUNK: usize = 64 * 1024;
/// Encoded commands queued towards a publisher's writer task.
const COMMAND_CAPACITY: usize = 8192;
/// Payloads queued between a subscriber's connection task and the scenario.
const DELIVERY_CAPACITY: usize = 4096;

/// Frame type of a response (`OK`, `_heartbeat_`).
const FRAME_RESPONSE: u32 = 0;
/// Frame type of an error (`E_…`).
const FRAME_ERROR: u32 = 1;
/// Frame type of a message.
const FRAME_MESSAGE: u32 = 2;

/// What went wrong reading the broker's frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is below the 4-byte type")]
    TooShort { size: usize },
    #[error("frame size {size} exceeds {max}")]
    TooLarge { size: usize, max: usize },
    #[error("message frame of {len} bytes is shorter than its 26-byte header")]
    ShortMessage { len: usize },
    #[error("unknown frame type {0}")]
    UnknownType(u32),
}

/// One frame from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A response: `OK`, `_heartbeat_`, `CLOSE_WAIT`.
    Response(Bytes),
    /// An error: `<CODE> <description>`.
    Error(Bytes),
    /// A message: its 16-byte id and its body.
    Message { id: Bytes, body: Bytes },
}

/// Decodes one frame from the front of `buf`: `Ok(None)` until a whole frame is buffered.
/// Check, then parse, then advance: the size is validated before anything is consumed.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(size) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let size = u32::from_be_bytes(*size) as usize;
    if size < 4 {
        return Err(FrameError::TooShort { size });
    }
    if size > MAX_FRAME {
        return Err(FrameError::TooLarge {
            size,
            max: MAX_FRAME,
        });
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let kind = buf.get_u32();
    let mut data = buf.split_to(size - 4).freeze();
    Ok(Some(match kind {
        FRAME_RESPONSE => Frame::Response(data),
        FRAME_ERROR => Frame::Error(data),
        FRAME_MESSAGE => {
            // [i64 timestamp][u16 attempts][16-byte id][body]
            if data.len() < 26 {
                return Err(FrameError::ShortMessage { len: data.len() });
            }
            data.advance(10);
            let id = data.split_to(16);
            Frame::Message { id, body: data }
        }
        other => return Err(FrameError::UnknownType(other)),
    }))
}

/// Appends `PUB <topic>\n[size][body]`.
fn encode_pub(out: &mut BytesMut, topic: &str, body: &[u8]) {
    out.reserve(topic.len() + body.len() + 9);
    out.put_slice(b"PUB ");
    out.put_slice(topic.as_bytes());
    out.put_u8(b'\n');
    put_len(out, body.len());
    out.put_slice(body);
}

/// Appends `MPUB <topic>\n[body size][count]([size][body])*`.
fn encode_mpub(out: &mut BytesMut, topic: &str, bodies: &[Bytes]) {
    let body_size = 4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
    out.reserve(topic.len() + body_size + 10);
    out.put_slice(b"MPUB ");
    out.put_slice(topic.as_bytes());
    out.put_u8(b'\n');
    put_len(out, body_size);
    put_len(out, bodies.len());
    for body in bodies {
        put_len(out, body.len());
        out.put_slice(body);
    }
}

fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Opens a connection and sends the magic.
async fn open(addr: &str) -> anyhow::Result<(OwnedReadHalf, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to NSQ at {addr}"))?;
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.into_split();
    writer.write_all(MAGIC).await?;
    Ok((reader, writer))
}

/// Reads until one whole frame is decoded; `None` at a clean end of stream.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> anyhow::Result<Option<Frame>> {
    loop {
        if let Some(frame) = decode_frame(buf)? {
            return Ok(Some(frame));
        }
        if reader.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("NSQ connection closed inside a frame");
        }
    }
}

fn error_text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Publishes with `PUB`, or `MPUB` of `batch` messages; pipelined.
pub struct NsqPublisher {
    commands: mpsc::Sender<Bytes>,
    batch: usize,
    pending: Vec<Bytes>,
    topic: String,
    /// Commands sent that each await one `OK`.
    sent: u64,
    oks: watch::Receiver<u64>,
    reader: JoinHandle<anyhow::Result<()>>,
    _writer: JoinHandle<()>,
}

impl NsqPublisher {
    pub async fn connect(addr: &str, batch: usize) -> anyhow::Result<Self> {
        let (reader, writer) = open(addr).await?;
        let (commands, queued) = mpsc::channel(COMMAND_CAPACITY);
        let (count, oks) = watch::channel(0);
        let reader = tokio::spawn(count_oks(reader, count, commands.clone()));
        let writer = tokio::spawn(write_commands(writer, queued));
        Ok(Self {
            commands,
            batch: batch.max(1),
            pending: Vec::new(),
            topic: String::new(),
            sent: 0,
            oks,
            reader,
            _writer: writer,
        })
    }

    /// Sends the buffered batch as one `MPUB` (a lone message as `PUB`).
    async fn send_pending(&mut self) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        match self.pending.as_slice() {
            [] => return Ok(()),
            [one] => encode_pub(&mut out, &self.topic, one),
            many => encode_mpub(&mut out, &self.topic, many),
        }
        self.pending.clear();
        self.send(out.freeze()).await
    }

    async fn send(&mut self, command: Bytes) -> anyhow::Result<()> {
        if self.commands.send(command).await.is_err() {
            return Err(self.failure().await);
        }
        self.sent += 1;
        Ok(())
    }

    /// Why the connection ended (the reader task saw it first).
    async fn failure(&mut self) -> anyhow::Error {
        match (&mut self.reader).await {
            Ok(Err(err)) => err,
            Ok(Ok(())) => anyhow::anyhow!("NSQ connection closed"),
            Err(join) => join.into(),
        }
    }
}

/// Reads the publisher's responses: counts `OK`s, answers heartbeats, stops at an error.
async fn count_oks(
    mut reader: OwnedReadHalf,
    count: watch::Sender<u64>,
    commands: mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    while let Some(frame) = read_frame(&mut reader, &mut buf).await? {
        match frame {
            Frame::Response(data) if data.as_ref() == b"OK" => count.send_modify(|n| *n += 1),
            Frame::Response(data) if data.as_ref() == b"_heartbeat_" => {
                if commands.send(Bytes::from_static(b"NOP\n")).await.is_err() {
                    return Ok(());
                }
            }
            Frame::Response(data) => bail!("unexpected NSQ response {}", error_text(&data)),
            Frame::Error(data) => bail!("NSQ error: {}", error_text(&data)),
            Frame::Message { .. } => bail!("NSQ message sent to a publisher"),
        }
    }
    Ok(())
}

/// Writes queued commands, gathering everything already queued into one write.
async fn write_commands(mut writer: OwnedWriteHalf, mut queued: mpsc::Receiver<Bytes>) {
    let mut out = BytesMut::with_capacity(WRITE_CHUNK);
    while let Some(first) = queued.recv().await {
        out.put_slice(&first);
        while out.len() < WRITE_CHUNK {
            match queued.try_recv() {
                Ok(next) => out.put_slice(&next),
                Err(_) => break,
            }
        }
        if writer.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

impl Drop for NsqPublisher {
    /// Stops the reader, whose `NOP` sender would otherwise keep the writer (and so the
    /// connection) alive.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[async_trait]
impl Publisher for NsqPublisher {
    async fn publish(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<()> {
        if self.topic != subject {
            self.send_pending().await?;
            subject.clone_into(&mut self.topic);
        }
        self.pending.push(payload);
        if self.pending.len() >= self.batch {
            self.send_pending().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.send_pending().await?;
        let sent = self.sent;
        if self.oks.wait_for(|n| *n >= sent).await.is_ok() {
            return Ok(());
        }
        Err(self.failure().await)
    }
}

/// Reads one channel of one topic with `RDY 2500`, finishing every message.
pub struct NsqSubscriber {
    deliveries: mpsc::Receiver<Bytes>,
    connection: Option<JoinHandle<anyhow::Result<()>>>,
}

impl NsqSubscriber {
    /// Subscribes to topic `subject` on channel `group`, or on a channel of its own.
    pub async fn connect(addr: &str, subject: &str, group: Option<&str>) -> anyhow::Result<Self> {
        let channel = group.map_or_else(|| unique_name("bench"), str::to_owned);
        let (mut reader, mut writer) = open(addr).await?;
        writer
            .write_all(format!("SUB {subject} {channel}\n").as_bytes())
            .await?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        match read_frame(&mut reader, &mut buf).await? {
            Some(Frame::Response(data)) if data.as_ref() == b"OK" => {}
            Some(Frame::Error(data)) => bail!("SUB refused: {}", error_text(&data)),
            other => bail!("expected OK to SUB, got {other:?}"),
        }
        writer.write_all(format!("RDY {RDY}\n").as_bytes()).await?;
        let (tx, deliveries) = mpsc::channel(DELIVERY_CAPACITY);
        let connection = tokio::spawn(consume(reader, writer, buf, tx));
        Ok(Self {
            deliveries,
            connection: Some(connection),
        })
    }
}

/// Forwards message bodies, answering each batch of frames read with its `FIN`s (and `NOP`s)
/// in one write.
async fn consume(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    mut buf: BytesMut,
    tx: mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let mut out = BytesMut::with_capacity(WRITE_CHUNK);
    loop {
        while let Some(frame) = decode_frame(&mut buf)? {
            match frame {
                Frame::Message { id, body } => {
                    out.put_slice(b"FIN ");
                    out.put_slice(&id);
                    out.put_u8(b'\n');
                    if tx.send(body).await.is_err() {
                        return Ok(());
                    }
                }
                Frame::Response(data) if data.as_ref() == b"_heartbeat_" => {
                    out.put_slice(b"NOP\n");
                }
                Frame::Response(_) => {}
                Frame::Error(data) => bail!("NSQ error: {}", error_text(&data)),
            }
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

impl Drop for NsqSubscriber {
    /// Closes the connection even while it waits for the broker.
    fn drop(&mut self) {
        if let Some(connection) = &self.connection {
            connection.abort();
        }
    }
}

#[async_trait]
impl Subscriber for NsqSubscriber {
    async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        if let Some(payload) = self.deliveries.recv().await {
            return Ok(Some(payload));
        }
        match self.connection.take() {
            Some(connection) => connection.await?.map(|()| None),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn framed(kind: u32, data: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        put_len(&mut buf, data.len() + 4);
        buf.put_u32(kind);
        buf.put_slice(data);
        buf
    }

    fn message(id: &[u8; 16], body: &[u8]) -> BytesMut {
        let mut data = BytesMut::new();
        data.put_i64(1_700_000_000_000_000_000);
        data.put_u16(1);
        data.put_slice(id);
        data.put_slice(body);
        framed(FRAME_MESSAGE, &data)
    }

    #[test]
    fn decodes_responses_errors_and_messages() {
        let mut buf = framed(FRAME_RESPONSE, b"OK");
        buf.extend_from_slice(&framed(FRAME_ERROR, b"E_INVALID bad"));
        buf.extend_from_slice(&message(b"0123456789abcdef", b"hello"));
        assert_eq!(
            decode_frame(&mut buf).unwrap(),
            Some(Frame::Response(Bytes::from_static(b"OK")))
        );
        assert_eq!(
            decode_frame(&mut buf).unwrap(),
            Some(Frame::Error(Bytes::from_static(b"E_INVALID bad")))
        );
        assert_eq!(
            decode_frame(&mut buf).unwrap(),
            Some(Frame::Message {
                id: Bytes::from_static(b"0123456789abcdef"),
                body: Bytes::from_static(b"hello"),
            })
        );
        assert!(buf.is_empty());
        assert_eq!(decode_frame(&mut buf).unwrap(), None);
    }

    #[test]
    fn rejects_bad_sizes_before_buffering() {
        let mut short = BytesMut::from(&[0, 0, 0, 3][..]);
        assert!(matches!(
            decode_frame(&mut short),
            Err(FrameError::TooShort { size: 3 })
        ));
        let mut huge = BytesMut::new();
        put_len(&mut huge, MAX_FRAME + 1);
        assert!(matches!(
            decode_frame(&mut huge),
            Err(FrameError::TooLarge { .. })
        ));
        let mut truncated = framed(FRAME_MESSAGE, b"too short for a header");
        assert!(matches!(
            decode_frame(&mut truncated),
            Err(FrameError::ShortMessage { len: 22 })
        ));
        let mut unknown = framed(7, b"");
        assert!(matches!(
            decode_frame(&mut unknown),
            Err(FrameError::UnknownType(7))
        ));
    }

    #[test]
    fn encodes_pub_and_mpub() {
        let mut out = BytesMut::new();
        encode_pub(&mut out, "bench.1", b"abc");
        assert_eq!(&out[..], b"PUB bench.1\n\0\0\0\x03abc");
        let mut out = BytesMut::new();
        encode_mpub(
            &mut out,
            "t",
            &[Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
        );
        assert_eq!(
            &out[..],
            b"MPUB t\n\0\0\0\x0f\0\0\0\x02\0\0\0\x01a\0\0\0\x02bc"
        );
    }

    proptest! {
        #[test]
        fn split_anywhere_decodes_the_same(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..400,
        ) {
            let whole = message(b"fedcba9876543210", &body);
            let cut = cut.min(whole.len());
            let mut buf = BytesMut::from(&whole[..cut]);
            let early = decode_frame(&mut buf).unwrap();
            if cut < whole.len() {
                prop_assert_eq!(early, None);
                buf.extend_from_slice(&whole[cut..]);
                let frame = decode_frame(&mut buf).unwrap();
                prop_assert_eq!(frame, Some(Frame::Message {
                    id: Bytes::from_static(b"fedcba9876543210"),
                    body: Bytes::from(body),
                }));
            } else {
                prop_assert_eq!(early, Some(Frame::Message {
                    id: Bytes::from_static(b"fedcba9876543210"),
                    body: Bytes::from(body),
                }));
            }
            prop_assert!(buf.is_empty());
        }
    }
}
