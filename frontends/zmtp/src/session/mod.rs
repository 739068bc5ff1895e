//! One ZMTP connection: the handshake, then a `select!` loop over the socket, the outbox, the
//! timers and shutdown.
//!
//! ```text
//! accept ─► send greeting ─► read greeting ─► NULL:  READY           ─► subscribe ─► READY ─► loop
//!                                            PLAIN: HELLO ► WELCOME
//!                                                   INITIATE
//! ```
//!
//! The handshake reads the peer's metadata before the broker answers, so the broker can
//! announce the Socket-Type that suits the peer (libzmq sends its READY/INITIATE without
//! waiting, so this never stalls a libzmq peer).
//!
//! # Invariants
//! - A PULL/REP/ROUTER/REQ/DEALER peer's core subscription exists before the broker's READY
//!   is sent: a peer whose handshake succeeded is already reachable.
//! - Every core subscription is held by [`Subscriptions`], whose `Drop` unsubscribes it: a
//!   session that ends for any reason leaves nothing in the router.
//! - Deliveries wait only in the bounded outbox (`sndhwm`); a full outbox drops and counts.
//!   Replies the session makes itself (PONG, error replies) go straight to the write buffer;
//!   while more than `WRITE_HIGH_WATER` bytes wait there, the outbox is not drained, no PONG
//!   is queued and a requester is not read, so a peer that does not read cannot grow it.
//! - Writing and reading proceed concurrently; heartbeat and request timers run even while
//!   the peer is not reading.
//! - A REQ peer gets exactly one reply per request; the pending-request map of a requester
//!   or responder never holds more than `sndhwm` entries.
//! - No lock is held across an `.await`; the session never awaits another client.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink as _, SinkExt, Stream as _, StreamExt};
use polymq_core::router::{SubscriptionId, SubscriptionSpec};
use polymq_core::subject::zmtp::{frame_to_subject, prefix_filter, subject_frame};
use polymq_core::{
    outbox, ConnId, Delivery, Envelope, Filter, Origin, Outbox, Overflow, Protocol, Router, Sink,
    Subject,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::SessionError;
use crate::frame::{
    put_command, put_command_body, put_message, Command, FrameError, Greeting, Inbound, Limits,
    Mechanism, Message, Metadata, Outbound, Revision, ZmtpCodec, PING_CONTEXT_MAX,
};
use crate::mapping::{self, broker_metadata, Defaults, PeerTarget, Role};

/// Error reply frames (after the requester's envelope): `$ERR`, status, description.
pub const ERROR_SUBJECT: &[u8] = b"$ERR";
/// Status of a request whose subject nobody subscribes to.
pub const NO_RESPONDERS: (&[u8], &[u8]) = (b"503", b"No Responders");
/// Status of a request that got no reply within `request_timeout_ms`.
pub const REQUEST_TIMEOUT: (&[u8], &[u8]) = (b"408", b"Request Timeout");
/// Status of a request whose subject frame is not a valid subject.
pub const BAD_REQUEST: (&[u8], &[u8]) = (b"400", b"Bad Request");

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
}

/// Writes buffered output and (when `read` is set) reads the next item, concurrently: one
/// future, so the framed stream is borrowed once. Resolves on the first inbound item, on any
/// write progress, or on an error.
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
            if let Poll::Ready(item) = Pin::new(&mut *framed).poll_next(cx) {
                return Poll::Ready(SocketIo::Read(item));
            }
        }
        Poll::Pending
    })
}

/// What the handshake learned about the peer.
#[derive(Debug)]
struct PeerInfo {
    revision: Revision,
    role: Role,
    /// The Socket-Type of the broker's READY, sent once the peer's subscriptions exist.
    announce: &'static str,
    target: Option<PeerTarget>,
}

async fn next_item<S>(framed: &mut Framed<S, ZmtpCodec>) -> Result<Inbound, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framed.next().await {
        Some(item) => Ok(item?),
        None => Err(SessionError::Closed),
    }
}

/// Reads the next handshake command, which must be `name`.
async fn expect_command<S>(
    framed: &mut Framed<S, ZmtpCodec>,
    name: &str,
) -> Result<Command, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match next_item(framed).await? {
        Inbound::Command(Command::Error { reason }) => Err(SessionError::PeerError(
            String::from_utf8_lossy(&reason).into_owned(),
        )),
        Inbound::Command(command) if command.name() == name.as_bytes() => Ok(command),
        Inbound::Command(command) => Err(SessionError::UnexpectedCommand(
            String::from_utf8_lossy(command.name()).into_owned(),
        )),
        Inbound::Greeting(_) | Inbound::Message(_) => {
            Err(SessionError::UnexpectedCommand("message".into()))
        }
    }
}

/// Greeting, security mechanism and metadata exchange.
async fn handshake<S>(
    framed: &mut Framed<S, ZmtpCodec>,
    listener: &Listener,
) -> Result<PeerInfo, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mechanism = listener.config.mechanism.into();
    framed
        .send(Outbound::Greeting(Greeting::broker(mechanism)))
        .await?;
    let Inbound::Greeting(greeting) = next_item(framed).await? else {
        return Err(SessionError::UnexpectedCommand("message".into()));
    };
    if greeting.mechanism != mechanism {
        return Err(SessionError::MechanismMismatch);
    }
    let metadata = match mechanism {
        Mechanism::Plain => plain_handshake(framed, &listener.config).await?,
        _ => match expect_command(framed, "READY").await? {
            Command::Ready(metadata) => metadata,
            _ => return Err(SessionError::UnexpectedCommand("READY".into())),
        },
    };
    let socket_type = metadata.get("Socket-Type").cloned().unwrap_or_default();
    let Some((role, announce)) = Role::for_socket_type(&socket_type) else {
        let name = String::from_utf8_lossy(&socket_type).into_owned();
        return Err(SessionError::UnsupportedSocketType(name));
    };
    tracing::debug!(
        socket_type = %String::from_utf8_lossy(&socket_type),
        identity = ?metadata.get("Identity"),
        revision = ?greeting.revision(),
        "zmtp handshake"
    );
    let target = match role {
        Role::Publisher | Role::Subscriber => None,
        _ => Some(
            PeerTarget::resolve(&metadata, role, &listener.defaults)
                .map_err(|err| SessionError::InvalidProperty(err.0))?,
        ),
    };
    Ok(PeerInfo {
        revision: greeting.revision(),
        role,
        announce,
        target,
    })
}

/// PLAIN (RFC 24): HELLO → WELCOME or ERROR `400`, then INITIATE with the metadata.
async fn plain_handshake<S>(
    framed: &mut Framed<S, ZmtpCodec>,
    config: &Config,
) -> Result<Metadata, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Command::Hello { username, password } = expect_command(framed, "HELLO").await? else {
        return Err(SessionError::UnexpectedCommand("HELLO".into()));
    };
    let known = config.users.iter().fold(false, |found, user| {
        let matches = constant_time_eq(user.username.as_bytes(), &username)
            & constant_time_eq(user.password.as_bytes(), &password);
        found | matches
    });
    if !known {
        return Err(SessionError::AuthFailed);
    }
    framed.send(Outbound::Command(Command::Welcome)).await?;
    match expect_command(framed, "INITIATE").await? {
        Command::Initiate(metadata) => Ok(metadata),
        _ => Err(SessionError::UnexpectedCommand("INITIATE".into())),
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && diff == 0
}

/// The session's core subscriptions, keyed (ZMQ prefixes are refcounted: two SUBSCRIBE `A`
/// need two CANCEL `A`). Dropping it unsubscribes everything.
#[derive(Debug)]
struct Subscriptions {
    router: Router,
    by_key: HashMap<Bytes, (SubscriptionId, u32)>,
}

impl Subscriptions {
    fn new(router: Router) -> Self {
        Self {
            router,
            by_key: HashMap::new(),
        }
    }

    /// Adds one reference to `key`, subscribing `spec` on the first.
    fn add(&mut self, key: Bytes, spec: impl FnOnce() -> SubscriptionSpec, sink: &Sink) {
        if let Some((_, count)) = self.by_key.get_mut(&key) {
            *count += 1;
            return;
        }
        let id = self.router.subscribe(spec(), sink.clone());
        self.by_key.insert(key, (id, 1));
    }

    /// Drops one reference to `key`, unsubscribing on the last; unknown keys are ignored.
    fn cancel(&mut self, key: &[u8]) {
        let Some((id, count)) = self.by_key.get_mut(key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            let id = *id;
            self.by_key.remove(key);
            self.router.unsubscribe(id);
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for (id, _) in self.by_key.values() {
            self.router.unsubscribe(*id);
        }
    }
}

/// A request of a REQ/DEALER peer waiting for its reply.
#[derive(Debug)]
struct PendingRequest {
    /// The frames up to and including the empty delimiter, echoed in the reply.
    envelope: Vec<Bytes>,
    /// The request subject, frame 0 of the reply.
    subject: Bytes,
    deadline: Instant,
}

/// Requester state: an inbox subject and the requests in flight, in sequence order (which
/// is also deadline order, since every request gets the same timeout).
#[derive(Debug)]
struct Requests {
    inbox: String,
    next_seq: u64,
    pending: BTreeMap<u64, PendingRequest>,
}

impl Requests {
    fn new(conn: ConnId) -> Self {
        let inbox = format!("_INBOX.zmtp{}x{:016x}", conn.0, fastrand::u64(..));
        Self {
            inbox,
            next_seq: 0,
            pending: BTreeMap::new(),
        }
    }

    fn reply_subject(&self, seq: u64) -> Option<Subject> {
        Subject::new(&format!("{}.{seq}", self.inbox)).ok()
    }

    /// The sequence number of a reply delivered on the inbox.
    fn seq_of(&self, subject: &Subject) -> Option<u64> {
        let rest = subject
            .as_str()
            .strip_prefix(self.inbox.as_str())?
            .strip_prefix('.')?;
        rest.parse().ok()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.first_key_value().map(|(_, p)| p.deadline)
    }
}

/// Responder state: requests handed to the worker, by the request id the worker echoes.
#[derive(Debug, Default)]
struct Assignments {
    next_id: u64,
    reply_to: BTreeMap<u64, Subject>,
}

/// Heartbeat timers (RFC 37): our PINGs, and the deadlines any inbound traffic clears.
#[derive(Debug)]
struct Heartbeat {
    interval: Option<Duration>,
    timeout: Duration,
    ttl_tenths: u16,
    next_ping: Option<Instant>,
    /// Close if nothing arrives by then (after our PING).
    ping_deadline: Option<Instant>,
    /// Close if nothing arrives by then (after the peer's PING with a TTL).
    ttl_deadline: Option<Instant>,
}

impl Heartbeat {
    fn new(config: &Config, revision: Revision) -> Self {
        let interval = (config.heartbeat_ivl_ms > 0 && revision == Revision::V3_1)
            .then(|| Duration::from_millis(config.heartbeat_ivl_ms));
        let timeout_ms = match config.heartbeat_timeout_ms {
            0 => config.heartbeat_ivl_ms,
            ms => ms,
        };
        Self {
            interval,
            timeout: Duration::from_millis(timeout_ms),
            ttl_tenths: u16::try_from(config.heartbeat_ttl_ms / 100).unwrap_or(u16::MAX),
            next_ping: interval.map(|ivl| Instant::now() + ivl),
            ping_deadline: None,
            ttl_deadline: None,
        }
    }

    fn traffic(&mut self) {
        self.ping_deadline = None;
        self.ttl_deadline = None;
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.next_ping, self.ping_deadline, self.ttl_deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

/// How a message of a single part is read.
#[derive(Debug)]
enum Lone {
    /// The part is the subject and the body is empty (PUB/XPUB).
    Subject,
    /// The part is the body for this subject; without one the message is dropped.
    Body(Option<Subject>),
}

/// Role-specific state.
#[derive(Debug)]
enum State {
    Publisher,
    Subscriber,
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
    subscriptions: Subscriptions,
    sink: Sink,
    outbox: Outbox,
    heartbeat: Heartbeat,
    reported_drops: u64,
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
        let mut subscriptions = Subscriptions::new(listener.router.clone());
        let subject = peer.target.as_ref().and_then(|t| t.subject.clone());
        let state = match peer.role {
            Role::Publisher => State::Publisher,
            Role::Subscriber => State::Subscriber,
            Role::Producer => State::Producer { subject },
            Role::Consumer | Role::Responder => {
                if let Some(target) = peer.target {
                    let spec = SubscriptionSpec {
                        group: Some(target.group),
                        // REP/ROUTER workers take only requests (DESIGN.md).
                        requests_only: peer.role == Role::Responder,
                        ..SubscriptionSpec::new(target.filter, origin)
                    };
                    subscriptions.add(Bytes::new(), || spec, &sink);
                }
                match peer.role {
                    Role::Consumer => State::Consumer,
                    _ => State::Responder {
                        assignments: Assignments::default(),
                    },
                }
            }
            Role::Requester | Role::Dealer => {
                let requests = Requests::new(origin.conn);
                let inbox = Filter::new(&format!("{}.>", requests.inbox));
                if let Ok(filter) = inbox {
                    let spec = SubscriptionSpec::new(filter, origin);
                    subscriptions.add(Bytes::new(), || spec, &sink);
                }
                State::Requester {
                    subject,
                    requests,
                    dealer: peer.role == Role::Dealer,
                }
            }
        };
        let heartbeat = Heartbeat::new(&listener.config, peer.revision);
        Self {
            framed,
            listener,
            origin,
            revision: peer.revision,
            announce: peer.announce,
            state,
            subscriptions,
            sink,
            outbox,
            heartbeat,
            reported_drops: 0,
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
        loop {
            let deadline = self.next_deadline();
            // While a peer does not read, its outbox is not drained (the HWM takes the
            // overflow) and a requester is not read either (its error replies would pile up);
            // other peers are still read, so their heartbeats and publishes keep flowing.
            let backed_up = self.framed.write_buffer().len() >= WRITE_HIGH_WATER;
            let read = !(backed_up && matches!(self.state, State::Requester { .. }));
            tokio::select! {
                () = shutdown.cancelled() => return self.flush_on_shutdown().await,
                io = socket_io(&mut self.framed, read) => match io {
                    SocketIo::Read(Some(item)) => self.on_inbound(item?)?,
                    SocketIo::Read(None) => return Err(SessionError::Closed),
                    SocketIo::Wrote(result) => result?,
                },
                Some(delivery) = self.outbox.recv(), if !backed_up => self.on_deliveries(delivery),
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.on_timer(Instant::now())?;
                }
            }
        }
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
                if ttl > 0 {
                    let ttl = Duration::from_millis(u64::from(ttl) * 100);
                    self.heartbeat.ttl_deadline = Some(Instant::now() + ttl);
                }
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

    fn subscribe(&mut self, prefix: Bytes) {
        if matches!(self.state, State::Subscriber) {
            let origin = self.origin;
            let filter = prefix_filter(&prefix);
            self.subscriptions
                .add(prefix, || SubscriptionSpec::new(filter, origin), &self.sink);
        }
    }

    fn cancel(&mut self, prefix: &[u8]) {
        if matches!(self.state, State::Subscriber) {
            self.subscriptions.cancel(prefix);
        }
    }

    fn on_message(&mut self, message: Message) {
        if !matches!(self.state, State::Subscriber) {
            let metrics = self.listener.router.metrics();
            metrics.message_in(Protocol::Zmtp, message.size());
        }
        let Message(parts) = message;
        match &self.state {
            State::Subscriber => self.on_subscription_parts(parts),
            State::Publisher => self.publish_parts(&parts, Lone::Subject),
            State::Producer { subject } => {
                let lone = Lone::Body(subject.clone());
                self.publish_parts(&parts, lone);
            }
            State::Requester {
                dealer: true,
                subject,
                ..
            } if parts.first().is_some_and(|p| !p.is_empty()) => {
                let lone = Lone::Body(subject.clone());
                self.publish_parts(&parts, lone);
            }
            State::Requester { .. } => self.on_request(parts),
            State::Responder { .. } => self.on_reply(parts),
            State::Consumer => self.drop_message(),
        }
    }

    /// XPUB semantics: every part starting with `0x01`/`0x00` subscribes/cancels; anything else
    /// from a SUB/XSUB peer is discarded.
    fn on_subscription_parts(&mut self, parts: Vec<Bytes>) {
        for mut part in parts {
            match part.first() {
                Some(1) => self.subscribe(part.split_off(1)),
                Some(0) => self.cancel(part.get(1..).unwrap_or_default()),
                _ => {}
            }
        }
    }

    fn drop_message(&self) {
        self.listener.router.metrics().dropped(Protocol::Zmtp, 1);
    }

    /// Splits `[subject][body…]` into the subject, its frame and the body.
    fn split_subject<'p>(
        &self,
        parts: &'p [Bytes],
        lone: Lone,
    ) -> Option<(Subject, Bytes, &'p [Bytes])> {
        let syntax = self.listener.defaults.syntax;
        match (parts, lone) {
            ([only], Lone::Body(subject)) => {
                let subject = subject?;
                let frame = subject_frame(&subject);
                Some((subject, frame, std::slice::from_ref(only)))
            }
            ([topic, body @ ..], _) => frame_to_subject(topic, syntax)
                .ok()
                .map(|subject| (subject, topic.clone(), body)),
            ([], _) => None,
        }
    }

    fn publish_parts(&self, parts: &[Bytes], lone: Lone) {
        match self.split_subject(parts, lone) {
            Some((subject, _, body)) => {
                let env = mapping::envelope(subject, body, self.origin);
                self.listener.router.publish(Arc::new(env));
            }
            None => self.drop_message(),
        }
    }

    /// A REQ/DEALER request: `[envelope…][""][subject][body…]`.
    fn on_request(&mut self, mut parts: Vec<Bytes>) {
        let Some(delimiter) = parts.iter().position(Bytes::is_empty) else {
            return self.drop_message();
        };
        let rest = parts.split_off(delimiter + 1);
        let envelope = parts;
        let State::Requester {
            subject: default,
            dealer,
            ..
        } = &self.state
        else {
            return;
        };
        let (lone, strict) = (Lone::Body(default.clone()), !*dealer);
        let Some((subject, subject_frame, body)) = self.split_subject(&rest, lone) else {
            return self.error_reply(&envelope, BAD_REQUEST);
        };
        let hwm = self.listener.config.sndhwm;
        let deadline = Instant::now() + self.request_timeout();
        let State::Requester { requests, .. } = &mut self.state else {
            return;
        };
        if strict {
            // A REQ that sends again has abandoned its previous request (ZMQ_REQ_RELAXED).
            requests.pending.clear();
        }
        if requests.pending.len() >= hwm {
            return self.drop_message();
        }
        requests.next_seq += 1;
        let seq = requests.next_seq;
        let Some(reply_to) = requests.reply_subject(seq) else {
            return self.drop_message();
        };
        let pending = PendingRequest {
            envelope,
            subject: subject_frame,
            deadline,
        };
        requests.pending.insert(seq, pending);
        let mut env = mapping::envelope(subject, body, self.origin);
        env.reply_to = Some(reply_to);
        let routed = self.listener.router.publish(Arc::new(env));
        if routed.matched() == 0 {
            self.fail_request(seq, NO_RESPONDERS);
        }
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.listener.config.request_timeout_ms)
    }

    /// Answers a pending request with an error reply.
    fn fail_request(&mut self, seq: u64, status: (&[u8], &[u8])) {
        if let State::Requester { requests, .. } = &mut self.state {
            if let Some(pending) = requests.pending.remove(&seq) {
                self.error_reply(&pending.envelope, status);
            }
        }
    }

    /// Writes `[envelope…]["$ERR"][status][description]`.
    fn error_reply(&mut self, envelope: &[Bytes], (status, description): (&[u8], &[u8])) {
        let parts = envelope.iter().map(Bytes::as_ref);
        let error = [ERROR_SUBJECT, status, description];
        let parts: Vec<&[u8]> = parts.chain(error).collect();
        put_message(self.framed.write_buffer_mut(), parts.into_iter());
    }

    /// A REP/ROUTER reply: `[request id][""][subject][reply body…]` (a lone part after the
    /// delimiter is taken as the body).
    fn on_reply(&mut self, parts: Vec<Bytes>) {
        let State::Responder { assignments } = &mut self.state else {
            return;
        };
        let (Some(id), Some(delimiter)) = (parts.first(), parts.get(1)) else {
            return self.drop_message();
        };
        let id = <[u8; 8]>::try_from(id.as_ref()).map(u64::from_be_bytes);
        let reply_to = id.ok().and_then(|id| assignments.reply_to.remove(&id));
        let Some(reply_to) = reply_to.filter(|_| delimiter.is_empty()) else {
            return self.drop_message();
        };
        let rest = parts.get(2..).unwrap_or_default();
        let body = match rest {
            [_subject, body @ ..] if !body.is_empty() => body,
            lone_or_none => lone_or_none,
        };
        let env = mapping::envelope(reply_to, body, self.origin);
        self.listener.router.publish(Arc::new(env));
    }

    fn on_deliveries(&mut self, first: Delivery) {
        self.deliver(&first);
        let mut batch = 1;
        while batch < MAX_BATCH && self.framed.write_buffer().len() < WRITE_HIGH_WATER {
            let Some(delivery) = self.outbox.try_recv() else {
                break;
            };
            self.deliver(&delivery);
            batch += 1;
        }
        self.report_drops();
    }

    fn deliver(&mut self, delivery: &Delivery) {
        let msg = &delivery.msg;
        if msg.is_expired(polymq_core::envelope::now_ns()) {
            return self.drop_message();
        }
        let written = match &mut self.state {
            State::Subscriber | State::Consumer => {
                let with_subject = matches!(self.state, State::Subscriber)
                    || self.listener.config.pull_subject_frame;
                let subject = with_subject.then_some(msg.subject.as_str().as_bytes());
                let dst = self.framed.write_buffer_mut();
                Some(mapping::put_delivery(dst, &[], subject, msg))
            }
            State::Responder { assignments } => Self::assign(
                &mut self.framed,
                assignments,
                msg,
                self.listener.config.sndhwm,
            ),
            State::Requester { requests, .. } => Self::answer(&mut self.framed, requests, msg),
            State::Publisher | State::Producer { .. } => None,
        };
        match written {
            Some(bytes) => self
                .listener
                .router
                .metrics()
                .message_out(Protocol::Zmtp, bytes),
            None => self.drop_message(),
        }
    }

    /// Hands a request to a REP/ROUTER worker as `[request id][""][subject][body…]`.
    fn assign(
        framed: &mut Framed<S, ZmtpCodec>,
        assignments: &mut Assignments,
        msg: &Envelope,
        hwm: usize,
    ) -> Option<usize> {
        let reply_to = msg.reply_to.clone()?;
        if assignments.reply_to.len() >= hwm.max(1) {
            // The oldest assignment is the likeliest to be abandoned by its worker.
            assignments.reply_to.pop_first();
        }
        assignments.next_id += 1;
        let id = assignments.next_id;
        assignments.reply_to.insert(id, reply_to);
        let prefix = [Bytes::copy_from_slice(&id.to_be_bytes()), Bytes::new()];
        let subject = Some(msg.subject.as_str().as_bytes());
        Some(mapping::put_delivery(
            framed.write_buffer_mut(),
            &prefix,
            subject,
            msg,
        ))
    }

    /// Routes a reply from the inbox back to its requester as `[envelope…][subject][body…]`.
    fn answer(
        framed: &mut Framed<S, ZmtpCodec>,
        requests: &mut Requests,
        msg: &Envelope,
    ) -> Option<usize> {
        let seq = requests.seq_of(&msg.subject)?;
        let pending = requests.pending.remove(&seq)?;
        Some(mapping::put_delivery(
            framed.write_buffer_mut(),
            &pending.envelope,
            Some(&pending.subject),
            msg,
        ))
    }

    fn on_timer(&mut self, now: Instant) -> Result<(), SessionError> {
        let expired = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if expired(self.heartbeat.ping_deadline) || expired(self.heartbeat.ttl_deadline) {
            return Err(SessionError::HeartbeatTimeout);
        }
        if let (Some(at), Some(interval)) = (self.heartbeat.next_ping, self.heartbeat.interval) {
            if at <= now {
                let ping = Command::Ping {
                    ttl: self.heartbeat.ttl_tenths,
                    context: Bytes::new(),
                };
                put_command(self.framed.write_buffer_mut(), &ping)?;
                self.heartbeat.next_ping = Some(now + interval);
                if self.heartbeat.ping_deadline.is_none() && !self.heartbeat.timeout.is_zero() {
                    self.heartbeat.ping_deadline = Some(now + self.heartbeat.timeout);
                }
            }
        }
        while let State::Requester { requests, .. } = &self.state {
            match requests.pending.first_key_value() {
                Some((&seq, pending)) if pending.deadline <= now => {
                    self.fail_request(seq, REQUEST_TIMEOUT);
                }
                _ => break,
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_go_only_to_zmtp_3_1_peers() {
        let config = Config {
            heartbeat_ivl_ms: 100,
            heartbeat_ttl_ms: 2500,
            ..Config::default()
        };
        let old = Heartbeat::new(&config, Revision::V3_0);
        assert_eq!((old.interval, old.next_deadline()), (None, None));
        let new = Heartbeat::new(&config, Revision::V3_1);
        assert_eq!(new.interval, Some(Duration::from_millis(100)));
        assert_eq!(
            new.timeout,
            Duration::from_millis(100),
            "timeout defaults to the interval"
        );
        assert_eq!(new.ttl_tenths, 25);
        assert!(new.next_deadline().is_some());
        let off = Heartbeat::new(&Config::default(), Revision::V3_1);
        assert_eq!(off.next_deadline(), None);
    }

    #[test]
    fn inbox_replies_map_back_to_their_request() {
        let requests = Requests::new(ConnId(9));
        let reply_to = requests.reply_subject(42).unwrap();
        assert!(reply_to.as_str().starts_with("_INBOX.zmtp9x"));
        assert_eq!(requests.seq_of(&reply_to), Some(42));
        let other = Subject::new(&format!("{}1.42", requests.inbox)).unwrap();
        assert_eq!(requests.seq_of(&other), None);
        assert_eq!(requests.seq_of(&Subject::new("_INBOX.x.1").unwrap()), None);
        // Another requester's inbox is unguessable from this one's.
        assert_ne!(Requests::new(ConnId(9)).inbox, requests.inbox);
    }

    #[test]
    fn secrets_compare_in_full() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
