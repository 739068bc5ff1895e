//! CONNECT: the checks mosquitto makes, client id takeover, CONNACK and session resume.
//!
//! # Invariants
//! - A refused CONNECT gets at most one CONNACK (code >= 0x80 / non-zero) and no other packet.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use polymq_core::envelope::now_ns;
use polymq_core::SubscriptionSpec;
use tokio_util::sync::CancellationToken;

use super::{Connection, Io, LazyOutbox, NO_TIMEOUT, QUEUE_SUB};
use crate::broker::{Broker, PendingWill, SessionState, NEVER_EXPIRES};
use crate::error::SessionError;
use crate::frame::{
    connack, reason, Ack, ConnAck, Connect, FrameError, Packet, Properties, ProtocolVersion,
    MAX_PACKET_SIZE,
};
use crate::mapping::Message;

/// A refused handshake: the error and the socket (holding any CONNACK to send).
type Refused = (SessionError, Io);

/// Queues a refusing CONNACK.
fn refuse(mut io: Io, v: ProtocolVersion, code: u8, why: &'static str) -> Refused {
    let ack = ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    };
    io.queue(&Packet::ConnAck(ack), v);
    (SessionError::Protocol(why), io)
}

/// Picks the 3.1.1 return code or the 5.0 reason code.
pub(super) fn code_for(v: ProtocolVersion, v3: u8, v5: u8) -> u8 {
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
pub(super) async fn connect(
    broker: &Arc<Broker>,
    mut io: Io,
    token: &CancellationToken,
) -> Result<Box<Connection>, Refused> {
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
    Ok(Connection::open(broker, io, *connect, plan, token).await)
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

impl Connection {
    /// Claims the client id, answers CONNACK and resumes the session. Boxed: the task of
    /// every connection then holds a pointer, not the state itself.
    async fn open(
        broker: &Arc<Broker>,
        io: Io,
        connect: Connect,
        plan: Plan,
        token: &CancellationToken,
    ) -> Box<Self> {
        let v = connect.protocol;
        tracing::Span::current().record("client_id", plan.client_id.as_str());
        let (claim, mut stored) = broker
            .claim(&plan.client_id, connect.clean_start, token)
            .await;
        if connect.clean_start {
            if let Some(mut old) = stored.take() {
                broker.end_session(&mut old);
            }
        }
        let session_present = stored.is_some();
        let mut session = stored.map_or_else(
            || SessionState::new(&plan.client_id, plan.expiry),
            |stored| *stored,
        );
        session.expiry = plan.expiry;
        let config = &broker.config;
        let props = &connect.properties;
        // mosquitto keeps `max_inflight_messages` for a 5.0 client that sends no Receive
        // Maximum (the spec's default of 65535 is only an upper bound).
        let window = usize::from(props.receive_maximum.unwrap_or(config.max_inflight));
        let will = connect.will.map(|w| {
            Box::new(PendingWill {
                delay: w.properties.will_delay_interval.unwrap_or(0),
                message: Message {
                    topic: w.topic,
                    payload: w.payload,
                    qos: w.qos,
                    retain: w.retain,
                    properties: w.properties,
                },
                origin: session.origin(),
            })
        });
        let mut conn = Box::new(Self {
            broker: broker.clone(),
            io,
            v,
            session,
            claim,
            will,
            outbox: LazyOutbox::new(config.max_queued_messages.max(64)),
            member: None,
            inflight: HashMap::new(),
            waiting: VecDeque::new(),
            window,
            client_max_packet: props
                .maximum_packet_size
                .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX)),
            client_alias_max: props.topic_alias_maximum.unwrap_or(0),
            aliases: None,
            keep_alive: (plan.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(plan.keep_alive) * 1500)),
            recent: VecDeque::new(),
            connected_at_ns: now_ns(),
            offline_seen: 0,
            connect_expiry: plan.expiry,
            replay: false,
        });
        conn.send_connack(session_present, &plan);
        conn.resume();
        conn
    }

    fn send_connack(&mut self, session_present: bool, plan: &Plan) {
        let config = &self.broker.config;
        let properties = if self.v.is_v5() {
            Properties {
                receive_maximum: Some(config.receive_maximum),
                // A limit the protocol itself imposes is no limit to advertise (mosquitto
                // sends none unless `max_packet_size` is set).
                maximum_packet_size: (config.max_packet_size < MAX_PACKET_SIZE)
                    .then_some(config.max_packet_size),
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
            // MQTT 3.1 has no Session Present flag: the byte is reserved there.
            session_present: session_present && self.v != ProtocolVersion::V31,
            code: 0,
            properties,
        };
        self.send(&Packet::ConnAck(ack));
    }

    /// Resends the PUBRELs of direct deliveries, re-registers shared subscriptions and
    /// attaches the offline queue, which hands back its in-flight messages in the order they
    /// were first sent (PUBLISH with DUP=1, or PUBREL once PUBREC'd), then queued ones.
    fn resume(&mut self) {
        for pid in self.session.pubrel.clone() {
            if !self.is_queued_pubrel(pid) {
                self.send(&Packet::PubRel(Ack::new(pid)));
            }
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
                let sink = self.outbox.sink();
                sub.router_id = Some(self.broker.router.subscribe(spec, sink));
            }
        }
        if self.session.expiry > 0 && self.session.queue.is_none() {
            self.session.queue = Some(self.broker.session_queue(&self.session.client_id));
        }
        self.replay = !self.session.out_ids.is_empty();
        self.broker.save_session(&self.session);
        if let Some(queue) = &self.session.queue {
            let member = queue.attach(self.outbox.sink(), QUEUE_SUB);
            member.set_msg_timeout(NO_TIMEOUT);
            self.member = Some(member);
            self.refresh_credit();
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
