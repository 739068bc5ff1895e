//! One MQTT connection: CONNECT handshake, then a single task that reads packets, writes
//! deliveries, keeps the keep alive, and finally hands its session back to the registry.
//!
//! ```text
//! connect():  CONNECT (under connect_timeout) → checks → claim client id (takeover)
//!             → CONNACK → resend PUBRELs → attach the offline queue (redelivers unacked
//!             PUBLISHes with DUP=1 and their packet ids, then queued messages)
//! serve():    select! { shutdown | takeover | keep alive 1.5× | socket read | outbox }
//! finish():   DISCONNECT (5.0, on error) → detach queue → keep or discard the session → will
//! ```
//!
//! Deliveries: a persistent session (expiry > 0) receives its non-shared subscriptions through
//! its durable queue `mqtt/<client-id>` (credit = the client's window); a clean session and
//! shared subscriptions receive through the outbox directly, QoS 1/2 ones waiting in a local
//! queue (at most `max_queued_messages`) while the window is full. Each message is sent once
//! per session, with the highest granted QoS and every matching Subscription Identifier.
//!
//! # Invariants
//! - QoS 1/2 PUBLISHes in flight to the client (including QoS 2 waiting for PUBCOMP) never
//!   exceed its window (5.0 Receive Maximum, 3.1.1 `max_inflight`).
//! - An inbound QoS 2 message is routed once: a repeated PUBLISH with a packet id waiting for
//!   PUBREL only gets PUBREC again.
//! - A message taken from the queue is `fin`ished exactly when its PUBACK / PUBREC arrives, or
//!   at once when it is sent at QoS 0 or not sent at all.
//! - Nothing here awaits another client; the outbox is drained with `try_recv` into one write.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use polymq_core::envelope::now_ns;
use polymq_core::outbox::{outbox, Delivery, Outbox, Overflow, Sink};
use polymq_core::queue::Member;
use polymq_core::subject::mqtt::{filter_to_filter, parse_shared};
use polymq_core::{
    Envelope, MessageId, Protocol, RouteError, Subject, SubscriptionId, SubscriptionSpec,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Claim, PendingWill, SessionState, Stats, Sub, NEVER_EXPIRES};
use crate::error::SessionError;
use crate::frame::{
    connack, reason, Ack, Codec, ConnAck, Connect, Disconnect, FrameError, Packet, Properties,
    ProtocolVersion, Publish, QoS, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::mapping::{from_core_qos, to_publish, Message, Outbound, Undeliverable};

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
/// Read buffer grows in steps of this much.
const READ_CHUNK: usize = 8 * 1024;

/// Socket halves, buffers and codec of one connection.
struct Io<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    codec: Codec,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// Reads until one packet is decoded; `None` at end of stream.
    async fn read_packet(&mut self) -> Result<Option<Packet>, FrameError> {
        loop {
            if let Some(packet) = self.codec.decode(&mut self.rbuf)? {
                return Ok(Some(packet));
            }
            self.rbuf.reserve(READ_CHUNK);
            if self.reader.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Encodes a packet into the write buffer for protocol `v`.
    fn queue(&mut self, packet: &Packet, v: ProtocolVersion) {
        if let Err(err) = packet.encode(&mut self.wbuf, v) {
            tracing::debug!(%err, "packet not encodable, not sent");
        }
    }

    /// Writes out the buffer. Cancel-safe: what was written is consumed from the buffer.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.writer.write_all_buf(&mut self.wbuf).await?;
            self.writer.flush().await?;
        }
        Ok(())
    }
}

/// Serves one client connection until it ends.
#[tracing::instrument(skip_all, fields(proto = "mqtt", %peer, client_id))]
pub async fn run<S>(broker: Arc<Broker>, stream: S, peer: SocketAddr, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = broker.router.metrics().clone();
    metrics.connection_opened(Protocol::Mqtt);
    let (reader, writer) = tokio::io::split(stream);
    let codec = Codec::new(usize::try_from(broker.config.max_packet_size).unwrap_or(usize::MAX));
    let io = Io {
        reader,
        writer,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        codec,
    };
    let limit = Duration::from_millis(broker.config.connect_timeout_ms);
    let accepted = tokio::select! {
        () = shutdown.cancelled() => None,
        res = tokio::time::timeout(limit, connect(&broker, io)) => res.ok(),
    };
    match accepted {
        Some(Ok(conn)) => conn.serve(shutdown).await,
        Some(Err((err, mut io))) => {
            tracing::debug!(%err, "connection refused");
            let _ = io.flush().await;
            let _ = io.writer.shutdown().await;
        }
        None => tracing::debug!("no CONNECT in time"),
    }
    metrics.connection_closed(Protocol::Mqtt);
}

/// A refused handshake: the error and the socket (holding any CONNACK to send).
type Refused<S> = (SessionError, Io<S>);

/// Queues a refusing CONNACK.
fn refuse<S>(mut io: Io<S>, v: ProtocolVersion, code: u8, why: &'static str) -> Refused<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ack = ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    };
    io.queue(&Packet::ConnAck(ack), v);
    (SessionError::Protocol(why), io)
}

/// Picks the 3.1.1 return code or the 5.0 reason code.
fn code_for(v: ProtocolVersion, v3: u8, v5: u8) -> u8 {
    if v.is_v5() {
        v5
    } else {
        v3
    }
}

/// mosquitto's generated client id: `auto-` and 36 characters of random hex in UUID form.
fn assigned_client_id() -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut id = String::from("auto-");
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        id.push(char::from(
            HEX.get(fastrand::usize(..16)).copied().unwrap_or(b'0'),
        ));
    }
    id
}

/// What CONNECT settled for the new session.
struct Plan {
    client_id: String,
    assigned: bool,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    expiry: u32,
}

/// Reads and checks CONNECT, takes the client id over and answers CONNACK.
async fn connect<S>(broker: &Arc<Broker>, mut io: Io<S>) -> Result<Connection<S>, Refused<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = match io.read_packet().await {
        Ok(Some(packet)) => packet,
        Ok(None) => {
            return Err((
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into(),
                io,
            ))
        }
        Err(FrameError::UnsupportedProtocolVersion(_)) => {
            // mosquitto answers an unknown level with a 3.1.1-style CONNACK 0x01.
            let code = connack::UNACCEPTABLE_PROTOCOL_VERSION;
            return Err(refuse(
                io,
                ProtocolVersion::V311,
                code,
                "unsupported protocol level",
            ));
        }
        Err(err) => return Err((err.into(), io)),
    };
    let Packet::Connect(connect) = packet else {
        return Err((SessionError::Protocol("first packet is not CONNECT"), io));
    };
    let plan = match check_connect(broker, &connect) {
        Ok(plan) => plan,
        Err((code, why)) => return Err(refuse(io, connect.protocol, code, why)),
    };
    Ok(Connection::open(broker, io, *connect, plan).await)
}

/// mosquitto's CONNECT checks that need broker settings, in its order. `Err` carries the
/// refusing CONNACK code.
fn check_connect(broker: &Broker, connect: &Connect) -> Result<Plan, (u8, &'static str)> {
    let config = &broker.config;
    let v = connect.protocol;
    if connect.will.as_ref().is_some_and(|w| w.retain) && !config.retain_available {
        return Err((
            code_for(v, connack::NOT_AUTHORIZED, reason::RETAIN_NOT_SUPPORTED),
            "will retain",
        ));
    }
    let mut client_id = connect.client_id.clone();
    let assigned = client_id.is_empty();
    if assigned {
        if v != ProtocolVersion::V5 && (v == ProtocolVersion::V31 || !connect.clean_start) {
            return Err((connack::IDENTIFIER_REJECTED, "empty client id"));
        }
        client_id = assigned_client_id();
    }
    if connect.properties.authentication_method.is_some() {
        return Err((reason::BAD_AUTHENTICATION_METHOD, "enhanced authentication"));
    }
    if !config.authenticate(connect.username.as_deref(), connect.password.as_deref()) {
        // mosquitto answers bad credentials with "not authorised" in both versions.
        return Err((
            code_for(v, connack::NOT_AUTHORIZED, reason::NOT_AUTHORIZED),
            "not authorised",
        ));
    }
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if let Some(max) = config.max_keepalive {
        if keep_alive > max || keep_alive == 0 {
            if !v.is_v5() {
                return Err((
                    connack::IDENTIFIER_REJECTED,
                    "keep alive above max_keepalive",
                ));
            }
            keep_alive = max;
            server_keep_alive = Some(max);
        }
    }
    if let (Some(forced), true) = (config.server_keep_alive, v.is_v5()) {
        keep_alive = forced;
        server_keep_alive = Some(forced);
    }
    let expiry = match (v.is_v5(), connect.clean_start) {
        (true, _) => connect.properties.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        (false, false) => NEVER_EXPIRES,
    };
    Ok(Plan {
        client_id,
        assigned,
        keep_alive,
        server_keep_alive,
        expiry,
    })
}

/// A QoS 1/2 PUBLISH sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
enum Inflight {
    /// Taken from the durable queue: finish it on PUBACK / PUBREC.
    Queued { id: MessageId, qos: QoS },
    /// Sent straight from the outbox or as a retained message.
    Direct { qos: QoS },
}

/// A direct QoS 1/2 delivery waiting for room in the window.
#[derive(Debug)]
struct Waiting {
    msg: Arc<Envelope>,
    out: Outbound,
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
struct Connection<S> {
    broker: Arc<Broker>,
    io: Io<S>,
    v: ProtocolVersion,
    session: SessionState,
    claim: Claim,
    will: Option<PendingWill>,
    sink: Sink,
    outbox: Outbox,
    member: Option<Member>,
    inflight: HashMap<u16, Inflight>,
    waiting: VecDeque<Waiting>,
    window: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    out_aliases: HashMap<String, u16>,
    in_aliases: HashMap<u16, String>,
    keep_alive: Option<Duration>,
    recent: VecDeque<MessageId>,
    connected_at_ns: u64,
    offline_seen: usize,
    connect_expiry: u32,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Claims the client id, answers CONNACK and resumes the session.
    async fn open(broker: &Arc<Broker>, io: Io<S>, connect: Connect, plan: Plan) -> Self {
        let v = connect.protocol;
        tracing::Span::current().record("client_id", plan.client_id.as_str());
        let mut claim = broker.claim(&plan.client_id, connect.clean_start).await;
        let mut stored = claim.stored.take();
        if connect.clean_start {
            if let Some(mut old) = stored.take() {
                broker.end_session(&mut old);
            }
        }
        let session_present = stored.is_some();
        let mut session = stored.unwrap_or_else(|| SessionState::new(&plan.client_id, plan.expiry));
        session.expiry = plan.expiry;
        let config = &broker.config;
        let (sink, outbox) = outbox(config.max_queued_messages.max(64), Overflow::Drop);
        let props = &connect.properties;
        let window = if v.is_v5() {
            usize::from(props.receive_maximum.unwrap_or(u16::MAX))
        } else {
            usize::from(config.max_inflight)
        };
        let will = connect.will.map(|w| PendingWill {
            delay: w.properties.will_delay_interval.unwrap_or(0),
            message: Message {
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: w.properties,
            },
            origin: session.origin(),
        });
        let mut conn = Self {
            broker: broker.clone(),
            io,
            v,
            session,
            claim,
            will,
            sink,
            outbox,
            member: None,
            inflight: HashMap::new(),
            waiting: VecDeque::new(),
            window,
            client_max_packet: props
                .maximum_packet_size
                .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX)),
            client_alias_max: props.topic_alias_maximum.unwrap_or(0),
            out_aliases: HashMap::new(),
            in_aliases: HashMap::new(),
            keep_alive: (plan.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(plan.keep_alive) * 1500)),
            recent: VecDeque::with_capacity(RECENT),
            connected_at_ns: now_ns(),
            offline_seen: 0,
            connect_expiry: plan.expiry,
        };
        conn.send_connack(session_present, &plan);
        conn.resume();
        conn
    }

    fn send_connack(&mut self, session_present: bool, plan: &Plan) {
        let config = &self.broker.config;
        let properties = if self.v.is_v5() {
            Properties {
                receive_maximum: Some(config.receive_maximum),
                maximum_packet_size: Some(config.max_packet_size),
                topic_alias_maximum: (config.topic_alias_maximum > 0)
                    .then_some(config.topic_alias_maximum),
                assigned_client_identifier: plan.assigned.then(|| plan.client_id.clone()),
                server_keep_alive: plan.server_keep_alive,
                retain_available: (!config.retain_available).then_some(0),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        let ack = ConnAck {
            session_present,
            code: 0,
            properties,
        };
        self.send(&Packet::ConnAck(ack));
    }

    /// Resends PUBRELs, re-registers shared subscriptions and attaches the offline queue.
    fn resume(&mut self) {
        for pid in self.session.pubrel.clone() {
            self.send(&Packet::PubRel(Ack::new(pid)));
        }
        let origin = self.session.origin();
        for sub in self.session.subs.values_mut() {
            if sub.router_id.is_none() {
                let spec = SubscriptionSpec {
                    filter: sub.filter.clone(),
                    group: sub.share.clone(),
                    origin,
                    no_local: sub.options.no_local,
                    requests_only: false,
                };
                sub.router_id = Some(self.broker.router.subscribe(spec, self.sink.clone()));
            }
        }
        if self.session.expiry > 0 && self.session.queue.is_none() {
            self.session.queue = Some(self.broker.session_queue(&self.session.client_id));
        }
        self.broker.save_session(&self.session);
        if let Some(queue) = &self.session.queue {
            let member = queue.attach(self.sink.clone(), QUEUE_SUB);
            member.set_msg_timeout(NO_TIMEOUT);
            self.member = Some(member);
            self.refresh_credit();
        }
    }

    /// Runs the connection until it ends, then cleans up.
    async fn serve(mut self, shutdown: CancellationToken) {
        let end = self.run_loop(&shutdown).await;
        self.finish(end).await;
    }

    async fn run_loop(&mut self, shutdown: &CancellationToken) -> End {
        if let Err(err) = self.io.flush().await {
            return End::Error(err.into());
        }
        let kick = self.claim.kick.clone();
        let keep_alive = self.keep_alive;
        let sleep = tokio::time::sleep(keep_alive.unwrap_or(NO_TIMEOUT));
        tokio::pin!(sleep);
        loop {
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => Err(End::Error(SessionError::ShuttingDown)),
                () = kick.cancelled() => Err(End::Error(SessionError::TakenOver)),
                () = &mut sleep, if keep_alive.is_some() => {
                    Err(End::Error(SessionError::KeepAliveTimeout))
                }
                read = self.io.reader.read_buf(&mut self.io.rbuf) => match read {
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
            // A client that does not read must not stop a takeover or shutdown.
            let flushed = tokio::select! {
                res = self.flush() => res,
                () = kick.cancelled() => return End::Error(SessionError::TakenOver),
                () = shutdown.cancelled() => return End::Error(SessionError::ShuttingDown),
            };
            match (step, flushed) {
                (Err(end), _) => return end,
                (Ok(()), Err(err)) => return End::Error(err.into()),
                (Ok(()), Ok(())) => {}
            }
            self.io.rbuf.reserve(READ_CHUNK);
        }
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
            self.handle(packet).await?;
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), End> {
        let protocol = |why| Err(End::Error(SessionError::Protocol(why)));
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await.map_err(End::Error),
            Packet::PubAck(ack) => {
                self.on_puback(ack.packet_id, QoS::AtLeastOnce);
                Ok(())
            }
            Packet::PubRec(ack) => {
                self.on_pubrec(&ack);
                Ok(())
            }
            Packet::PubRel(ack) => {
                self.on_pubrel(ack.packet_id);
                Ok(())
            }
            Packet::PubComp(ack) => {
                self.on_pubcomp(ack.packet_id);
                Ok(())
            }
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
            Packet::Connect(_) => protocol("second CONNECT"),
            Packet::Auth(_) => protocol("AUTH without an authentication method"),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                protocol("server packet from a client")
            }
        }
    }

    // ---- inbound PUBLISH ---------------------------------------------------------------------

    /// Resolves the 5.0 Topic Alias of an inbound PUBLISH.
    fn resolve_topic(&mut self, publish: &mut Publish) -> Result<String, SessionError> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            if publish.topic.is_empty() {
                return Err(SessionError::Protocol("empty topic without topic alias"));
            }
            return Ok(std::mem::take(&mut publish.topic));
        };
        if alias == 0 || alias > self.broker.config.topic_alias_maximum {
            return Err(SessionError::TopicAliasInvalid);
        }
        if publish.topic.is_empty() {
            return self
                .in_aliases
                .get(&alias)
                .cloned()
                .ok_or(SessionError::Protocol("unknown topic alias"));
        }
        self.in_aliases.insert(alias, publish.topic.clone());
        Ok(std::mem::take(&mut publish.topic))
    }

    async fn on_publish(&mut self, mut publish: Publish) -> Result<(), SessionError> {
        let stats = &self.broker.stats;
        Stats::add(&stats.pub_received, 1);
        Stats::add(&stats.pub_bytes_received, publish.payload.len() as u64);
        self.broker
            .router
            .metrics()
            .message_in(Protocol::Mqtt, publish.payload.len());
        if publish.retain && !self.broker.config.retain_available {
            return Err(SessionError::RetainNotSupported);
        }
        let topic = self.resolve_topic(&mut publish)?;
        let pid = publish.packet_id;
        if publish.qos == QoS::ExactlyOnce {
            if self.session.inbound_qos2.contains(&pid) {
                self.send(&Packet::PubRec(Ack::new(pid)));
                return Ok(());
            }
            if self.v.is_v5()
                && self.session.inbound_qos2.len()
                    >= usize::from(self.broker.config.receive_maximum)
            {
                return Err(SessionError::ReceiveMaximumExceeded);
            }
        }
        let message = Message::from_publish(&publish, topic);
        let code = self.route(&message).await?;
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(Ack::with_reason(pid, code))),
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    self.session.inbound_qos2.insert(pid);
                }
                // mosquitto never reports "no matching subscribers" in PUBREC.
                let code = if code == reason::NO_MATCHING_SUBSCRIBERS {
                    0
                } else {
                    code
                };
                self.send(&Packet::PubRec(Ack::with_reason(pid, code)));
            }
        }
        Ok(())
    }

    /// Routes a message; returns the PUBACK/PUBREC reason code (always 0 for 3.1.x).
    async fn route(&mut self, message: &Message) -> Result<u8, SessionError> {
        let env = match message.to_envelope(self.session.origin()) {
            Ok(env) => Arc::new(env),
            Err(err) => {
                tracing::debug!(%err, topic = %message.topic, "topic has no canonical subject");
                return Ok(code_for(self.v, 0, reason::TOPIC_NAME_INVALID));
            }
        };
        let routed = if message.qos == QoS::AtMostOnce {
            self.broker.router.publish(env)
        } else {
            match self.broker.router.publish_durable(env).await {
                Ok(routed) => routed,
                // A 5.0 client is told and may retry; a 3.1.x one can only reconnect and resend.
                Err(RouteError::QueueFull(_)) if self.v.is_v5() => {
                    return Ok(reason::QUOTA_EXCEEDED)
                }
                Err(_) if self.v.is_v5() => return Ok(reason::UNSPECIFIED_ERROR),
                Err(err) => return Err(err.into()),
            }
        };
        let unmatched = routed.matched() == 0;
        Ok(if self.v.is_v5() && unmatched {
            reason::NO_MATCHING_SUBSCRIBERS
        } else {
            0
        })
    }

    fn on_pubrel(&mut self, pid: u16) {
        let known = self.session.inbound_qos2.remove(&pid);
        let code = if known || !self.v.is_v5() {
            0
        } else {
            reason::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(&Packet::PubComp(Ack::with_reason(pid, code)));
    }

    // ---- acknowledgements of outbound PUBLISHes ---------------------------------------------

    fn on_puback(&mut self, pid: u16, expected: QoS) {
        let matches = self.inflight.get(&pid).is_some_and(|f| f.qos() == expected);
        if !matches {
            return;
        }
        if let Some(Inflight::Queued { id, .. }) = self.inflight.remove(&pid) {
            self.finish_queued(&id);
        }
        self.after_ack();
    }

    fn on_pubrec(&mut self, ack: &Ack) {
        let pid = ack.packet_id;
        let is_qos2 = self
            .inflight
            .get(&pid)
            .is_some_and(|f| f.qos() == QoS::ExactlyOnce);
        if is_qos2 {
            if let Some(Inflight::Queued { id, .. }) = self.inflight.remove(&pid) {
                self.finish_queued(&id);
            } else {
                self.inflight.remove(&pid);
            }
            if ack.reason >= 0x80 {
                self.after_ack();
                return;
            }
            self.session.pubrel.push(pid);
        }
        // mosquitto answers PUBREL even for an unknown packet id.
        if ack.reason < 0x80 {
            self.send(&Packet::PubRel(Ack::new(pid)));
        }
    }

    fn on_pubcomp(&mut self, pid: u16) {
        let before = self.session.pubrel.len();
        self.session.pubrel.retain(|&p| p != pid);
        if self.session.pubrel.len() != before {
            self.after_ack();
        }
    }

    fn finish_queued(&mut self, id: &MessageId) {
        self.session.out_ids.remove(id);
        if let Some(member) = &self.member {
            let _ = member.fin(id);
        }
    }

    /// A window slot came free: send waiting deliveries and give the queue its credit.
    fn after_ack(&mut self) {
        while self.in_window() < self.window {
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            self.send_direct(&waiting.msg, waiting.out);
        }
        self.refresh_credit();
    }

    /// QoS 1/2 PUBLISHes the client has not completed.
    fn in_window(&self) -> usize {
        self.inflight.len() + self.session.pubrel.len()
    }

    /// Queue credit: the window less what direct deliveries and QoS 2 completions hold.
    fn refresh_credit(&self) {
        let Some(member) = &self.member else { return };
        let direct = self
            .inflight
            .values()
            .filter(|f| matches!(f, Inflight::Direct { .. }))
            .count();
        let used = direct + self.session.pubrel.len();
        let credit = self.window.saturating_sub(used);
        member.set_credit(u32::try_from(credit).unwrap_or(u32::MAX));
    }

    // ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------

    fn on_subscribe(&mut self, subscribe: Subscribe) {
        let sub_id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for (filter, options) in subscribe.filters {
            match self.add_subscription(&filter, options, sub_id) {
                Ok((granted, existed)) => {
                    codes.push(granted as u8);
                    let send = match options.retain_handling {
                        0 => true,
                        1 => !existed,
                        _ => false,
                    };
                    let shared = filter.starts_with("$share/");
                    if send && !shared && self.broker.config.retain_available {
                        retained.push((filter, granted));
                    }
                }
                Err(()) => codes.push(code_for(self.v, 0x80, reason::TOPIC_FILTER_INVALID)),
            }
        }
        let ack = SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::default(),
            codes,
        };
        self.send(&Packet::SubAck(ack));
        for (filter, granted) in retained {
            self.send_retained(&filter, granted, sub_id);
        }
    }

    /// Adds or replaces a subscription; returns the granted QoS and whether it existed.
    fn add_subscription(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> Result<(QoS, bool), ()> {
        let (share, inner) = match parse_shared(filter) {
            Ok(Some((name, inner))) => (Some(Arc::<str>::from(name)), inner),
            Ok(None) => (None, filter.to_owned()),
            Err(_) => return Err(()),
        };
        let canonical = filter_to_filter(&inner).map_err(|_| ())?;
        let existed = self.remove_subscription(filter);
        let spec = SubscriptionSpec {
            filter: canonical.clone(),
            group: share.clone(),
            origin: self.session.origin(),
            no_local: options.no_local,
            requests_only: false,
        };
        let router = &self.broker.router;
        let router_id = match (&self.session.queue, &share) {
            (Some(queue), None) => router.subscribe_queue(spec, queue.clone()),
            _ => router.subscribe(spec, self.sink.clone()),
        };
        let sub = Sub {
            options,
            sub_id,
            filter: canonical,
            share,
            router_id: Some(router_id),
        };
        self.session.subs.insert(filter.to_owned(), sub);
        Ok((options.qos, existed))
    }

    /// Drops a subscription by its filter text; true if it existed.
    fn remove_subscription(&mut self, filter: &str) -> bool {
        let Some(mut sub) = self.session.subs.remove(filter) else {
            return false;
        };
        if let Some(id) = sub.router_id.take() {
            self.broker.router.unsubscribe(id);
        }
        true
    }

    fn send_retained(&mut self, filter: &str, granted: QoS, sub_id: Option<u32>) {
        let Some(sub) = self.session.subs.get(filter) else {
            return;
        };
        let now = now_ns();
        for msg in self.broker.router.retained(&sub.filter) {
            if msg.is_expired(now) {
                continue;
            }
            let out = Outbound {
                qos: granted.min(from_core_qos(msg.qos)),
                retain: true,
                subscription_identifiers: sub_id.into_iter().collect(),
                ..Outbound::default()
            };
            self.send_direct(&msg, out);
        }
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::new();
        for filter in &unsubscribe.filters {
            let existed = self.remove_subscription(filter);
            codes.push(if existed {
                0
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.broker.save_session(&self.session);
        if !self.v.is_v5() {
            codes.clear();
        }
        let ack = UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Properties::default(),
            codes,
        };
        self.send(&Packet::UnsubAck(ack));
    }

    // ---- DISCONNECT ---------------------------------------------------------------------------

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

    // ---- outbound deliveries ------------------------------------------------------------------

    fn deliver(&mut self, delivery: Delivery) {
        if delivery.sub == QUEUE_SUB {
            self.deliver_queued(&delivery);
        } else {
            self.deliver_direct(&delivery);
        }
    }

    /// Highest granted QoS, Subscription Identifiers and Retain As Published over the
    /// session's non-shared subscriptions that match `subject`.
    fn match_options(&self, subject: &Subject) -> Option<(QoS, Vec<u32>, bool)> {
        let mut found: Option<(QoS, Vec<u32>, bool)> = None;
        for sub in self.session.subs.values().filter(|s| s.share.is_none()) {
            if !sub.filter.matches(subject) {
                continue;
            }
            let entry = found.get_or_insert((QoS::AtMostOnce, Vec::new(), false));
            entry.0 = entry.0.max(sub.options.qos);
            entry.1.extend(sub.sub_id);
            entry.2 |= sub.options.retain_as_published;
        }
        found
    }

    fn retain_flag(&self, msg: &Envelope, as_published: bool) -> bool {
        self.v.is_v5() && as_published && msg.retain
    }

    fn deliver_queued(&mut self, delivery: &Delivery) {
        let msg = &delivery.msg;
        let Some((granted, sub_ids, rap)) = self.match_options(&msg.subject) else {
            self.finish_queued(&msg.id);
            return;
        };
        let qos = granted.min(from_core_qos(msg.qos));
        if delivery.attempts <= 1
            && msg.timestamp_ns < self.connected_at_ns
            && !self.admit_offline(qos)
        {
            Stats::add(&self.broker.stats.pub_dropped, 1);
            self.finish_queued(&msg.id);
            return;
        }
        let mut out = Outbound {
            qos,
            retain: self.retain_flag(msg, rap),
            subscription_identifiers: sub_ids,
            ..Outbound::default()
        };
        if qos == QoS::AtMostOnce {
            self.write_publish(msg, out);
            self.finish_queued(&msg.id);
            return;
        }
        let reused = self.session.out_ids.get(&msg.id).copied();
        out.dup = reused.is_some() || delivery.attempts > 1;
        out.packet_id = reused.unwrap_or_else(|| self.next_packet_id());
        if self.write_publish(msg, out.clone()) {
            self.session.out_ids.insert(msg.id, out.packet_id);
            self.inflight
                .insert(out.packet_id, Inflight::Queued { id: msg.id, qos });
        } else {
            self.finish_queued(&msg.id);
        }
    }

    /// The offline-queue rules for a message queued before this connection: QoS 0 only with
    /// `queue_qos0`, and at most `max_queued_messages` of them.
    fn admit_offline(&mut self, qos: QoS) -> bool {
        let config = &self.broker.config;
        if qos == QoS::AtMostOnce && !config.queue_qos0 {
            return false;
        }
        self.offline_seen += 1;
        self.offline_seen <= config.max_queued_messages
    }

    fn deliver_direct(&mut self, delivery: &Delivery) {
        let msg = &delivery.msg;
        let Some(sub) = self
            .session
            .subs
            .values()
            .find(|s| s.router_id == Some(delivery.sub))
        else {
            return;
        };
        let (granted, sub_ids, rap) = if sub.share.is_some() {
            (
                sub.options.qos,
                sub.sub_id.into_iter().collect(),
                sub.options.retain_as_published,
            )
        } else {
            if self.recent.contains(&msg.id) {
                return;
            }
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(msg.id);
            let Some(found) = self.match_options(&msg.subject) else {
                return;
            };
            found
        };
        let out = Outbound {
            qos: granted.min(from_core_qos(msg.qos)),
            retain: self.retain_flag(msg, rap),
            subscription_identifiers: sub_ids,
            ..Outbound::default()
        };
        self.send_direct(msg, out);
    }

    /// Sends now (QoS 0, or QoS 1/2 with room in the window) or waits for room.
    fn send_direct(&mut self, msg: &Arc<Envelope>, mut out: Outbound) {
        if out.qos == QoS::AtMostOnce {
            self.write_publish(msg, out);
            return;
        }
        if self.in_window() >= self.window {
            if self.waiting.len() < self.broker.config.max_queued_messages {
                self.waiting.push_back(Waiting {
                    msg: msg.clone(),
                    out,
                });
            } else {
                Stats::add(&self.broker.stats.pub_dropped, 1);
                self.broker.router.metrics().dropped(Protocol::Mqtt, 1);
            }
            return;
        }
        out.packet_id = self.next_packet_id();
        let qos = out.qos;
        let pid = out.packet_id;
        if self.write_publish(msg, out) {
            self.inflight.insert(pid, Inflight::Direct { qos });
            self.refresh_credit();
        }
    }

    /// Encodes a PUBLISH unless the message expired, has no MQTT topic, or is larger than the
    /// client accepts (then it is dropped as if sent, [MQTT-3.1.2-25]). True when written.
    fn write_publish(&mut self, msg: &Arc<Envelope>, out: Outbound) -> bool {
        let mut publish = match to_publish(msg, out, self.v.is_v5()) {
            Ok(publish) => publish,
            Err(Undeliverable::Expired) => return false,
            Err(Undeliverable::NotRepresentable) => {
                self.broker.router.metrics().dropped(Protocol::Mqtt, 1);
                return false;
            }
        };
        self.apply_alias(&mut publish);
        let packet = Packet::Publish(publish);
        if packet.encoded_len(self.v) > self.client_max_packet {
            Stats::add(&self.broker.stats.pub_dropped, 1);
            return false;
        }
        let stats = &self.broker.stats;
        Stats::add(&stats.pub_sent, 1);
        Stats::add(&stats.pub_bytes_sent, msg.payload.len() as u64);
        self.broker
            .router
            .metrics()
            .message_out(Protocol::Mqtt, msg.payload.len());
        self.send(&packet);
        true
    }

    /// Replaces the topic with an alias when the client accepts aliases (5.0).
    fn apply_alias(&mut self, publish: &mut Publish) {
        if self.client_alias_max == 0 {
            return;
        }
        if let Some(&alias) = self.out_aliases.get(&publish.topic) {
            publish.topic.clear();
            publish.properties.topic_alias = Some(alias);
            return;
        }
        let next = self.out_aliases.len() + 1;
        if let Ok(alias) = u16::try_from(next) {
            if alias <= self.client_alias_max {
                self.out_aliases.insert(publish.topic.clone(), alias);
                publish.properties.topic_alias = Some(alias);
            }
        }
    }

    /// A packet id not in use by an unacknowledged outbound PUBLISH or PUBREL.
    fn next_packet_id(&mut self) -> u16 {
        for _ in 0..=u16::MAX {
            let pid = self.session.next_pid.max(1);
            self.session.next_pid = pid.checked_add(1).unwrap_or(1);
            let busy = self.inflight.contains_key(&pid) || self.session.pubrel.contains(&pid);
            if !busy {
                return pid;
            }
        }
        1
    }

    fn send(&mut self, packet: &Packet) {
        Stats::add(&self.broker.stats.msgs_sent, 1);
        self.io.queue(packet, self.v);
    }

    // ---- the end ------------------------------------------------------------------------------

    async fn finish(mut self, end: End) {
        let (will_due, error) = match end {
            End::Disconnect { will } => (will, None),
            End::Error(err) => (true, Some(err)),
        };
        if let Some(err) = &error {
            tracing::debug!(client = %self.session.client_id, %err, "connection ends");
            if let Some(packet) = err.to_wire(self.v) {
                self.send(&packet);
            }
        }
        // A client that stopped reading gets no more than a moment to take the last bytes.
        let _ = tokio::time::timeout(FINAL_FLUSH, self.flush()).await;
        let _ = tokio::time::timeout(FINAL_FLUSH, self.io.writer.shutdown()).await;
        self.member = None;
        let taken_over = matches!(error, Some(SessionError::TakenOver));
        let taker_clean = self.claim.taker_clean_start.load(Ordering::Relaxed);
        let ends = self.session.expiry == 0 || (taken_over && taker_clean);
        let will = self.will.take().filter(|_| will_due);
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
            self.broker.save_session(&self.session);
            for sub in self.session.subs.values_mut().filter(|s| s.share.is_some()) {
                if let Some(id) = sub.router_id.take() {
                    self.broker.router.unsubscribe(id);
                }
            }
            Some(std::mem::replace(
                &mut self.session,
                SessionState::new("", 0),
            ))
        };
        self.broker.release(&self.claim, kept, will);
    }
}

impl Inflight {
    fn qos(self) -> QoS {
        match self {
            Self::Queued { qos, .. } | Self::Direct { qos } => qos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_ids_look_like_mosquittos() {
        let id = assigned_client_id();
        assert_eq!(id.len(), 41);
        assert!(id.starts_with("auto-"));
        let groups: Vec<usize> = id["auto-".len()..].split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert!(id["auto-".len()..]
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(assigned_client_id(), id);
    }

    #[test]
    fn refusal_codes_follow_the_version() {
        let v3 = ProtocolVersion::V311;
        let v5 = ProtocolVersion::V5;
        assert_eq!(
            code_for(v3, connack::NOT_AUTHORIZED, reason::NOT_AUTHORIZED),
            5
        );
        assert_eq!(
            code_for(v5, connack::NOT_AUTHORIZED, reason::NOT_AUTHORIZED),
            0x87
        );
    }
}
