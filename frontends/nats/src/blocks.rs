//! Header blocks exactly as clients published them, for NATS-to-NATS delivery.
//!
//! nats-server forwards an `HPUB` header block byte for byte. The core's [`Envelope`] carries
//! headers only as an ordered list of names and values, which renders back to the same bytes
//! for the canonical form clients write (`Name: Value`) but not for every block a client may
//! send: `A:b`, padded values, lines without `:`, an empty block (`NATS/1.0\r\n\r\n`, which
//! nats-server still delivers as `HMSG`) or a block without the version line. For those
//! envelopes [`HeaderBlocks`] keeps the published bytes beside the envelope, keyed by its
//! allocation, and sessions deliver them in place of the rendered list. Other protocols see
//! the parsed headers.
//!
//! # Invariants
//! - An entry holds a `Weak` to its envelope, so the allocation (and with it the key) cannot
//!   be reused while the entry exists; an entry is only ever returned for its own envelope.
//! - Entries of dropped envelopes are swept whenever the table has doubled since the last
//!   sweep, so it holds at most about twice the live envelopes with odd blocks.
//! - An envelope re-created by the core (a copy in a new allocation) is simply not found:
//!   its headers are rendered from the list, as for any other protocol's message.
//! - Map guards live only for one map operation, never across an `.await`; the map is
//!   sharded, so deliveries on different sessions rarely meet on a lock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use polymq_core::Envelope;

/// Table size below which no sweep runs.
const MIN_SWEEP: usize = 64;

/// Published header blocks that the envelope's header list does not reproduce.
#[derive(Debug, Default)]
pub(crate) struct HeaderBlocks {
    /// Whether anything was ever kept: until then deliveries skip the map.
    used: AtomicBool,
    entries: DashMap<usize, (Weak<Envelope>, Bytes)>,
    /// Entries added since the last sweep.
    added: AtomicUsize,
    /// Entries left by the last sweep; held while sweeping.
    live: Mutex<usize>,
}

fn key(msg: &Arc<Envelope>) -> usize {
    Arc::as_ptr(msg) as usize
}

impl HeaderBlocks {
    /// Remembers `block` as the wire form of `msg`'s headers.
    pub(crate) fn insert(&self, msg: &Arc<Envelope>, block: &[u8]) {
        self.used.store(true, Ordering::Relaxed);
        let added = self.added.fetch_add(1, Ordering::Relaxed) + 1;
        if added >= MIN_SWEEP {
            self.sweep(added);
        }
        let entry = (Arc::downgrade(msg), Bytes::copy_from_slice(block));
        self.entries.insert(key(msg), entry);
    }

    /// Drops the entries of dropped envelopes once the table may have doubled.
    fn sweep(&self, added: usize) {
        let Some(mut live) = self.live.try_lock() else {
            return;
        };
        if added < (*live).max(MIN_SWEEP) {
            return;
        }
        self.added.store(0, Ordering::Relaxed);
        self.entries.retain(|_, (weak, _)| weak.strong_count() > 0);
        *live = self.entries.len();
    }

    /// The block `msg` was published with, when its header list does not reproduce it.
    pub(crate) fn get(&self, msg: &Arc<Envelope>) -> Option<Bytes> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        let entry = self.entries.get(&key(msg))?;
        let (weak, block) = entry.value();
        std::ptr::eq(weak.as_ptr(), Arc::as_ptr(msg)).then(|| block.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polymq_core::{ConnId, Origin, Protocol, Subject};

    fn envelope() -> Arc<Envelope> {
        Arc::new(Envelope::new(
            Subject::new("a").unwrap(),
            Bytes::new(),
            Origin {
                protocol: Protocol::Nats,
                conn: ConnId(1),
            },
        ))
    }

    #[test]
    fn blocks_belong_to_their_envelope_only() {
        let blocks = HeaderBlocks::default();
        let (a, b) = (envelope(), envelope());
        assert_eq!(blocks.get(&a), None);
        blocks.insert(&a, b"NATS/1.0\r\nA:b\r\n\r\n");
        assert_eq!(
            blocks.get(&a).as_deref(),
            Some(&b"NATS/1.0\r\nA:b\r\n\r\n"[..])
        );
        assert_eq!(blocks.get(&b), None);
        let copy = Arc::new((*a).clone());
        assert_eq!(blocks.get(&copy), None);
    }

    #[test]
    fn dropped_envelopes_are_swept() {
        let blocks = HeaderBlocks::default();
        let keep = envelope();
        blocks.insert(&keep, b"x");
        for _ in 0..10 * MIN_SWEEP {
            blocks.insert(&envelope(), b"y");
        }
        assert!(
            blocks.entries.len() <= 2 * MIN_SWEEP,
            "{}",
            blocks.entries.len()
        );
        assert_eq!(blocks.get(&keep).as_deref(), Some(&b"x"[..]));
    }
}
