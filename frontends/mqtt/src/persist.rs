//! The stored form of a persistent session's subscriptions, kept in the store's metadata under
//! `mqtt/session/<client-id>` so a restart with the disk backend keeps routing into the
//! session's durable queue `mqtt/<client-id>`.
//!
//! ```text
//! u8 format (1) | u32 Session Expiry Interval | u16 count
//! count × ( u16 len + filter as the client wrote it | u8 options | u32 subscription id, 0 = none )
//! options = QoS | No Local << 2 | Retain As Published << 3 | Retain Handling << 4
//! ```
//!
//! # Invariants
//! - `decode(encode(s)) == s`; decoding checks every length first and never panics.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{QoS, SubscriptionOptions};

/// Metadata key prefix of stored sessions.
pub const SESSION_META: &str = "mqtt/session/";

const FORMAT: u8 = 1;

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

/// A persistent session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Session Expiry Interval in seconds.
    pub expiry: u32,
    /// Its subscriptions.
    pub subs: Vec<StoredSub>,
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
    out.freeze()
}

/// Decodes a stored session; `None` for anything that is not one.
pub fn decode(mut buf: Bytes) -> Option<StoredSession> {
    if buf.remaining() < 7 || buf.get_u8() != FORMAT {
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
    buf.is_empty().then_some(StoredSession { expiry, subs })
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
        (any::<u32>(), proptest::collection::vec(sub, 0..5))
            .prop_map(|(expiry, subs)| StoredSession { expiry, subs })
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
        };
        let full = encode(&s);
        for cut in 0..full.len() {
            assert_eq!(decode(full.slice(..cut)), None, "cut at {cut}");
        }
    }
}
