//! One ZMTP connection: the handshake, then a `select!` loop over the socket, the outbox, the
//! timers and shutdown.
//!
//! - `handshake`: greetings, NULL/PLAIN, the peer's metadata and role.
//! - `messages`: what the peer's messages mean for its role, and deliveries to it.
//! - `subscriptions`: core subscriptions, and a SUB peer's refcounted prefixes.
//! - `requests`: requests waiting for replies, requests handed to responders.
//! - `heartbeat`: PING/PONG timers.
//!
//! # Invariants
//! - A PULL/REP/ROUTER/REQ/DEALER peer's core subscription exists before the broker's READY
//!   is sent: a peer whose handshake succeeded is already reachable.
//! - Every core subscription is a `subscriptions::CoreSubscription`, whose `Drop`
//!   unsubscribes it: a session that ends for any reason leaves nothing in the router.
//! - Deliveries wait only in the bounded outbox (`sndhwm`); a full outbox drops and counts.
//!   Replies the session makes itself (PONG, error replies) go straight to the write buffer;
//!   while more than `WRITE_HIGH_WATER` bytes wait there, the outbox is not drained, no PONG
//!   is queued and a requester is not read, so a peer that does not read cannot grow it.
//! - Writing and reading proceed concurrently; heartbeat and request timers run even while
//!   the peer is not reading.
//! - Every whole item a read brought is handled before the session waits again, and the
//!   messages among them share one publish time (one clock read per read, not per message).
//! - A REQ peer gets exactly one reply per request; the pending-request map of a requester
//!   or responder never holds more than `sndhwm` entries.
//! - No lock is held across an `.await`; the session never awaits another client.

mod handshake;
mod heartbeat;
mod messages;
mod requests;
mod subscriptions;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink as _, SinkExt, Stream as _};
use polymq_core::envelope::now_ns;
use polymq_core::router::SubscriptionSpec;
use polymq_core::subject::zmtp::prefix_filter;
use polymq_core::{
    outbox, ConnId, Filter, Origin, Outbox, Overflow, Protocol, Router, Sink, Subject,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::{Decoder as _, Framed};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::SessionError;
use crate::frame::{
    put_command, put_command_body, put_message, Command, FrameError, Inbound, Limits, Outbound,
    Revision, ZmtpCodec, PING_CONTEXT_MAX,
};
use crate::mapping::{broker_metadata, Defaults, Role};

use handshake::{handshake, PeerInfo};
use heartbeat::Heartbeat;
use messages::{LastTopic, Tally};
use requests::{Assignments, Requests};
use subscriptions::{CoreSubscription, Prefixes};

pub use requests::{BAD_REQUEST, ERROR_SUBJECT, NO_RESPONDERS, REQUEST_TIMEOUT};

/// Deliveries taken from the outbox in one go.
const MAX_BATCH: usize = 256;
/// Buffered output at which the session stops reading the peer and draining the outbox until
/// the peer has taken some of it.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// How long a closing session keeps writing what it already buffered (also the last ERROR).
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);

/// What every session of one listener shares.
#[derive(Debug)]
pub struct Listener {
    /// The routing core.
    pub router: Router,
    /// The listener's settings.
    pub config: Arc<Config>,
    /// Validated defaults.
    pub defaults: Defaults,
}

/// Runs one connection to completion.
pub async fn run<S>(
    stream: S,
    peer: SocketAddr,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let metrics = listener.router.metrics().clone();
    metrics.connection_opened(Protocol::Zmtp);
    let limits = Limits {
        max_msg_size: listener.config.max_msg_size,
        ..Limits::default()
    };
    let mut framed = Framed::new(stream, ZmtpCodec::new(limits));
    let mechanism = listener.config.mechanism.into();
    let handshake_ivl = Duration::from_millis(listener.config.handshake_ivl_ms);
    let handshake = tokio::select! {
        () = shutdown.cancelled() => Err(SessionError::Closed),
        done = timeout(handshake_ivl, handshake(&mut framed, &listener)) => {
            done.unwrap_or(Err(SessionError::HandshakeTimeout))
        }
    };
    let result = match handshake {
        Ok(peer_info) => {
            Session::new(framed, listener, peer_info)
                .run(&shutdown)
                .await
        }
        Err(err) => {
            if let Some(body) = err.to_wire(mechanism) {
                put_command_body(framed.write_buffer_mut(), &body);
                let sent = SinkExt::<Outbound>::flush(&mut framed);
                let _ = timeout(SHUTDOWN_FLUSH, sent).await;
            }
            Err(err)
        }
    };
    match result {
        Ok(()) | Err(SessionError::Closed) => tracing::debug!(%peer, "zmtp connection closed"),
        Err(err) => tracing::debug!(%peer, %err, "zmtp connection ended"),
    }
    metrics.connection_closed(Protocol::Zmtp);
}

/// What happened on the socket.
enum SocketIo {
    /// An inbound item, or `None` at end of stream.
    Read(Option<Result<Inbound, FrameError>>),
    /// Buffered output was written, in full or in part.
    Wrote(Result<(), FrameError>),
    /// Part of an inbound item arrived (a large message still in transit).
    Arrived,
}

/// Writes buffered output and (when `read` is set) reads the next item, concurrently: one
/// future, so the framed stream is borrowed once. Resolves on the first inbound item, on any
/// read or write progress, or on an error.
fn socket_io<S>(
    framed: &mut Framed<S, ZmtpCodec>,
    read: bool,
) -> impl Future<Output = SocketIo> + '_
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(move |cx| {
        let pending = framed.write_buffer().len();
        if pending > 0 {
            match Pin::new(&mut *framed).poll_flush(cx) {
                Poll::Ready(result) => return Poll::Ready(SocketIo::Wrote(result)),
                Poll::Pending if framed.write_buffer().len() < pending => {
                    return Poll::Ready(SocketIo::Wrote(Ok(())));
                }
                Poll::Pending => {}
            }
        }
        if read {
            let before = read_progress(framed);
            if let Poll::Ready(item) = Pin::new(&mut *framed).poll_next(cx) {
                return Poll::Ready(SocketIo::Read(item));
            }
            if read_progress(framed) != before {
                return Poll::Ready(SocketIo::Arrived);
            }
        }
        Poll::Pending
    })
}

/// The state of a peer's role, and the core subscription the role needs (a group member's,
/// or a requester's inbox).
fn role_state(
    router: &Router,
    peer: PeerInfo,
    origin: Origin,
    sink: &Sink,
) -> (State, Option<CoreSubscription>) {
    let subject = peer.target.as_ref().and_then(|t| t.subject.clone());
    match (peer.role, peer.target) {
        (Role::Publisher, _) => (State::Publisher, None),
        (Role::Subscriber, _) => {
            let prefixes = Prefixes::default();
            (State::Subscriber { prefixes }, None)
        }
        (Role::Producer, _) => (State::Producer { subject }, None),
        (role @ (Role::Consumer | Role::Responder), target) => {
            let own = target.map(|target| {
                let spec = SubscriptionSpec {
                    group: Some(target.group),
                    // REP/ROUTER workers take only requests (DESIGN.md).
                    requests_only: role == Role::Responder,
                    ..SubscriptionSpec::new(target.filter, origin)
                };
                CoreSubscription::new(router, spec, sink)
            });
            let state = match role {
                Role::Consumer => State::Consumer,
                _ => State::Responder {
                    assignments: Assignments::default(),
                },
            };
            (state, own)
        }
        (role @ (Role::Requester | Role::Dealer), _) => {
            let requests = Requests::new(origin.conn);
            let own = Filter::new(&requests.inbox_filter()).ok().map(|inbox| {
                CoreSubscription::new(router, SubscriptionSpec::new(inbox, origin), sink)
            });
            let dealer = role == Role::Dealer;
            let state = State::Requester {
                subject,
                requests,
                dealer,
            };
            (state, own)
        }
    }
}

/// How far the current inbound item has got: octets buffered and parts decoded. Any change
/// means the peer sent something.
fn read_progress<S>(framed: &Framed<S, ZmtpCodec>) -> (usize, usize) {
    (framed.read_buffer().len(), framed.codec().parts_received())
}

/// Decodes the next item already in the read buffer, without reading the socket (the framed
/// stream reads only once its buffer holds no whole item).
fn decode_buffered<S>(framed: &mut Framed<S, ZmtpCodec>) -> Result<Option<Inbound>, FrameError> {
    let mut buffered = std::mem::take(framed.read_buffer_mut());
    let item = framed.codec_mut().decode(&mut buffered);
    *framed.read_buffer_mut() = buffered;
    item
}

/// Role-specific state.
#[derive(Debug)]
enum State {
    Publisher,
    Subscriber {
        prefixes: Prefixes<CoreSubscription>,
    },
    Producer {
        subject: Option<Subject>,
    },
    Consumer,
    Requester {
        subject: Option<Subject>,
        requests: Requests,
        dealer: bool,
    },
    Responder {
        assignments: Assignments,
    },
}

struct Session<S> {
    framed: Framed<S, ZmtpCodec>,
    listener: Arc<Listener>,
    origin: Origin,
    revision: Revision,
    announce: &'static str,
    state: State,
    /// The core subscription of a PULL, REP/ROUTER, REQ or DEALER peer, held until the
    /// session ends.
    _own: Option<CoreSubscription>,
    sink: Sink,
    outbox: Outbox,
    heartbeat: Heartbeat,
    reported_drops: u64,
    /// Messages of the current read, not yet in the metrics.
    received: Tally,
    /// Deliveries of the current drain, not yet in the metrics.
    written: Tally,
    /// The subject of the last topic frame published.
    last_topic: LastTopic,
    /// Wall clock of the last read (ns since the epoch): the publish time of what it brought.
    read_at_ns: u64,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn new(framed: Framed<S, ZmtpCodec>, listener: Arc<Listener>, peer: PeerInfo) -> Self {
        let origin = Origin {
            protocol: Protocol::Zmtp,
            conn: ConnId::next(),
        };
        let (sink, outbox) = outbox(listener.config.sndhwm, Overflow::Drop);
        let heartbeat = Heartbeat::new(&listener.config, peer.revision);
        let (revision, announce) = (peer.revision, peer.announce);
        let (state, own) = role_state(&listener.router, peer, origin, &sink);
        Self {
            framed,
            listener,
            origin,
            revision,
            announce,
            state,
            _own: own,
            sink,
            outbox,
            heartbeat,
            reported_drops: 0,
            received: Tally::default(),
            written: Tally::default(),
            last_topic: LastTopic::default(),
            read_at_ns: now_ns(),
        }
    }

    /// Sends READY (the peer's core subscriptions already exist, so a peer that sees its
    /// handshake succeed is already reachable), then serves the connection.
    async fn run(mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let ready = Command::Ready(broker_metadata(self.announce));
        put_command(self.framed.write_buffer_mut(), &ready)?;
        if matches!(self.state, State::Publisher) {
            self.subscribe_upstream()?;
        }
        let result = self.serve(shutdown).await;
        self.report_drops();
        result
    }

    async fn serve(&mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        // Both live across iterations: a fresh shutdown waiter or timer per message would
        // register (and deregister) itself every time round.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            let deadline = self.next_deadline();
            if let Some(at) = deadline.filter(|&at| armed != Some(at)) {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
            // While a peer does not read, its outbox is not drained (the HWM takes the
            // overflow) and a requester is not read either (its error replies would pile up);
            // other peers are still read, so their heartbeats and publishes keep flowing.
            let backed_up = self.framed.write_buffer().len() >= WRITE_HIGH_WATER;
            let read = self.reading();
            tokio::select! {
                () = &mut cancelled => return self.flush_on_shutdown().await,
                io = socket_io(&mut self.framed, read) => match io {
                    SocketIo::Read(Some(item)) => self.on_read(item?)?,
                    SocketIo::Read(None) => return Err(SessionError::Closed),
                    SocketIo::Wrote(result) => result?,
                    // libzmq counts every octet read as proof of life, not only whole items.
                    SocketIo::Arrived => self.heartbeat.traffic(),
                },
                Some(delivery) = self.outbox.recv(), if !backed_up => self.on_deliveries(delivery),
                () = &mut timer, if deadline.is_some() => {
                    armed = None;
                    self.on_timer(Instant::now())?;
                }
            }
        }
    }

    /// False while a requester's replies back up (see [`Session::serve`]).
    fn reading(&self) -> bool {
        let backed_up = self.framed.write_buffer().len() >= WRITE_HIGH_WATER;
        !(backed_up && matches!(self.state, State::Requester { .. }))
    }

    /// Handles `first` and every further item the last read already buffered, with one clock
    /// read for all of them (their publish time).
    fn on_read(&mut self, first: Inbound) -> Result<(), SessionError> {
        self.read_at_ns = now_ns();
        let handled = self.on_inbound(first).and_then(|()| self.on_buffered());
        let (count, bytes) = self.received.take();
        let metrics = self.listener.router.metrics();
        metrics.messages_received(Protocol::Zmtp, count, bytes);
        handled
    }

    fn on_buffered(&mut self) -> Result<(), SessionError> {
        while self.reading() {
            let Some(item) = decode_buffered(&mut self.framed)? else {
                break;
            };
            self.on_inbound(item)?;
        }
        Ok(())
    }

    /// Gives the peer what is already buffered, briefly, when the broker shuts down.
    async fn flush_on_shutdown(&mut self) -> Result<(), SessionError> {
        let flushed = timeout(SHUTDOWN_FLUSH, SinkExt::<Outbound>::flush(&mut self.framed)).await;
        Ok(flushed.unwrap_or(Ok(()))?)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let requests = match &self.state {
            State::Requester { requests, .. } => requests.next_deadline(),
            _ => None,
        };
        [self.heartbeat.next_deadline(), requests]
            .into_iter()
            .flatten()
            .min()
    }

    /// Subscribes a PUB/XPUB peer to everything: SUBSCRIBE on 3.1, a `0x01` message on 3.0.
    fn subscribe_upstream(&mut self) -> Result<(), SessionError> {
        let buf = self.framed.write_buffer_mut();
        match self.revision {
            Revision::V3_1 => put_command(buf, &Command::Subscribe(Bytes::new()))?,
            Revision::V3_0 => put_message(buf, std::iter::once(&[1u8][..])),
        }
        Ok(())
    }

    fn on_inbound(&mut self, item: Inbound) -> Result<(), SessionError> {
        self.heartbeat.traffic();
        match item {
            Inbound::Command(command) => self.on_command(command),
            Inbound::Message(message) => {
                self.on_message(message);
                Ok(())
            }
            Inbound::Greeting(_) => Err(SessionError::UnexpectedCommand("greeting".into())),
        }
    }

    fn on_command(&mut self, command: Command) -> Result<(), SessionError> {
        match command {
            Command::Ping { ttl, context } => {
                self.heartbeat.peer_ping(ttl, Instant::now());
                // Behind a backlog the PONG could not arrive in time anyway; skipping it keeps
                // the buffer bounded against a peer that PINGs without reading.
                if self.framed.write_buffer().len() < WRITE_HIGH_WATER {
                    let context = context.slice(..context.len().min(PING_CONTEXT_MAX));
                    put_command(self.framed.write_buffer_mut(), &Command::Pong { context })?;
                }
            }
            Command::Subscribe(prefix) => self.subscribe(prefix),
            Command::Cancel(prefix) => self.cancel(&prefix),
            // libzmq ignores every other command once the handshake is over.
            _ => {}
        }
        Ok(())
    }

    /// A SUB/XSUB peer's SUBSCRIBE (3.1) or `0x01` message; ignored from other peers.
    fn subscribe(&mut self, prefix: Bytes) {
        if let State::Subscriber { prefixes } = &mut self.state {
            let (router, sink, origin) = (&self.listener.router, &self.sink, self.origin);
            prefixes.subscribe(prefix, |p| {
                Self::prefix_subscription(router, sink, origin, p)
            });
        }
    }

    /// A SUB/XSUB peer's CANCEL (3.1) or `0x00` message; ignored from other peers.
    fn cancel(&mut self, prefix: &[u8]) {
        if let State::Subscriber { prefixes } = &mut self.state {
            let (router, sink, origin) = (&self.listener.router, &self.sink, self.origin);
            prefixes.cancel(prefix, |p| {
                Self::prefix_subscription(router, sink, origin, p)
            });
        }
    }

    fn prefix_subscription(
        router: &Router,
        sink: &Sink,
        origin: Origin,
        prefix: &Bytes,
    ) -> CoreSubscription {
        let spec = SubscriptionSpec::new(prefix_filter(prefix), origin);
        CoreSubscription::new(router, spec, sink)
    }

    fn on_timer(&mut self, now: Instant) -> Result<(), SessionError> {
        if let Some(ping) = self.heartbeat.on_timer(now)? {
            put_command(self.framed.write_buffer_mut(), &ping)?;
        }
        self.expire_requests(now);
        Ok(())
    }

    /// Moves the outbox's drop count into the metrics.
    fn report_drops(&mut self) {
        let dropped = self.outbox.dropped();
        if dropped > self.reported_drops {
            let metrics = self.listener.router.metrics();
            metrics.dropped(Protocol::Zmtp, dropped - self.reported_drops);
            self.reported_drops = dropped;
        }
    }
}
