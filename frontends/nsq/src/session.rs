//! One TCP client: the V2 state machine from magic to close.
//!
//! ```text
//! magic "  V2" ─▶ Init ──SUB──▶ Subscribed ──CLS──▶ Closing
//!                  │ IDENTIFY, AUTH, PUB/MPUB/DPUB, NOP      (PUB… and NOP in every state)
//! ```
//!
//! One task per connection runs a `select!` over: the next decoded command, the channel
//! member's outbox (drained into one write), the heartbeat ticker, the read deadline
//! (2 × heartbeat interval without a command closes the connection, as nsqd's read deadline
//! does), the broker's shutdown and a kick (the client's channel or topic was deleted).
//!
//! Every write has nsqd's write deadline (one heartbeat interval), so a client that stops
//! reading is disconnected rather than holding its task.
//!
//! An IDENTIFY that negotiates snappy or deflate switches the connection's
//! [`Transport`] right after the negotiation JSON; bytes already read are decoded as
//! compressed, and the `OK` that confirms the upgrade is the first compressed frame.
//!
//! Commands run in order, one at a time, as in nsqd's IOLoop: a publish answers `OK` only
//! after the core accepted the message. Flow control is the channel's: RDY sets the member's
//! credit (a level, not a counter) and the durable queue never has more than that many
//! messages in flight to this client.
//!
//! # Invariants
//! - Responses and errors are flushed at once; message frames are flushed after the outbox
//!   is drained.
//! - The decoder's [`Gate`] always reflects the state (initial, authenticated).
//! - On exit the member is dropped (its in-flight messages go back to the channel), the
//!   client leaves the registry and the connection metrics are closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use polymq_core::queue::{AckError, DurableQueue, Member};
use polymq_core::topic::Topic;
use polymq_core::{
    outbox, ConnId, Delivery, MessageId, Outbox, Overflow, Protocol, SubscriptionId,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Interval};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::error::NsqError;
use crate::frame::{
    check_magic, is_valid_name, message_id, parse_base10, Codec, Command, DecodeError, Frame, Gate,
    Params, Verb, CLOSE_WAIT, HEARTBEAT, MSG_ID_LEN, OK,
};
use crate::identify::{IdentifyData, Negotiated, Settings};
use crate::mapping;
use crate::node::{ClientInfo, ClientState, Node};
use crate::transport::{Compression, Transport};

/// Most message frames written per flush.
const WRITE_BATCH: usize = 256;

/// Serves one connection until it closes. Never panics on client input.
pub async fn run<S>(mut stream: S, peer: SocketAddr, node: Arc<Node>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let metrics = node.router.metrics().clone();
    metrics.connection_opened(Protocol::Nsq);
    let handshake = node.config.heartbeat_interval().max(Duration::from_secs(1)) * 2;
    let magic = tokio::select! {
        () = shutdown.cancelled() => None,
        read = tokio::time::timeout(handshake, read_magic(&mut stream)) => read.ok().flatten(),
    };
    if let Some(magic) = magic {
        if check_magic(magic).is_ok() {
            let mut session = Session::new(stream, peer, node.clone(), shutdown);
            if let Err(err) = session.serve().await {
                tracing::debug!(%peer, %err, "nsq session ended");
            }
            session.close();
        } else {
            let mut out = bytes::BytesMut::new();
            Frame::Error(Bytes::from_static(b"E_BAD_PROTOCOL")).encode(&mut out);
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        }
    }
    metrics.connection_closed(Protocol::Nsq);
}

async fn read_magic<S: AsyncRead + Unpin>(stream: &mut S) -> Option<[u8; 4]> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await.ok()?;
    Some(magic)
}

/// A subscribed client's channel membership.
struct Subscription {
    topic: Arc<Topic>,
    channel: Arc<DurableQueue>,
    member: Arc<Member>,
    outbox: Outbox,
}

/// Connection state after the magic.
struct Session<S> {
    framed: Framed<Transport<S>, Codec>,
    node: Arc<Node>,
    conn: ConnId,
    client: Arc<ClientInfo>,
    shutdown: CancellationToken,
    state: ClientState,
    settings: Settings,
    authed: bool,
    sub: Option<Subscription>,
    heartbeat: Option<Interval>,
    last_command: Instant,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn new(stream: S, peer: SocketAddr, node: Arc<Node>, shutdown: CancellationToken) -> Self {
        let conn = ConnId::next();
        let client = Arc::new(ClientInfo::new(conn, peer));
        node.clients.insert(conn, client.clone());
        let settings = Settings::defaults(&node.config);
        let mut codec = Codec::new(node.config.limits());
        codec.set_gate(Gate {
            initial: true,
            auth_missing: node.config.auth_enabled(),
        });
        Self {
            framed: Framed::new(Transport::new(stream), codec),
            heartbeat: settings.heartbeat.map(ticker),
            node,
            conn,
            client,
            shutdown,
            state: ClientState::Init,
            settings,
            authed: false,
            sub: None,
            last_command: Instant::now(),
        }
    }

    /// The command loop.
    async fn serve(&mut self) -> Result<(), NsqError> {
        loop {
            let deadline = self.settings.heartbeat.map(|hb| self.last_command + hb * 2);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(()),
                () = self.client.kick.cancelled() => return Ok(()),
                next = self.framed.next() => match next {
                    None => return Ok(()),
                    Some(Ok(command)) => {
                        self.last_command = Instant::now();
                        self.handle(command).await?;
                    }
                    Some(Err(err)) => {
                        let err = NsqError::from(err);
                        self.send_error(&err).await?;
                        return Err(err);
                    }
                },
                Some(delivery) = next_delivery(&mut self.sub) => self.deliver(delivery).await?,
                _ = tick(&mut self.heartbeat) => self.send_frame(Frame::response(HEARTBEAT)).await?,
                () = sleep_until(deadline) => return Ok(()),
            }
        }
    }

    /// Runs one command and writes its response or error.
    async fn handle(&mut self, command: Command) -> Result<(), NsqError> {
        match self.execute(command).await {
            Ok(Some(response)) => self.send_frame(Frame::Response(response)).await,
            Ok(None) => Ok(()),
            Err(err) => {
                self.send_error(&err).await?;
                if err.is_fatal() {
                    Err(err)
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn send_error(&mut self, err: &NsqError) -> Result<(), NsqError> {
        match err.wire() {
            Some(text) => self.send_frame(Frame::Error(text)).await,
            None => Ok(()),
        }
    }

    /// Writes and flushes one frame within nsqd's write deadline.
    async fn send_frame(&mut self, frame: Frame) -> Result<(), NsqError> {
        within(self.settings.heartbeat, self.framed.send(frame)).await
    }

    async fn execute(&mut self, command: Command) -> Result<Option<Bytes>, NsqError> {
        match command {
            Command::Identify(body) => self.identify(&body).await,
            Command::Auth(secret) => self.auth(&secret),
            Command::Sub(params) => self.subscribe(&params),
            Command::Pub { topic, body } => self.publish(Verb::Pub, &topic, vec![body], None).await,
            Command::Mpub { topic, bodies } => self.publish(Verb::Mpub, &topic, bodies, None).await,
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let delay = Duration::from_millis(defer_ms);
                self.publish(Verb::Dpub, &topic, vec![body], Some(delay))
                    .await
            }
            Command::Rdy(params) => self.ready(&params).map(|()| None),
            Command::Fin(params) => self.finish(&params).map(|()| None),
            Command::Req(params) => self.requeue(&params).map(|()| None),
            Command::Touch(params) => self.touch(&params).map(|()| None),
            Command::Cls(_) => self.start_close(),
            Command::Nop(_) => Ok(None),
        }
    }

    async fn identify(&mut self, body: &[u8]) -> Result<Option<Bytes>, NsqError> {
        let data = IdentifyData::parse(body)?;
        let settings = self.settings.apply(&data, &self.node.config)?;
        {
            let mut meta = self.client.meta.lock();
            meta.client_id = data.client_id.clone().unwrap_or_default();
            meta.hostname = data.hostname.clone().unwrap_or_default();
            meta.user_agent = data.user_agent.clone().unwrap_or_default();
            meta.topology_zone = data.topology_zone.clone().unwrap_or_default();
            meta.topology_region = data.topology_region.clone().unwrap_or_default();
            meta.sample_rate = settings.sample_rate;
        }
        if settings.heartbeat != self.settings.heartbeat {
            self.heartbeat = settings.heartbeat.map(ticker);
        }
        self.settings = settings;
        if !data.feature_negotiation.unwrap_or(false) {
            return Ok(Some(Bytes::from_static(OK)));
        }
        let compression = data.compression()?;
        let reply = Negotiated::new(&self.settings, &self.node.config, &data).to_json();
        self.send_frame(Frame::Response(Bytes::from(reply))).await?;
        if let Some(compression) = compression {
            self.compress(compression).await?;
        }
        Ok(None)
    }

    /// Switches the connection to `compression` right after the negotiation JSON, then
    /// confirms with `OK` over the compressed stream, as nsqd does.
    async fn compress(&mut self, compression: Compression) -> Result<(), NsqError> {
        let read_ahead = self.framed.read_buffer_mut().split();
        self.framed.get_mut().upgrade(compression, read_ahead);
        {
            let mut meta = self.client.meta.lock();
            meta.snappy = compression == Compression::Snappy;
            meta.deflate = matches!(compression, Compression::Deflate(_));
        }
        self.send_frame(Frame::response(OK)).await
    }

    fn auth(&mut self, secret: &[u8]) -> Result<Option<Bytes>, NsqError> {
        if self.authed {
            return Err(NsqError::AuthAlreadySet);
        }
        let config = &self.node.config;
        if !config.auth_enabled() {
            return Err(NsqError::AuthDisabled);
        }
        if !config.auth_secrets.iter().any(|s| s.as_bytes() == secret) {
            return Err(NsqError::AuthFailed);
        }
        self.authed = true;
        self.client.meta.lock().authed = true;
        self.update_gate();
        let reply = serde_json::json!({"identity": "", "identity_url": "", "permission_count": 1});
        Ok(Some(Bytes::from(reply.to_string())))
    }

    fn check_auth(&self, verb: Verb) -> Result<(), NsqError> {
        if self.node.config.auth_enabled() && !self.authed {
            return Err(NsqError::AuthFirst(verb));
        }
        Ok(())
    }

    fn subscribe(&mut self, params: &Params) -> Result<Option<Bytes>, NsqError> {
        if self.state != ClientState::Init {
            return Err(NsqError::InvalidState(Verb::Sub));
        }
        if self.settings.heartbeat.is_none() {
            return Err(NsqError::HeartbeatsDisabled);
        }
        let (Some(topic_name), Some(channel_name)) = (params.get(0), params.get(1)) else {
            return Err(NsqError::SubParameters);
        };
        if !is_valid_name(topic_name) {
            return Err(NsqError::SubTopic(Bytes::copy_from_slice(topic_name)));
        }
        if !is_valid_name(channel_name) {
            return Err(NsqError::SubChannel(Bytes::copy_from_slice(channel_name)));
        }
        self.check_auth(Verb::Sub)?;
        let topic_name = ascii(topic_name);
        let channel_name = ascii(channel_name);
        let topic = self
            .node
            .router
            .topic(&topic_name)
            .map_err(|e| NsqError::SubFailed(e.to_string()))?;
        let channel = topic.channel(&channel_name);
        let limit = self.node.config.max_channel_consumers;
        if limit != 0 && channel.stats().client_count as u64 >= limit {
            return Err(NsqError::SubFailed(format!(
                "consumers for {topic_name}:{channel_name} exceeds limit of {limit}"
            )));
        }
        let capacity = usize::try_from(self.node.config.max_rdy_count)
            .unwrap_or(usize::MAX)
            .max(1);
        let (sink, outbox) = outbox(capacity, Overflow::Drop);
        let member = Arc::new(channel.attach(sink, SubscriptionId(self.conn.0)));
        member.set_msg_timeout(self.settings.msg_timeout);
        *self.client.member.lock() = Arc::downgrade(&member);
        self.client.meta.lock().subscription = Some((topic_name, channel_name));
        self.sub = Some(Subscription {
            topic,
            channel,
            member,
            outbox,
        });
        self.set_state(ClientState::Subscribed);
        self.node.topology_changed();
        Ok(Some(Bytes::from_static(OK)))
    }

    async fn publish(
        &mut self,
        verb: Verb,
        topic_name: &str,
        bodies: Vec<Bytes>,
        delay: Option<Duration>,
    ) -> Result<Option<Bytes>, NsqError> {
        if verb != Verb::Mpub {
            self.check_auth(verb)?;
        }
        let failed = |reason| NsqError::PublishFailed { verb, reason };
        let bad_topic = |_| {
            let name = Bytes::copy_from_slice(topic_name.as_bytes());
            NsqError::Decode(DecodeError::BadTopic { verb, name })
        };
        let created = self.node.router.get_topic(topic_name).is_none();
        let topic = self.node.router.topic(topic_name).map_err(bad_topic)?;
        if created {
            self.node.topology_changed();
        }
        let metrics = self.node.router.metrics().clone();
        let count = bodies.len() as u64;
        for body in bodies {
            let size = body.len();
            let msg = mapping::envelope(topic_name, body, self.conn).map_err(bad_topic)?;
            match delay {
                Some(delay) => topic.put_deferred(msg, delay).await.map_err(failed)?,
                None => {
                    self.node
                        .router
                        .publish_durable(msg)
                        .await
                        .map_err(failed)?;
                }
            }
            metrics.message_in(Protocol::Nsq, size);
        }
        *self
            .client
            .meta
            .lock()
            .pub_counts
            .entry(topic_name.to_owned())
            .or_default() += count;
        Ok(Some(Bytes::from_static(OK)))
    }

    fn ready(&mut self, params: &Params) -> Result<(), NsqError> {
        match self.state {
            ClientState::Closing => return Ok(()),
            ClientState::Init => return Err(NsqError::InvalidState(Verb::Rdy)),
            ClientState::Subscribed => {}
        }
        let count = match params.get(0) {
            None => 1,
            Some(raw) => {
                let parsed = parse_base10(raw)
                    .ok_or_else(|| NsqError::RdyParse(Bytes::copy_from_slice(raw)))?;
                // nsqd converts with int64(uint64): a wrapping cast.
                parsed as i64
            }
        };
        let max = self.node.config.max_rdy_count;
        if count < 0 || count as u64 > max {
            return Err(NsqError::RdyRange { count, max });
        }
        self.set_ready(count);
        Ok(())
    }

    fn set_ready(&mut self, count: i64) {
        self.client
            .ready_count
            .store(count, std::sync::atomic::Ordering::Relaxed);
        if let Some(sub) = &self.sub {
            sub.member
                .set_credit(u32::try_from(count).unwrap_or(u32::MAX));
        }
    }

    /// The member and message id of FIN/REQ/TOUCH, after nsqd's state and parameter checks.
    fn ack_target(
        &self,
        verb: Verb,
        params: &Params,
        needed: usize,
    ) -> Result<(Arc<Member>, [u8; 16]), NsqError> {
        let (Some(sub), ClientState::Subscribed | ClientState::Closing) = (&self.sub, self.state)
        else {
            return Err(NsqError::InvalidState(verb));
        };
        if params.len() < needed {
            return Err(NsqError::AckParams(verb));
        }
        let id = message_id(params.get(0).unwrap_or_default()).ok_or(NsqError::MessageId)?;
        Ok((sub.member.clone(), id))
    }

    fn finish(&mut self, params: &Params) -> Result<(), NsqError> {
        let (member, id) = self.ack_target(Verb::Fin, params, 1)?;
        member
            .fin(&MessageId(id))
            .map_err(ack_failed(Verb::Fin, id))?;
        self.client
            .finish_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn requeue(&mut self, params: &Params) -> Result<(), NsqError> {
        let (member, id) = self.ack_target(Verb::Req, params, 2)?;
        let raw = params.get(1).unwrap_or_default();
        let ms =
            parse_base10(raw).ok_or_else(|| NsqError::ReqParse(Bytes::copy_from_slice(raw)))?;
        // nsqd clamps (does not reject) a delay outside 0..=max-req-timeout, computed as a
        // wrapping signed nanosecond duration.
        let ns = (ms as i64).wrapping_mul(1_000_000);
        let max = self.node.config.max_req_timeout();
        let delay = if ns < 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(ns.unsigned_abs()).min(max)
        };
        member
            .requeue(&MessageId(id), delay)
            .map_err(ack_failed(Verb::Req, id))?;
        self.client
            .requeue_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn touch(&mut self, params: &Params) -> Result<(), NsqError> {
        let (member, id) = self.ack_target(Verb::Touch, params, 1)?;
        member
            .touch(&MessageId(id))
            .map_err(ack_failed(Verb::Touch, id))
    }

    fn start_close(&mut self) -> Result<Option<Bytes>, NsqError> {
        if self.state != ClientState::Subscribed {
            return Err(NsqError::InvalidState(Verb::Cls));
        }
        self.set_ready(0);
        self.set_state(ClientState::Closing);
        Ok(Some(Bytes::from_static(CLOSE_WAIT)))
    }

    /// Writes one delivery and whatever else the outbox holds, then flushes once.
    async fn deliver(&mut self, first: Delivery) -> Result<(), NsqError> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(delivery) = next.take() {
            if self.sampled_out(&delivery) {
                next = self.sub.as_mut().and_then(|s| s.outbox.try_recv());
                continue;
            }
            let frame = mapping::message_frame(&delivery);
            self.node
                .router
                .metrics()
                .message_out(Protocol::Nsq, frame.body.len());
            self.client
                .message_count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            within(
                self.settings.heartbeat,
                self.framed.feed(Frame::Message(frame)),
            )
            .await?;
            written += 1;
            if written < WRITE_BATCH {
                next = self.sub.as_mut().and_then(|s| s.outbox.try_recv());
            }
        }
        within(self.settings.heartbeat, self.framed.flush()).await
    }

    /// nsqd's `sample_rate`: a skipped message is consumed without being sent.
    fn sampled_out(&self, delivery: &Delivery) -> bool {
        let rate = self.settings.sample_rate;
        if rate <= 0 || i32::try_from(fastrand::u32(0..100)).unwrap_or(0) <= rate {
            return false;
        }
        if let Some(sub) = &self.sub {
            let _ = sub.member.fin(&delivery.msg.id);
        }
        true
    }

    fn set_state(&mut self, state: ClientState) {
        self.state = state;
        self.client
            .state
            .store(state as u8, std::sync::atomic::Ordering::Relaxed);
        self.update_gate();
    }

    fn update_gate(&mut self) {
        let gate = Gate {
            initial: self.state == ClientState::Init,
            auth_missing: self.node.config.auth_enabled() && !self.authed,
        };
        self.framed.codec_mut().set_gate(gate);
    }

    /// Leaves the channel and the registry.
    fn close(&mut self) {
        if let Some(sub) = self.sub.take() {
            let ephemeral = sub.channel.is_ephemeral() || sub.topic.is_ephemeral();
            drop(sub);
            if ephemeral {
                self.node.topology_changed();
            }
        }
        self.node.clients.remove(&self.conn);
    }
}

/// The non-fatal E_FIN_FAILED / E_REQ_FAILED / E_TOUCH_FAILED for message `id`.
fn ack_failed(verb: Verb, id: [u8; MSG_ID_LEN]) -> impl FnOnce(AckError) -> NsqError {
    move |reason| NsqError::AckFailed { verb, id, reason }
}

/// Runs a write under nsqd's write deadline (one heartbeat interval; none when heartbeats
/// are disabled), so a client that stops reading cannot hold its session forever.
async fn within<F>(deadline: Option<Duration>, write: F) -> Result<(), NsqError>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    let written = match deadline {
        Some(deadline) => tokio::time::timeout(deadline, write)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
        None => write.await,
    };
    Ok(written?)
}

/// The next delivery of a subscribed client; never resolves otherwise.
async fn next_delivery(sub: &mut Option<Subscription>) -> Option<Delivery> {
    match sub {
        Some(sub) => sub.outbox.recv().await,
        None => std::future::pending().await,
    }
}

/// The next heartbeat tick; never resolves when heartbeats are disabled.
async fn tick(heartbeat: &mut Option<Interval>) -> Instant {
    match heartbeat {
        Some(interval) => interval.tick().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A ticker whose first tick is one period from now.
fn ticker(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// A validated (ASCII) name as a string.
fn ascii(name: &[u8]) -> String {
    name.iter().map(|&b| char::from(b)).collect()
}
