//! The stored form of a persistent session, kept in the store's metadata under
//! `mqtt/session/<client-id>` so a restart with the disk backend keeps routing into the
//! session's durable queue `mqtt/<client-id>` and resumes its QoS 1/2 flows (MQTT 5 §4.4):
//! the packet ids of queued messages sent and not acknowledged, the PUBRELs waiting for
//! PUBCOMP and the inbound QoS 2 packet ids waiting for PUBREL.
//!
//! ```text
//! u8 format (2) | u32 Session Expiry Interval | u16 count
//! count × ( u16 len + filter as the client wrote it | u8 options | u32 subscription id, 0 = none )
//! u16 next packet id
//! u32 count × ( [16] message id | u16 packet id )    outbound PUBLISH not acknowledged
//! u32 count × u16 packet id                          outbound PUBREL, in PUBREC order
//! u32 count × u16 packet id                          inbound QoS 2 waiting for PUBREL
//! options = QoS | No Local << 2 | Retain As Published << 3 | Retain Handling << 4
//! ```
//! Format 1 is format 2 without the part after the subscriptions (no flows in flight).
//!
//! # Invariants
//! - `decode(encode(s)) == s`; decoding checks every length first and never panics.
//! - A format 1 record decodes with an empty [`StoredFlight`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use polymq_core::MessageId;

use crate::frame::{QoS, SubscriptionOptions};

/// Metadata key prefix of stored sessions.
pub const SESSION_META: &str = "mqtt/session/";

/// Subscriptions only.
const FORMAT_SUBS: u8 = 1;
/// Subscriptions and the flows in flight.
const FORMAT: u8 = 2;
/// Bytes of one stored outbound PUBLISH: message id and packet id.
const OUTGOING_LEN: usize = 18;

/// One stored subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSub {
    /// Topic filter as the client wrote it (may start with `$share/`).
    pub filter: String,
    /// Subscription options.
    pub options: SubscriptionOptions,
    /// Subscription Identifier.
    pub sub_id: Option<u32>,
}

/// The QoS 1/2 flows of a session in flight, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFlight {
    /// Next packet id to try for an outbound PUBLISH.
    pub next_pid: u16,
    /// Queued messages sent and not acknowledged, with their packet ids.
    pub outgoing: Vec<(MessageId, u16)>,
    /// Outbound QoS 2 packet ids acknowledged by PUBREC, waiting for PUBCOMP.
    pub pubrel: Vec<u16>,
    /// Inbound QoS 2 packet ids routed, waiting for PUBREL.
    pub inbound: Vec<u16>,
}

/// A persistent session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Session Expiry Interval in seconds.
    pub expiry: u32,
    /// Its subscriptions.
    pub subs: Vec<StoredSub>,
    /// Its flows in flight.
    pub flight: StoredFlight,
}

fn options_byte(o: SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling & 0x03) << 4
}

fn options_from(byte: u8) -> Option<SubscriptionOptions> {
    Some(SubscriptionOptions {
        qos: QoS::try_from(byte & 0x03).ok()?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling: (byte >> 4) & 0x03,
    })
}

/// Encodes a session for the store.
pub fn encode(session: &StoredSession) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u32(session.expiry);
    let subs: Vec<&StoredSub> = session
        .subs
        .iter()
        .filter(|s| s.filter.len() <= usize::from(u16::MAX))
        .collect();
    out.put_u16(u16::try_from(subs.len()).unwrap_or(u16::MAX));
    for sub in subs.into_iter().take(usize::from(u16::MAX)) {
        out.put_u16(u16::try_from(sub.filter.len()).unwrap_or(0));
        out.put_slice(sub.filter.as_bytes());
        out.put_u8(options_byte(sub.options));
        out.put_u32(sub.sub_id.unwrap_or(0));
    }
    encode_flight(&session.flight, &mut out);
    out.freeze()
}

fn encode_flight(flight: &StoredFlight, out: &mut BytesMut) {
    out.put_u16(flight.next_pid);
    out.put_u32(u32::try_from(flight.outgoing.len()).unwrap_or(u32::MAX));
    for (id, pid) in flight.outgoing.iter().take(u32::MAX as usize) {
        out.put_slice(&id.0);
        out.put_u16(*pid);
    }
    for pids in [&flight.pubrel, &flight.inbound] {
        out.put_u32(u32::try_from(pids.len()).unwrap_or(u32::MAX));
        for pid in pids.iter().take(u32::MAX as usize) {
            out.put_u16(*pid);
        }
    }
}

/// Decodes a stored session (format 1 or 2); `None` for anything that is not one.
pub fn decode(mut buf: Bytes) -> Option<StoredSession> {
    if buf.remaining() < 7 {
        return None;
    }
    let format = buf.get_u8();
    if format != FORMAT && format != FORMAT_SUBS {
        return None;
    }
    let expiry = buf.get_u32();
    let count = buf.get_u16();
    let mut subs = Vec::with_capacity(usize::from(count).min(1024));
    for _ in 0..count {
        if buf.remaining() < 2 {
            return None;
        }
        let len = usize::from(buf.get_u16());
        if buf.remaining() < len + 5 {
            return None;
        }
        let filter = String::from_utf8(buf.split_to(len).to_vec()).ok()?;
        let options = options_from(buf.get_u8())?;
        let sub_id = Some(buf.get_u32()).filter(|&id| id != 0);
        subs.push(StoredSub {
            filter,
            options,
            sub_id,
        });
    }
    let flight = if format == FORMAT {
        decode_flight(&mut buf)?
    } else {
        StoredFlight::default()
    };
    buf.is_empty().then_some(StoredSession {
        expiry,
        subs,
        flight,
    })
}

fn decode_flight(buf: &mut Bytes) -> Option<StoredFlight> {
    if buf.remaining() < 2 {
        return None;
    }
    let next_pid = buf.get_u16();
    let count = decode_count(buf, OUTGOING_LEN)?;
    let mut outgoing = Vec::with_capacity(count);
    for _ in 0..count {
        let mut id = [0u8; 16];
        buf.copy_to_slice(&mut id);
        outgoing.push((MessageId(id), buf.get_u16()));
    }
    let pubrel = decode_pids(buf)?;
    let inbound = decode_pids(buf)?;
    Some(StoredFlight {
        next_pid,
        outgoing,
        pubrel,
        inbound,
    })
}

/// Reads a u32 count of items of `len` bytes, checking that they are all there.
fn decode_count(buf: &mut Bytes, len: usize) -> Option<usize> {
    if buf.remaining() < 4 {
        return None;
    }
    let count = usize::try_from(buf.get_u32()).ok()?;
    (buf.remaining() >= count.checked_mul(len)?).then_some(count)
}

fn decode_pids(buf: &mut Bytes) -> Option<Vec<u16>> {
    let count = decode_count(buf, 2)?;
    Some((0..count).map(|_| buf.get_u16()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn session() -> impl Strategy<Value = StoredSession> {
        let sub = (
            "[a-z/+#$]{1,20}",
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            0u8..3,
            any::<u32>(),
        )
            .prop_map(|(filter, q, nl, rap, rh, id)| StoredSub {
                filter,
                options: SubscriptionOptions {
                    qos: QoS::try_from(q).unwrap_or_default(),
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: rh,
                },
                sub_id: Some(id).filter(|&i| i != 0),
            });
        let flight = (
            any::<u16>(),
            proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..5),
            proptest::collection::vec(any::<u16>(), 0..5),
            proptest::collection::vec(any::<u16>(), 0..5),
        )
            .prop_map(|(next_pid, outgoing, pubrel, inbound)| StoredFlight {
                next_pid,
                outgoing: outgoing
                    .into_iter()
                    .map(|(id, pid)| (MessageId(id), pid))
                    .collect(),
                pubrel,
                inbound,
            });
        (any::<u32>(), proptest::collection::vec(sub, 0..5), flight).prop_map(
            |(expiry, subs, flight)| StoredSession {
                expiry,
                subs,
                flight,
            },
        )
    }

    proptest! {
        #[test]
        fn round_trip(s in session()) {
            prop_assert_eq!(decode(encode(&s)), Some(s));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Bytes::from(bytes));
        }

        #[test]
        fn garbage_after_a_valid_prefix_never_panics(
            s in session(),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let full = encode(&s);
            let mut bytes = full.slice(..cut.index(full.len() + 1)).to_vec();
            bytes.extend(tail);
            let _ = decode(Bytes::from(bytes));
        }
    }

    /// Format 1 as the previous release wrote it.
    fn format_1(expiry: u32, filter: &str, options: u8, sub_id: u32) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(1);
        out.put_u32(expiry);
        out.put_u16(1);
        out.put_u16(u16::try_from(filter.len()).unwrap());
        out.put_slice(filter.as_bytes());
        out.put_u8(options);
        out.put_u32(sub_id);
        out.freeze()
    }

    #[test]
    fn format_1_records_decode_with_nothing_in_flight() {
        let decoded = decode(format_1(300, "$share/g/a/#", 0x01 | 0x04, 7)).unwrap();
        assert_eq!(decoded.expiry, 300);
        assert_eq!(decoded.flight, StoredFlight::default());
        assert_eq!(
            decoded.subs,
            vec![StoredSub {
                filter: "$share/g/a/#".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    ..SubscriptionOptions::default()
                },
                sub_id: Some(7),
            }]
        );
    }

    #[test]
    fn huge_counts_are_rejected_without_allocating() {
        let mut bytes = BytesMut::from(
            &encode(&StoredSession {
                expiry: 1,
                subs: Vec::new(),
                flight: StoredFlight::default(),
            })[..],
        );
        bytes.truncate(9);
        bytes.put_u32(u32::MAX);
        assert_eq!(decode(bytes.freeze()), None);
    }

    #[test]
    fn truncated_records_are_rejected() {
        let s = StoredSession {
            expiry: 5,
            subs: vec![StoredSub {
                filter: "a/#".into(),
                options: SubscriptionOptions::default(),
                sub_id: Some(3),
            }],
            flight: StoredFlight {
                next_pid: 9,
                outgoing: vec![(MessageId([7; 16]), 4)],
                pubrel: vec![5, 6],
                inbound: vec![8],
            },
        };
        let full = encode(&s);
        for cut in 0..full.len() {
            assert_eq!(decode(full.slice(..cut)), None, "cut at {cut}");
        }
    }
}
