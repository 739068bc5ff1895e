//! One MQTT connection: CONNECT handshake, then a single task that reads packets, writes
//! deliveries, keeps the keep alive, and finally hands its session back to the registry.
//!
//! ```text
//! connect():  CONNECT (under connect_timeout) → checks → claim client id (takeover)
//!             → CONNACK → resend PUBRELs → attach the offline queue (redelivers unacked
//!             PUBLISHes with DUP=1 and their packet ids, then queued messages)
//! serve():    select! { token (shutdown or takeover) | keep alive 1.5× | socket read | outbox }
//! finish():   DISCONNECT (5.0, on error) → detach queue → keep (and store, with its flows
//!             in flight) or discard the session → will
//! ```
//!
//! Across a restart (disk backend) a persistent session keeps its flows in flight: the
//! record written when the client detaches (and at shutdown, which detaches every client)
//! holds the packet ids of unacknowledged queued PUBLISHes, the PUBRELs waiting for PUBCOMP
//! and the inbound QoS 2 ids waiting for PUBREL. The queue keeps the unacknowledged messages
//! first, in delivery order, so they go out again first, with their packet ids and DUP=1.
//! While connected nothing is written per message: after a `kill -9` the record is the one
//! written at CONNECT (or the last SUBSCRIBE / UNSUBSCRIBE), less what completed since.
//!
//! Deliveries: a persistent session (expiry > 0) receives all its subscriptions, `$share`
//! ones included (the queue is the group member, so the session keeps its share while away),
//! through its durable queue `mqtt/<client-id>` (credit = the client's window); a clean
//! session receives through the outbox directly, QoS 1/2 ones waiting in a local queue (at
//! most `max_queued_messages`) while the window is full. Each message is sent once per
//! session, with the highest granted QoS and every matching Subscription Identifier.
//!
//! # Modules
//! - this module: the socket, the read/write loop, packet dispatch, DISCONNECT and the end.
//! - [`connect`]: CONNECT checks, CONNACK, takeover and session resume.
//! - [`inbound`]: PUBLISH from the client and its QoS 1/2 acknowledgements.
//! - [`subscribe`]: SUBSCRIBE / UNSUBSCRIBE and retained messages on subscribe.
//! - [`delivery`]: the outbound flow: deliveries, window, packet ids, aliases, acks.
//!
//! # Invariants
//! - QoS 1/2 PUBLISHes in flight to the client (including QoS 2 waiting for PUBCOMP) never
//!   exceed its window (5.0 Receive Maximum, 3.1.1 `max_inflight`).
//! - An inbound QoS 2 message is routed once: a repeated PUBLISH with a packet id waiting for
//!   PUBREL only gets PUBREC again.
//! - A message taken from the queue is `fin`ished exactly when its PUBACK / PUBREC arrives, or
//!   at once when it is sent at QoS 0 or not sent at all.
//! - Nothing here awaits another client; the outbox is drained with `try_recv` into one write.
//! - Packets that arrive in the same read as CONNECT are handled right after CONNACK.
//! - An idle connection holds no read or write buffer, and no outbox until it subscribes or
//!   has a queue; its task keeps the select loop and a pointer to its boxed `Connection`.

mod connect;
mod delivery;
mod inbound;
mod subscribe;

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use polymq_core::outbox::{outbox, Delivery, Outbox, Overflow, Sink};
use polymq_core::queue::Member;
use polymq_core::{MessageId, Protocol, SubscriptionId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Instrument;

use crate::broker::{Broker, Claim, PendingWill, SessionState, Stats};
use crate::error::SessionError;
use crate::frame::{reason, Codec, Disconnect, FrameError, Packet, ProtocolVersion};
use connect::connect;
use delivery::{Inflight, Waiting};

/// Tag of deliveries that come from the session's durable queue.
const QUEUE_SUB: SubscriptionId = SubscriptionId(u64::MAX);
/// In-flight timeout of queue deliveries: MQTT never resends within a connection.
const NO_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Most deliveries written per outbox wake-up.
const DRAIN_BATCH: usize = 256;
/// Recent message ids remembered to send a message once per session.
const RECENT: usize = 64;
/// Longest wait for the last bytes (DISCONNECT) to go out when a session ends.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// How long a connection closed for an error keeps reading (and dropping) what its client
/// still sends, so that the close does not reset the connection under the DISCONNECT.
const LINGER: Duration = Duration::from_secs(2);
/// Spare room a read starts with.
const MIN_READ_CHUNK: usize = 512;
/// Most spare room a read asks for; the chunk doubles up to this while reads fill it.
const MAX_READ_CHUNK: usize = 64 * 1024;

/// Most bytes an idle connection reads before it has a buffer (on the stack).
const PROBE: usize = 64;

/// Most reads a taken-over connection makes of what its client had already sent.
const LAST_READS: usize = 4;

/// The byte stream a session runs on: a TCP socket, or a WebSocket carrying MQTT
/// ([`crate::websocket::WsStream`]); TLS slots in the same way.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for T {}

/// Stream, buffers and codec of one connection. Both buffers are empty and unallocated
/// while the connection is idle: an idle connection waits for bytes with a small probe on
/// the stack and gets a read buffer only once they came, and the write buffer is let go once
/// flushed.
struct Io {
    stream: Box<dyn ByteStream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    codec: Codec,
    /// Spare room the next read gets (adapts between the two bounds).
    read_chunk: usize,
}

impl Io {
    fn new(stream: Box<dyn ByteStream>, codec: Codec) -> Self {
        Self {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            codec,
            read_chunk: MIN_READ_CHUNK,
        }
    }

    /// Reads until one packet is decoded; `None` at end of stream.
    async fn read_packet(&mut self) -> Result<Option<Packet>, FrameError> {
        loop {
            if let Some(packet) = self.codec.decode(&mut self.rbuf)? {
                return Ok(Some(packet));
            }
            if self.read().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads once into the buffer, growing the read size while reads fill it (busy
    /// connections) and shrinking it otherwise. An empty buffer is let go when the stream
    /// has nothing more to give. Cancel-safe: bytes read are in the buffer.
    async fn read(&mut self) -> std::io::Result<usize> {
        // Polled by hand: the stream keeps the waker, so the future holds no waiter.
        poll_fn(|cx| self.poll_read(cx)).await
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.rbuf.capacity() == 0 {
            return self.poll_read_idle(cx);
        }
        self.rbuf.reserve(self.read_chunk);
        let spare = self.rbuf.capacity() - self.rbuf.len();
        match poll_read_buf(Pin::new(&mut *self.stream), cx, &mut self.rbuf) {
            Poll::Ready(Ok(n)) => {
                self.read_chunk = if n == spare {
                    (self.read_chunk * 2).min(MAX_READ_CHUNK)
                } else {
                    (self.read_chunk / 2).max(MIN_READ_CHUNK)
                };
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                if self.rbuf.is_empty() {
                    self.rbuf = BytesMut::new();
                }
                Poll::Pending
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        }
    }

    /// Reads what the stream holds already, without waiting (at most [`LAST_READS`] reads);
    /// returns how many bytes came.
    fn read_now(&mut self) -> usize {
        let mut cx = Context::from_waker(Waker::noop());
        let mut total = 0;
        for _ in 0..LAST_READS {
            match self.poll_read(&mut cx) {
                Poll::Ready(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
        total
    }

    /// Waits for bytes without a buffer: they land in a probe on the stack, and only then in
    /// a newly reserved read buffer.
    fn poll_read_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let mut probe = [0u8; PROBE];
        let mut probe = ReadBuf::new(&mut probe);
        ready!(Pin::new(&mut *self.stream).poll_read(cx, &mut probe))?;
        let got = probe.filled();
        if !got.is_empty() {
            self.rbuf.reserve(self.read_chunk);
            self.rbuf.extend_from_slice(got);
        }
        Poll::Ready(Ok(got.len()))
    }

    /// Encodes a packet into the write buffer for protocol `v`.
    fn queue(&mut self, packet: &Packet, v: ProtocolVersion) {
        if let Err(err) = packet.encode(&mut self.wbuf, v) {
            tracing::debug!(%err, "packet not encodable, not sent");
        }
    }

    /// Writes out the buffer, then lets it go. Cancel-safe: what was written is consumed
    /// from the buffer.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all_buf(&mut self.wbuf).await?;
            // A no-op on TCP; a WebSocket sends its message here.
            self.stream.flush().await?;
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }
}

/// Serves one client connection until it ends.
pub fn run<S: ByteStream>(
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    // The span is attached outside the connection's future, so the arguments are kept once.
    let span = tracing::info_span!("run", proto = "mqtt", %peer, client_id = Empty);
    serve_connection(broker, Box::new(stream), shutdown).instrument(span)
}

/// The connection's life: handshake, then the session until it ends.
async fn serve_connection(
    broker: Arc<Broker>,
    stream: Box<dyn ByteStream>,
    shutdown: CancellationToken,
) {
    let metrics = broker.router.metrics().clone();
    metrics.connection_opened(Protocol::Mqtt);
    Stats::add(&broker.stats.sockets, 1);
    // Boxed: the handshake's state would otherwise stay in every idle connection's task.
    if let Some(conn) = Box::pin(handshake(&broker, stream, &shutdown)).await {
        conn.serve(shutdown).await;
    }
    metrics.connection_closed(Protocol::Mqtt);
}

/// CONNECT within the connect timeout. A refused client gets its CONNACK, then the socket is
/// closed.
async fn handshake(
    broker: &Arc<Broker>,
    stream: Box<dyn ByteStream>,
    shutdown: &CancellationToken,
) -> Option<Box<Connection>> {
    let codec = Codec::new(usize::try_from(broker.config.max_packet_size).unwrap_or(usize::MAX));
    let io = Io::new(stream, codec);
    let limit = Duration::from_millis(broker.config.connect_timeout_ms);
    let accepted = tokio::select! {
        () = shutdown.cancelled() => None,
        res = tokio::time::timeout(limit, connect(broker, io, shutdown)) => res.ok(),
    };
    match accepted {
        Some(Ok(conn)) => Some(conn),
        Some(Err((err, mut io))) => {
            tracing::debug!(%err, "connection refused");
            let _ = io.flush().await;
            let _ = io.stream.shutdown().await;
            None
        }
        None => {
            tracing::debug!("no CONNECT in time");
            None
        }
    }
}

/// A connection's outbox, created with the first subscription or queue: a client that
/// never subscribes holds no channel.
struct LazyOutbox {
    capacity: usize,
    channel: Option<(Sink, Outbox)>,
}

impl LazyOutbox {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            channel: None,
        }
    }

    /// The sink feeding the outbox, creating both on first use.
    fn sink(&mut self) -> Sink {
        let capacity = self.capacity;
        let (sink, _) = self
            .channel
            .get_or_insert_with(|| outbox(capacity, Overflow::Drop));
        sink.clone()
    }

    /// The next delivery; never resolves while there is no outbox.
    async fn recv(&mut self) -> Option<Delivery> {
        match &mut self.channel {
            Some((_, outbox)) => outbox.recv().await,
            None => std::future::pending().await,
        }
    }

    fn try_recv(&mut self) -> Option<Delivery> {
        self.channel.as_mut()?.1.try_recv()
    }
}

/// 5.0 Topic Aliases of one connection, both ways.
#[derive(Debug, Default)]
struct Aliases {
    /// Topic → alias, towards the client.
    outbound: HashMap<String, u16>,
    /// Alias → topic, from the client.
    inbound: HashMap<u16, String>,
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `will` = reason 0x04 (or any non-normal 5.0 reason).
    Disconnect { will: bool },
    /// Anything else.
    Error(SessionError),
}

/// One connected client.
struct Connection {
    broker: Arc<Broker>,
    io: Io,
    v: ProtocolVersion,
    session: SessionState,
    claim: Claim,
    will: Option<Box<PendingWill>>,
    outbox: LazyOutbox,
    member: Option<Member>,
    inflight: HashMap<u16, Inflight>,
    waiting: VecDeque<Waiting>,
    window: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    /// Created with the first alias: most clients never use one.
    aliases: Option<Box<Aliases>>,
    keep_alive: Option<Duration>,
    recent: VecDeque<MessageId>,
    connected_at_ns: u64,
    offline_seen: usize,
    connect_expiry: u32,
    /// Queued messages the session had sent before are being sent again: their packet ids
    /// (`out_ids`) stay reserved until the queue delivers a message past them.
    replay: bool,
}

impl Connection {
    /// Runs the connection until it ends, then cleans up.
    async fn serve(mut self: Box<Self>, token: CancellationToken) {
        let end = self.run_loop(&token).await;
        Box::pin(self.finish(end)).await;
    }

    /// Serves the connection until it ends. `token` is cancelled by the listener shutting
    /// down and by a takeover of the client id.
    async fn run_loop(&mut self, token: &CancellationToken) -> End {
        let keep_alive = self.keep_alive;
        let sleep = tokio::time::sleep(keep_alive.unwrap_or(NO_TIMEOUT));
        tokio::pin!(sleep);
        // Packets that arrived together with CONNECT are already in the read buffer.
        let mut step = self.on_readable().await;
        loop {
            // A client that does not read must not stop a takeover or shutdown.
            let flushed = tokio::select! {
                res = self.flush() => res,
                () = token.cancelled() => return self.cancelled().await,
            };
            match (step, flushed) {
                (Err(end), _) => return end,
                (Ok(()), Err(err)) => return End::Error(err.into()),
                (Ok(()), Ok(())) => {}
            }
            step = tokio::select! {
                biased;
                () = token.cancelled() => Err(self.cancelled().await),
                () = &mut sleep, if keep_alive.is_some() => {
                    Err(End::Error(SessionError::KeepAliveTimeout))
                }
                read = self.io.read() => match read {
                    Ok(0) => Err(End::Error(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())),
                    Ok(n) => {
                        Stats::add(&self.broker.stats.bytes_received, n as u64);
                        if let Some(ka) = keep_alive {
                            sleep.as_mut().reset(tokio::time::Instant::now() + ka);
                        }
                        self.on_readable().await
                    }
                    Err(err) => Err(End::Error(err.into())),
                },
                Some(delivery) = self.outbox.recv() => {
                    self.deliver(delivery);
                    for _ in 1..DRAIN_BATCH {
                        let Some(next) = self.outbox.try_recv() else { break };
                        self.deliver(next);
                    }
                    Ok(())
                }
            };
        }
    }

    /// How the connection ends once its token was cancelled. On a takeover, what the client
    /// had sent on this connection before connecting again is handled first: a DISCONNECT
    /// there (typically with a new Session Expiry Interval) ends the old connection normally,
    /// so its session and will are settled as the client asked, as in mosquitto's single
    /// event loop.
    async fn cancelled(&mut self) -> End {
        if !self.claim.slot.taken_over() {
            return End::Error(SessionError::ShuttingDown);
        }
        if self.io.read_now() > 0 {
            if let Err(end @ End::Disconnect { .. }) = Box::pin(self.on_readable()).await {
                return end;
            }
        }
        End::Error(SessionError::TakenOver)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let pending = self.io.wbuf.len() as u64;
        self.io.flush().await?;
        Stats::add(&self.broker.stats.bytes_sent, pending);
        Ok(())
    }

    /// Decodes and handles every complete packet in the read buffer.
    async fn on_readable(&mut self) -> Result<(), End> {
        loop {
            let packet = match self.io.codec.decode(&mut self.io.rbuf) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(err) => return Err(End::Error(err.into())),
            };
            Stats::add(&self.broker.stats.msgs_received, 1);
            // Boxed: handling a packet awaits the router's durable path, whose state would
            // otherwise be reserved inline in the task of every (mostly idle) connection.
            Box::pin(self.handle(packet)).await?;
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), End> {
        let violation = |why| Err(End::Error(SessionError::Violation(why)));
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await.map_err(End::Error),
            Packet::PubAck(ack) => self.on_puback(ack.packet_id).map_err(End::Error),
            Packet::PubRec(ack) => self.on_pubrec(&ack).map_err(End::Error),
            Packet::PubRel(ack) => {
                self.on_pubrel(ack.packet_id);
                Ok(())
            }
            Packet::PubComp(ack) => self.on_pubcomp(ack.packet_id).map_err(End::Error),
            Packet::Subscribe(subscribe) => {
                self.on_subscribe(subscribe);
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.on_unsubscribe(unsubscribe);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => Err(self.on_disconnect(&disconnect)),
            Packet::Connect(_) => violation("second CONNECT"),
            Packet::Auth(_) => violation("AUTH without an authentication method"),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                violation("server packet from a client")
            }
        }
    }

    fn on_disconnect(&mut self, disconnect: &Disconnect) -> End {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.connect_expiry == 0 && expiry != 0 {
                return End::Error(SessionError::Protocol("session expiry raised from 0"));
            }
            self.session.expiry = expiry;
        }
        End::Disconnect {
            will: self.v.is_v5() && disconnect.reason != reason::SUCCESS,
        }
    }

    fn send(&mut self, packet: &Packet) {
        Stats::add(&self.broker.stats.msgs_sent, 1);
        self.io.queue(packet, self.v);
    }

    async fn finish(mut self: Box<Self>, end: End) {
        let (will_due, error) = match end {
            End::Disconnect { will } => (will, None),
            End::Error(err) => (true, Some(err)),
        };
        let mut linger = false;
        if let Some(err) = &error {
            tracing::debug!(client = %self.session.client_id, %err, "connection ends");
            if let Some(packet) = err.to_wire(self.v) {
                self.send(&packet);
                linger = !matches!(err, SessionError::TakenOver | SessionError::ShuttingDown);
            }
        }
        // A client that stopped reading gets no more than a moment to take the last bytes.
        let _ = tokio::time::timeout(FINAL_FLUSH, self.flush()).await;
        let _ = tokio::time::timeout(FINAL_FLUSH, self.io.stream.shutdown()).await;
        self.member = None;
        let taken_over = matches!(error, Some(SessionError::TakenOver));
        let taker_clean = self.claim.slot.taker_clean_start();
        let ends = self.session.expiry == 0 || (taken_over && taker_clean);
        let will = self.will.take().map(|w| *w).filter(|_| will_due);
        // On takeover a will is published only if the old session ends (mosquitto).
        let will = match (taken_over, ends) {
            (true, false) => None,
            (true, true) => will.map(|w| PendingWill { delay: 0, ..w }),
            (false, _) => will,
        };
        let kept = if ends {
            self.broker.end_session(&mut self.session);
            None
        } else {
            // Every subscription of a kept session (shares included) feeds its durable queue
            // and stays registered while the client is away; its flows in flight are stored
            // with it, for a restart.
            self.session.record_flight();
            self.broker.save_session(&self.session);
            Some(std::mem::replace(
                &mut self.session,
                SessionState::new("", 0),
            ))
        };
        self.broker.release(&self.claim, kept, will);
        if linger {
            self.linger().await;
        }
    }

    /// Reads and drops what the client still sends after an error DISCONNECT, until it
    /// closes or [`LINGER`] passes. Closing a socket with unread input resets the
    /// connection, and a client still sending (PUBRELs, say) would then lose the DISCONNECT
    /// and its reason code before reading them.
    async fn linger(&mut self) {
        let mut sink = [0u8; PROBE];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(1..) = self.io.stream.read(&mut sink).await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// Size of the future an async fn of four arguments returns, without calling it.
    fn future_size<F, A, B, C, D, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> Fut,
    {
        size_of::<Fut>()
    }

    /// A 3.1.1 CONNECT, clean session, client id "a".
    const CONNECT: &[u8] = b"\x10\x0d\x00\x04MQTT\x04\x02\x02\x58\x00\x01a";

    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[test]
    fn an_idle_connection_keeps_its_task_and_state_small() {
        // Each idle connection holds its task's future and its boxed Connection for its
        // whole life (plus the runtime's own task header and socket registration).
        let task = future_size(run::<TcpStream>);
        assert!(task <= 640, "connection task future is {task} bytes");
        let conn = size_of::<Connection>();
        assert!(conn <= 672, "Connection is {conn} bytes");
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffers() {
        let test = async {
            let (mut client, server) = socket_pair().await;
            let mut io = Io::new(Box::new(server), Codec::new(1024));
            client.write_all(CONNECT).await.unwrap();
            let packet = io.read_packet().await.unwrap();
            assert!(matches!(packet, Some(Packet::Connect(_))));
            // Nothing more to read: the read gives its buffer back before it waits.
            assert!(io.read().now_or_never().is_none());
            assert_eq!(io.rbuf.capacity(), 0);
            io.queue(&Packet::PingResp, ProtocolVersion::V311);
            io.flush().await.unwrap();
            assert_eq!(io.wbuf.capacity(), 0);
            let mut pingresp = [0u8; 2];
            client.read_exact(&mut pingresp).await.unwrap();
            assert_eq!(pingresp, [0xd0, 0x00]);
            // A busy moment allocates again, and the buffers go once it is over.
            client.write_all(&[0xc0, 0x00]).await.unwrap();
            assert_eq!(io.read_packet().await.unwrap(), Some(Packet::PingReq));
            assert!(io.read().now_or_never().is_none());
            assert_eq!(io.rbuf.capacity(), 0);
        };
        tokio::time::timeout(Duration::from_secs(10), test)
            .await
            .unwrap();
    }
}
