//! One NATS client connection: handshake, the op loop, deliveries, keepalive and teardown.
//!
//! A session is one task. Its handshake queues INFO; then one `select!` loop runs over:
//! shutdown, the outbox's slow-consumer signal, writing the pending output buffer, draining
//! the outbox into that buffer, reading and decoding client ops, the PING timer, the write
//! deadline and, while authentication is pending, the CONNECT deadline (nats-server runs its
//! PING and auth timers side by side from accept).
//!
//! ```text
//! socket ─read─▶ rbuf ─ServerCodec─▶ ops ─▶ router.publish / subscribe / PONG / +OK ─┐
//! router ─try_send─▶ outbox ─drain─▶ MSG/HMSG ───────────────────────────────────────┴▶ out ─write─▶ socket
//! ```
//!
//! # Invariants
//! - Every buffered op is decoded and handled before the loop waits again; deliveries are
//!   drained in batches into `out`, which is written with as few writes as the socket allows.
//! - Pending output is counted in bytes, as nats-server does: the outbox is drained into `out`
//!   whenever `out` is under `max_pending`, so the outbox only absorbs bursts between wakeups.
//!   `out` passing `max_pending`, the outbox overflowing, or a write making no progress for
//!   `write_deadline` is a slow consumer (counted, pending output dropped, connection closed
//!   without an `-ERR`, as nats-server does).
//! - A delivery whose subscription is gone (UNSUB, auto-unsubscribe) is discarded, so no
//!   message is delivered past an UNSUB's `max_msgs`.
//! - Dropping a session unsubscribes all its subscriptions and deregisters it from the
//!   monitor, whichever way the task ends.
//! - No lock or map guard is held across an `.await`; the router is never awaited.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use polymq_core::envelope::now_ns;
use polymq_core::metrics::Metrics;
use polymq_core::outbox::{outbox, Delivery, Outbox, Overflow, Sink};
use polymq_core::router::{Router, SubscriptionId, SubscriptionSpec};
use polymq_core::{ConnId, Envelope, Filter, Origin, Protocol, Subject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::connect::{Auth, ClientOpts, Info};
use crate::error::{SessionError, INVALID_PUBLISH_SUBJECT, INVALID_SUBJECT, MAX_SUBSCRIPTIONS};
use crate::frame::{encode_server_op, put_err, ClientOp, Limits, ServerCodec, ServerOp};
use crate::mapping;

mod keepalive;

use crate::monitor::{ClientMeta, ConnStats, Monitor, SubMeta};
use keepalive::Keepalive;

/// Read buffer growth step.
const READ_CHUNK: usize = 32 * 1024;
/// Least free space before a read.
const MIN_READ_SPACE: usize = 4 * 1024;
/// One drain of the outbox stops once `out` holds this much, so writes interleave.
const WRITE_BATCH: usize = 256 * 1024;
/// Most deliveries drained per batch, so a flood cannot starve the socket.
const MAX_DRAIN: usize = 4096;
/// An empty `out` larger than this is released.
const OUT_SHRINK: usize = 1024 * 1024;
/// How long closing a socket whose pending output is dropped may take.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// What every session of a listener shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) config: Arc<Config>,
    pub(crate) monitor: Monitor,
    pub(crate) auth: Auth,
    pub(crate) info: Info,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn run<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = ConnId::next();
    let span = tracing::debug_span!("nats", %peer, cid = conn.0);
    async move {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let max = shared.config.max_connections;
        let Some(stats) = shared.monitor.open_connection(conn.0, peer, max) else {
            reject(&mut writer, &shared, conn, peer).await;
            return;
        };
        let mut session = Session::new(shared, conn, peer, stats);
        let err = session.serve(&mut reader, &mut writer, &shutdown).await;
        tracing::debug!(reason = %err, "connection closed");
        session.close(&mut writer, &err).await;
    }
    .instrument(span)
    .await;
}

/// Sends INFO and `-ERR 'maximum connections exceeded'`, as nats-server does over its limit.
async fn reject<W: AsyncWrite + Unpin>(
    writer: &mut W,
    shared: &Shared,
    conn: ConnId,
    peer: SocketAddr,
) {
    let mut out = BytesMut::new();
    put_info(&mut out, &shared.info, conn, peer, false);
    if let Some(text) = SessionError::MaxConnections.to_wire() {
        put_err(&mut out, text.as_bytes());
    }
    let wait = shared.config.write_deadline();
    // The client may already be gone; there is nothing left to do on failure.
    let _ = timeout(wait, writer.write_all(&out)).await;
    let _ = timeout(wait, writer.shutdown()).await;
}

fn put_info(out: &mut BytesMut, template: &Info, conn: ConnId, peer: SocketAddr, connect: bool) {
    let mut info = template.clone();
    info.client_id = conn.0;
    info.client_ip = peer.ip().to_string();
    if connect {
        info.connect_info = true;
        info.remote_account = "$G".into();
    }
    encode_server_op(&ServerOp::Info(Bytes::from(info.to_json())), out);
}

/// One subscription of this connection.
#[derive(Debug)]
struct Sub {
    sid: Bytes,
    filter: Filter,
    queue: Option<Arc<str>>,
    /// Auto-unsubscribe after this many deliveries (0 = never).
    max: u64,
    meta: Arc<SubMeta>,
}

/// The state of one connection.
struct Session {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    conn: ConnId,
    origin: Origin,
    peer: SocketAddr,
    started: Instant,
    /// Time of the batch being handled (one clock read per read or drain).
    now: Instant,
    /// Wall clock of the read being processed: the publish time of its messages.
    now_ns: u64,
    stats: Arc<ConnStats>,
    codec: ServerCodec,
    opts: ClientOpts,
    connected: bool,
    sink: Sink,
    outbox: Outbox,
    out: BytesMut,
    max_pending: usize,
    sids: HashMap<Bytes, SubscriptionId>,
    subs: HashMap<SubscriptionId, Sub>,
    keepalive: Keepalive,
    /// Last published subject, so a stream of publishes to one subject validates it once.
    last_subject: Option<(Bytes, Subject)>,
    /// Header block rendered for the last delivered message (fan-out within one session).
    last_headers: Option<(Arc<Envelope>, Bytes)>,
    /// Messages (and their bytes) published by the read being processed, added to the
    /// shared counters once per read.
    received: (u64, usize),
}

impl Session {
    fn new(shared: Arc<Shared>, conn: ConnId, peer: SocketAddr, stats: Arc<ConnStats>) -> Self {
        let config = &shared.config;
        let (sink, outbox) = outbox(config.outbox_capacity(), Overflow::Disconnect);
        let limits = Limits {
            max_control_line: config.max_control_line,
            max_payload: config.max_payload,
        };
        let now = Instant::now();
        let metrics = shared.router.metrics().clone();
        metrics.connection_opened(Protocol::Nats);
        Self {
            metrics,
            conn,
            origin: Origin {
                protocol: Protocol::Nats,
                conn,
            },
            peer,
            started: now,
            now,
            now_ns: now_ns(),
            stats,
            codec: ServerCodec::new(limits),
            opts: ClientOpts::default(),
            connected: false,
            sink,
            outbox,
            out: BytesMut::with_capacity(4096),
            max_pending: config.max_pending,
            sids: HashMap::new(),
            subs: HashMap::new(),
            keepalive: Keepalive::new(config.ping_interval(), config.max_pings_out, now),
            last_subject: None,
            last_headers: None,
            received: (0, 0),
            shared,
        }
    }

    /// Runs the connection until something ends it; returns why.
    async fn serve<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        shutdown: &CancellationToken,
    ) -> SessionError
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let auth_deadline = self.handshake();
        match self
            .op_loop(reader, writer, &mut rbuf, shutdown, auth_deadline)
            .await
        {
            Ok(never) => match never {},
            Err(err) => err,
        }
    }

    /// Queues INFO, the first thing a client sees, and returns the deadline for CONNECT when
    /// authentication is required. The wait itself is an arm of the op loop, because
    /// nats-server's PING timer runs from accept, alongside its auth timer.
    fn handshake(&mut self) -> Option<Instant> {
        put_info(
            &mut self.out,
            &self.shared.info,
            self.conn,
            self.peer,
            false,
        );
        self.shared
            .auth
            .required()
            .then(|| self.started + self.shared.config.auth_timeout())
    }

    async fn op_loop<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        rbuf: &mut BytesMut,
        shutdown: &CancellationToken,
        auth_deadline: Option<Instant>,
    ) -> Result<Infallible, SessionError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let write_deadline = self.shared.config.write_deadline();
        // Every waiter lives across rounds: a fresh one per round would register with (and
        // leave) its notifier or timer wheel each time.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let auth = tokio::time::sleep_until(auth_deadline.unwrap_or(self.keepalive.deadline));
        tokio::pin!(auth);
        let overflowed = self.outbox.overflowed();
        tokio::pin!(overflowed);
        let ping = tokio::time::sleep_until(self.keepalive.deadline);
        tokio::pin!(ping);
        let stall = tokio::time::sleep(write_deadline);
        tokio::pin!(stall);
        let mut stalled = false;
        loop {
            if ping.deadline() != self.keepalive.deadline {
                ping.as_mut().reset(self.keepalive.deadline);
            }
            if !self.out.is_empty() && !stalled {
                stall.as_mut().reset(Instant::now() + write_deadline);
                stalled = true;
            }
            if rbuf.capacity() - rbuf.len() < MIN_READ_SPACE {
                rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                () = &mut cancelled => return Err(SessionError::Shutdown),
                () = &mut overflowed => return Err(SessionError::SlowConsumer),
                written = writer.write_buf(&mut self.out), if !self.out.is_empty() => {
                    if written? == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                    }
                    if self.out.is_empty() {
                        stalled = false;
                        if self.out.capacity() > OUT_SHRINK {
                            self.out = BytesMut::with_capacity(4096);
                        }
                    } else {
                        stall.as_mut().reset(Instant::now() + write_deadline);
                    }
                    self.stats.set_pending(self.out.len());
                }
                Some(delivery) = self.outbox.recv(), if self.out.len() < self.max_pending => {
                    self.drain(Some(delivery), WRITE_BATCH)?;
                }
                read = reader.read_buf(rbuf) => {
                    if read? == 0 {
                        return Err(SessionError::Eof);
                    }
                    self.now = Instant::now();
                    self.now_ns = now_ns();
                    self.process(rbuf)?;
                }
                () = &mut auth, if auth_deadline.is_some() && !self.connected => {
                    return Err(SessionError::AuthenticationTimeout);
                }
                () = &mut ping => {
                    if self.keepalive.fire(Instant::now())? {
                        self.out.put_slice(b"PING\r\n");
                    }
                }
                () = &mut stall, if stalled => return Err(SessionError::SlowConsumer),
            }
        }
    }

    /// Decodes and handles every complete op in `rbuf`.
    ///
    /// Deliveries already routed to this connection are moved to `out` before each op, as
    /// nats-server queues them synchronously: a client's own messages precede the PONG of a
    /// later PING, and a message routed before an UNSUB is still delivered.
    fn process(&mut self, rbuf: &mut BytesMut) -> Result<(), SessionError> {
        let processed = self.process_ops(rbuf);
        let (count, bytes) = std::mem::take(&mut self.received);
        if count > 0 {
            self.stats.messages_in(count, bytes);
            self.metrics
                .messages_received(Protocol::Nats, count, bytes as u64);
        }
        processed
    }

    /// [`Session::process`] without the counting.
    fn process_ops(&mut self, rbuf: &mut BytesMut) -> Result<(), SessionError> {
        let before = self.out.len();
        while let Some(op) = self.next_op(rbuf)? {
            while !self.outbox.is_empty() {
                self.drain(None, usize::MAX)?;
            }
            self.handle(op)?;
        }
        while !self.outbox.is_empty() {
            self.drain(None, usize::MAX)?;
        }
        if self.out.len() > self.max_pending {
            return Err(SessionError::SlowConsumer);
        }
        if self.out.len() != before {
            self.stats.set_pending(self.out.len());
        }
        Ok(())
    }

    /// The next op, enforcing nats-server's "first op must be CONNECT" while authenticating.
    fn next_op(&mut self, rbuf: &mut BytesMut) -> Result<Option<ClientOp>, SessionError> {
        let awaiting_auth = !self.connected && self.shared.auth.required();
        if awaiting_auth
            && self.codec.at_op_start()
            && rbuf.first().is_some_and(|b| !matches!(b, b'C' | b'c'))
        {
            return Err(SessionError::AuthorizationViolation);
        }
        Ok(self.codec.decode(rbuf)?)
    }

    fn handle(&mut self, op: ClientOp) -> Result<(), SessionError> {
        match op {
            ClientOp::Connect(json) => self.on_connect(&json),
            ClientOp::Pub {
                subject,
                reply_to,
                payload,
            } => {
                self.on_pub(&subject, reply_to.as_ref(), None, payload);
                Ok(())
            }
            ClientOp::HPub {
                subject,
                reply_to,
                headers,
                payload,
            } => {
                self.on_pub(&subject, reply_to.as_ref(), Some(&headers), payload);
                Ok(())
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => {
                self.on_sub(&subject, queue.as_ref(), sid);
                Ok(())
            }
            ClientOp::Unsub { sid, max_msgs } => {
                self.on_unsub(&sid, max_msgs);
                Ok(())
            }
            ClientOp::Ping => {
                self.on_ping();
                Ok(())
            }
            ClientOp::Pong => {
                if let Some(rtt) = self.keepalive.pong(self.now) {
                    self.stats.set_rtt(rtt);
                }
                Ok(())
            }
            ClientOp::Info(json) => serde_json::from_slice::<serde::de::IgnoredAny>(&json)
                .map(|_| ())
                .map_err(|source| SessionError::BadJson { op: "INFO", source }),
            ClientOp::Ok => Ok(()),
            ClientOp::Err(text) => Err(SessionError::ClientError(
                String::from_utf8_lossy(&text).into_owned(),
            )),
        }
    }

    /// nats-server's `processConnect` for a client connection.
    fn on_connect(&mut self, json: &[u8]) -> Result<(), SessionError> {
        let echo_before = self.opts.echo;
        self.opts
            .apply_connect(json)
            .map_err(|source| SessionError::BadJson {
                op: "CONNECT",
                source,
            })?;
        self.connected = true;
        self.keepalive.connected(self.started, self.now);
        if let Some(rtt) = self.keepalive.rtt {
            self.stats.set_rtt(rtt);
        }
        self.codec.set_headers(self.opts.headers);
        let user = self
            .shared
            .auth
            .check(&self.opts)
            .map_err(|_| SessionError::AuthorizationViolation)?;
        if !self.opts.account.is_empty() || self.opts.new_account {
            return Err(SessionError::AuthorizationViolation);
        }
        if !(0..=1).contains(&self.opts.protocol) {
            return Err(SessionError::InvalidClientProtocol);
        }
        if self.opts.no_responders && !self.opts.headers {
            return Err(SessionError::NoRespondersRequiresHeaders);
        }
        self.stats.set_meta(ClientMeta {
            name: self.opts.name.clone(),
            lang: self.opts.lang.clone(),
            version: self.opts.version.clone(),
            user,
        });
        if self.opts.echo != echo_before {
            self.resubscribe_all();
        }
        self.ok();
        Ok(())
    }

    fn ok(&mut self) {
        if self.opts.verbose {
            self.out.put_slice(b"+OK\r\n");
        }
    }

    /// nats-server's `processPing`: PONG, and after the first PING following CONNECT an
    /// INFO with `connect_info` for protocol-1 clients.
    fn on_ping(&mut self) {
        self.out.put_slice(b"PONG\r\n");
        self.keepalive.last_in = self.now;
        if self.connected && !self.keepalive.first_pong_sent {
            self.keepalive.first_pong_sent = true;
            if self.opts.protocol >= 1 {
                put_info(&mut self.out, &self.shared.info, self.conn, self.peer, true);
            }
        }
    }

    fn on_pub(
        &mut self,
        subject: &Bytes,
        reply_to: Option<&Bytes>,
        headers: Option<&Bytes>,
        payload: Bytes,
    ) {
        self.received.0 += 1;
        self.received.1 += payload.len() + headers.map_or(0, Bytes::len);
        self.keepalive.last_in = self.now;
        if self.opts.pedantic && !mapping::is_valid_literal(subject) {
            put_err(&mut self.out, INVALID_PUBLISH_SUBJECT.as_bytes());
        }
        self.ok();
        let matched = match self.publish_subject(subject) {
            Some(subject) => {
                let reply = reply_to.map(|r| &r[..]);
                let msg = Arc::new(mapping::envelope(
                    subject,
                    reply,
                    headers.map(|h| &h[..]),
                    payload,
                    self.origin,
                    self.now_ns,
                ));
                self.shared.router.publish(msg).matched()
            }
            None => 0,
        };
        if matched == 0 && self.opts.no_responders {
            if let Some(reply) = reply_to {
                self.no_responders(reply, subject);
            }
        }
    }

    fn publish_subject(&mut self, raw: &Bytes) -> Option<Subject> {
        if let Some((bytes, subject)) = &self.last_subject {
            if bytes == raw {
                return Some(subject.clone());
            }
        }
        let subject = mapping::publish_subject(raw)?;
        self.last_subject = Some((Bytes::copy_from_slice(raw), subject.clone()));
        Some(subject)
    }

    /// Tells a requester nobody listens: the 503 status to its oldest plain subscription
    /// matching the reply subject, as nats-server's `subForReply` picks it.
    fn no_responders(&mut self, reply: &Bytes, subject: &Bytes) {
        let Some(reply_subject) = mapping::publish_subject(reply) else {
            return;
        };
        let sid = self
            .subs
            .iter()
            .filter(|(_, s)| s.queue.is_none() && s.filter.matches(&reply_subject))
            .min_by_key(|(id, _)| **id)
            .map(|(_, s)| s.sid.clone());
        if let Some(sid) = sid {
            mapping::put_no_responders(&mut self.out, reply, &sid, subject);
        }
    }

    /// nats-server's `processSub`: a duplicate sid keeps the existing subscription.
    fn on_sub(&mut self, subject: &Bytes, queue: Option<&Bytes>, sid: Bytes) {
        self.keepalive.last_in = self.now;
        if self.sids.contains_key(&sid) {
            self.ok();
            return;
        }
        let Ok(filter) = mapping::subscription_filter(subject) else {
            put_err(&mut self.out, INVALID_SUBJECT.as_bytes());
            return;
        };
        let limit = self.shared.config.max_subscriptions;
        if limit > 0 && self.sids.len() >= limit {
            put_err(&mut self.out, MAX_SUBSCRIPTIONS.as_bytes());
            return;
        }
        let queue: Option<Arc<str>> = queue.map(|q| String::from_utf8_lossy(q).into());
        let meta = Arc::new(SubMeta {
            subject: String::from_utf8_lossy(subject).into_owned(),
            queue: queue.as_deref().map(str::to_owned),
            msgs: Default::default(),
            max: Default::default(),
        });
        self.stats
            .add_sub(&String::from_utf8_lossy(&sid), meta.clone());
        self.shared.monitor.subscribed();
        let sub = Sub {
            sid,
            filter,
            queue,
            max: 0,
            meta,
        };
        self.register(sub);
        self.ok();
    }

    fn register(&mut self, sub: Sub) {
        let spec = SubscriptionSpec {
            filter: sub.filter.clone(),
            group: sub.queue.clone(),
            origin: self.origin,
            no_local: !self.opts.echo,
            requests_only: false,
        };
        let id = self.shared.router.subscribe(spec, self.sink.clone());
        self.sids.insert(sub.sid.clone(), id);
        self.subs.insert(id, sub);
    }

    /// `echo` changed in a later CONNECT: re-register every subscription with the new
    /// no-local setting (the router fixes it per subscription).
    fn resubscribe_all(&mut self) {
        let subs: Vec<(SubscriptionId, Sub)> = self.subs.drain().collect();
        self.sids.clear();
        for (id, sub) in subs {
            self.shared.router.unsubscribe(id);
            self.register(sub);
        }
    }

    /// nats-server's `processUnsub`: a limit above what was delivered defers the removal.
    fn on_unsub(&mut self, sid: &Bytes, max_msgs: Option<u64>) {
        self.keepalive.last_in = self.now;
        if let Some(&id) = self.sids.get(sid) {
            let max = max_msgs.unwrap_or(0);
            let remove = match self.subs.get_mut(&id) {
                Some(sub) if max > 0 && max > sub.meta.msgs.load(Ordering::Relaxed) => {
                    sub.max = max;
                    sub.meta.max.store(max, Ordering::Relaxed);
                    false
                }
                _ => true,
            };
            if remove {
                self.remove_sub(id);
            }
        }
        self.ok();
    }

    /// Removes every subscription from the router (the connection is ending).
    fn unsubscribe_all(&mut self) {
        for (id, _) in self.subs.drain() {
            self.shared.router.unsubscribe(id);
            self.shared.monitor.unsubscribed();
        }
        self.sids.clear();
    }

    fn remove_sub(&mut self, id: SubscriptionId) {
        if let Some(sub) = self.subs.remove(&id) {
            self.shared.router.unsubscribe(id);
            self.sids.remove(&sub.sid);
            self.stats.remove_sub(&String::from_utf8_lossy(&sub.sid));
            self.shared.monitor.unsubscribed();
        }
    }

    /// Moves deliveries from the outbox into `out`, starting with `first`, until the outbox
    /// is empty, `out` reaches `batch` bytes or [`MAX_DRAIN`] deliveries were moved.
    fn drain(&mut self, first: Option<Delivery>, batch: usize) -> Result<(), SessionError> {
        let (mut count, mut bytes) = (0u64, 0usize);
        let mut next = first.or_else(|| self.outbox.try_recv());
        let mut drained = 0;
        while let Some(delivery) = next {
            if let Some(size) = self.deliver(&delivery) {
                count += 1;
                bytes += size;
            }
            drained += 1;
            if self.out.len() > self.max_pending {
                return Err(SessionError::SlowConsumer);
            }
            next = if drained < MAX_DRAIN && self.out.len() < batch {
                self.outbox.try_recv()
            } else {
                None
            };
        }
        if count > 0 {
            self.stats.messages_out(count, bytes);
            self.stats.touch();
            self.metrics
                .messages_written(Protocol::Nats, count, bytes as u64);
        }
        self.stats.set_pending(self.out.len());
        Ok(())
    }

    /// Appends one delivery; `None` when its subscription is gone or a `MSG` line cannot carry
    /// its subject or reply subject (a space, from MQTT or ZMTP: dropped and counted).
    fn deliver(&mut self, delivery: &Delivery) -> Option<usize> {
        let sub = self.subs.get(&delivery.sub)?;
        let msg = &delivery.msg;
        if !msg.subject.fits_nats() || msg.reply_to.as_ref().is_some_and(|r| !r.fits_nats()) {
            self.metrics.dropped(Protocol::Nats, 1);
            return None;
        }
        let delivered = sub.meta.msgs.fetch_add(1, Ordering::Relaxed) + 1;
        let max = sub.max;
        if max > 0 && delivered > max {
            self.remove_sub(delivery.sub);
            return None;
        }
        let headers = if self.opts.headers {
            headers_for(&mut self.last_headers, &delivery.msg)
        } else {
            None
        };
        let size = mapping::put_delivery(&mut self.out, &delivery.msg, &sub.sid, headers.as_ref());
        if max > 0 && delivered == max {
            self.remove_sub(delivery.sub);
        }
        Some(size)
    }

    /// Leaves the router, then writes the closing `-ERR` (if nats-server sends one) and
    /// closes the socket.
    async fn close<W: AsyncWrite + Unpin>(&mut self, writer: &mut W, err: &SessionError) {
        self.unsubscribe_all();
        match err {
            SessionError::SlowConsumer => {
                self.shared.monitor.slow_consumer();
                let lost = self.outbox.dropped() + self.outbox.len() as u64;
                self.metrics.dropped(Protocol::Nats, lost);
            }
            SessionError::StaleConnection => self.shared.monitor.stale_connection(),
            _ => {}
        }
        let wait = if err.flushes() {
            self.shared.config.write_deadline()
        } else {
            self.out.clear();
            ABORT_GRACE
        };
        if let Some(text) = err.to_wire() {
            put_err(&mut self.out, text.as_bytes());
        }
        if !self.out.is_empty() {
            // Best effort: the peer may be gone or not reading.
            let _ = timeout(wait, writer.write_all(&self.out)).await;
        }
        let _ = timeout(wait, writer.shutdown()).await;
    }
}

/// The header block for `msg`: as a NATS publisher sent it when the envelope kept it,
/// otherwise rendered from the header list, once per message per session.
fn headers_for(cache: &mut Option<(Arc<Envelope>, Bytes)>, msg: &Arc<Envelope>) -> Option<Bytes> {
    if let Some((cached, block)) = cache {
        if Arc::ptr_eq(cached, msg) {
            return Some(block.clone());
        }
    }
    let block = match &msg.header_block {
        Some(block) => block.clone(),
        None => mapping::render_headers(&msg.headers)?,
    };
    *cache = Some((msg.clone(), block.clone()));
    Some(block)
}

impl Drop for Session {
    fn drop(&mut self) {
        self.unsubscribe_all();
        self.shared.monitor.close_connection(&self.stats);
        self.metrics.connection_closed(Protocol::Nats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_are_rendered_once_per_message() {
        use polymq_core::Headers;
        let mut msg = Envelope::new(
            Subject::new("a").unwrap(),
            Bytes::new(),
            Origin {
                protocol: Protocol::Nats,
                conn: ConnId(1),
            },
        );
        let mut cache = None;
        assert!(headers_for(&mut cache, &Arc::new(msg.clone())).is_none());
        let mut headers = Headers::new();
        headers.append("k", "v");
        msg.headers = headers;
        let msg = Arc::new(msg);
        let first = headers_for(&mut cache, &msg).unwrap();
        let second = headers_for(&mut cache, &msg).unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr());
        // A block kept as published wins over the rendered list.
        let mut odd = (*msg).clone();
        odd.header_block = Some(Bytes::from_static(b"NATS/1.0\r\nk:v\r\n\r\n"));
        let odd = Arc::new(odd);
        assert_eq!(
            headers_for(&mut cache, &odd).as_deref(),
            Some(&b"NATS/1.0\r\nk:v\r\n\r\n"[..])
        );
    }
}
