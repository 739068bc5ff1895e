//! A raw MQTT client for tests that need packet-level control: it speaks through the
//! broker crate's own codec (whose wire format the golden-byte tests pin), with every wait
//! bounded by [`STEP`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use polymq_mqtt::frame::{
    Ack, Codec, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    SubAck, Subscribe, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Decoder;

use super::STEP;

/// A raw MQTT client speaking through the crate's codec.
pub struct Client {
    pub stream: TcpStream,
    pub codec: Codec,
    pub buf: BytesMut,
    pub v: ProtocolVersion,
}

impl Client {
    pub async fn raw(addr: SocketAddr, v: ProtocolVersion) -> Self {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Self {
            stream,
            codec: Codec::with_version(v, usize::MAX),
            buf: BytesMut::new(),
            v,
        }
    }

    /// Connects with `connect` and returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut client = Self::raw(addr, connect.protocol).await;
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects a clean session and checks it was accepted.
    pub async fn connect(addr: SocketAddr, v: ProtocolVersion, id: &str) -> Self {
        let (client, ack) = Self::connect_with(addr, connect(v, id)).await;
        assert_eq!(ack.code, 0, "{ack:?}");
        client
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(&mut out, self.v).unwrap();
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        timeout(STEP, self.stream.write_all(bytes))
            .await
            .unwrap()
            .unwrap();
    }

    /// The next packet, or `None` when the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        timeout(STEP, self.recv_unbounded())
            .await
            .expect("no packet in time")
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(packet) = timeout(wait, self.recv_unbounded()).await {
            panic!("unexpected packet {packet:?}");
        }
    }

    pub async fn recv_unbounded(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(packet);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    pub async fn expect_closed(&mut self) {
        assert_eq!(self.recv().await, None);
    }

    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub async fn subscribe_with(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        props: Properties,
    ) -> Vec<u8> {
        let filters = filters.iter().map(|(f, o)| ((*f).to_owned(), *o)).collect();
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: props,
            filters,
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(SubAck {
                packet_id: 1,
                codes,
                ..
            })) => codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> u8 {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_with(&[(filter, options)], Properties::default())
            .await[0]
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool, pid: u16) {
        self.send(publish(topic, payload, qos, retain, pid)).await;
    }

    /// Publishes and completes the QoS flow.
    pub async fn publish_acked(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.publish(topic, payload, qos, retain, 10).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => assert!(matches!(self.recv().await, Some(Packet::PubAck(_)))),
            QoS::ExactlyOnce => {
                assert!(matches!(self.recv().await, Some(Packet::PubRec(_))));
                self.send(Packet::PubRel(Ack::new(10))).await;
                assert!(matches!(self.recv().await, Some(Packet::PubComp(_))));
            }
        }
    }

    /// A PINGREQ round trip: everything sent before it has been handled.
    pub async fn sync(&mut self) {
        self.send(Packet::PingReq).await;
        assert_eq!(self.recv().await, Some(Packet::PingResp));
    }

    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Disconnect::default())).await;
        self.expect_closed().await;
    }

    /// Connects a persistent session (3.1.1 CleanSession=0, 5.0 Session Expiry 300) and
    /// returns it with Session Present.
    pub async fn persistent(addr: SocketAddr, v: ProtocolVersion, id: &str) -> (Self, bool) {
        let mut req = connect(v, id);
        req.clean_start = false;
        if v.is_v5() {
            req.properties.session_expiry_interval = Some(300);
        }
        let (client, ack) = Self::connect_with(addr, req).await;
        assert_eq!(ack.code, 0, "{ack:?}");
        (client, ack.session_present)
    }

    /// Reads until the broker closes the connection.
    pub async fn until_closed(&mut self) {
        while self.recv().await.is_some() {}
    }
}

pub fn connect(v: ProtocolVersion, id: &str) -> Connect {
    Connect {
        protocol: v,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: id.to_owned(),
        will: None,
        username: None,
        password: None,
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, pid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_owned(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}
