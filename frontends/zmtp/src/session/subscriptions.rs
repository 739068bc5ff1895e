//! A session's core subscriptions: the one a PULL, REP/ROUTER, REQ or DEALER peer holds for its
//! role, and the byte prefixes of a SUB/XSUB peer.
//!
//! libzmq's XPUB keeps a SUB's prefixes in a trie and sends each message to the peer once,
//! however many of its prefixes match (`a` and `ab` both match `abc`). The core delivers once
//! per subscription, so [`Prefixes`] subscribes only the prefixes no other subscribed prefix
//! covers; the others wait, refcounted, until the prefix that covers them is cancelled.
//!
//! # Invariants
//! - Dropping a [`CoreSubscription`] removes it from the router: a session that ends for any
//!   reason leaves nothing behind.
//! - In [`Prefixes`], the active prefixes are the minimal cover of the subscribed ones: no
//!   active prefix covers another, and every subscribed prefix is covered by an active one.
//!   So at most one active prefix matches any subject, and one does exactly when a
//!   subscribed prefix does.
//! - A prefix stays subscribed until it has had as many CANCELs as SUBSCRIBEs (RFC 29).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use polymq_core::router::{SubscriptionId, SubscriptionSpec};
use polymq_core::{Router, Sink};

/// One core subscription, removed from the router when dropped.
#[derive(Debug)]
pub(super) struct CoreSubscription {
    router: Router,
    id: SubscriptionId,
}

impl CoreSubscription {
    /// Subscribes `spec`, delivering into `sink`.
    pub(super) fn new(router: &Router, spec: SubscriptionSpec, sink: &Sink) -> Self {
        let id = router.subscribe(spec, sink.clone());
        Self {
            router: router.clone(),
            id,
        }
    }
}

impl Drop for CoreSubscription {
    fn drop(&mut self) {
        self.router.unsubscribe(self.id);
    }
}

/// True when every subject prefix `q` matches is matched by prefix `p`: `q` starts with `p`,
/// except that the empty prefix does not match `$` subjects (DESIGN.md), so it covers no
/// prefix starting with `$`.
fn covers(p: &[u8], q: &[u8]) -> bool {
    q.starts_with(p) && (!p.is_empty() || q.first() != Some(&b'$'))
}

/// A SUB/XSUB peer's refcounted prefixes and the active ones (their minimal cover), each
/// holding an `A` (a [`CoreSubscription`] in a session).
#[derive(Debug)]
pub(super) struct Prefixes<A> {
    counts: BTreeMap<Bytes, u32>,
    active: BTreeMap<Bytes, A>,
}

impl<A> Default for Prefixes<A> {
    fn default() -> Self {
        Self {
            counts: BTreeMap::new(),
            active: BTreeMap::new(),
        }
    }
}

impl<A> Prefixes<A> {
    /// Adds one reference to `prefix`; on the first, and unless an active prefix covers it,
    /// activates it (with `activate`) and retires the active prefixes it covers.
    pub(super) fn subscribe(&mut self, prefix: Bytes, activate: impl FnOnce(&Bytes) -> A) {
        let count = self.counts.entry(prefix.clone()).or_insert(0);
        *count = count.saturating_add(1);
        if *count > 1 || self.is_covered(&prefix) {
            return;
        }
        let retired = self.active_covered_by(&prefix);
        let held = activate(&prefix);
        self.active.insert(prefix, held);
        // Retired only once the new one exists, so no message falls between the two.
        for key in retired {
            self.active.remove(&key);
        }
    }

    /// Drops one reference to `prefix` (unknown prefixes are ignored); on the last, and if it
    /// was active, activates the minimal cover of the prefixes it covered.
    pub(super) fn cancel(&mut self, prefix: &[u8], mut activate: impl FnMut(&Bytes) -> A) {
        let Some(count) = self.counts.get_mut(prefix) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.counts.remove(prefix);
        let Some(retired) = self.active.remove(prefix) else {
            return;
        };
        for key in self.cover_of_covered_by(prefix) {
            let held = activate(&key);
            self.active.insert(key, held);
        }
        drop(retired);
    }

    /// The active prefixes, in byte order.
    #[cfg(test)]
    fn active(&self) -> impl Iterator<Item = &Bytes> {
        self.active.keys()
    }

    /// True when an active prefix other than `q` covers `q`. Among active prefixes (no one
    /// covering another), a non-empty prefix of `q` is the greatest active prefix below `q`:
    /// anything between the two would start with it.
    fn is_covered(&self, q: &[u8]) -> bool {
        let empty_covers = !q.is_empty() && covers(b"", q) && self.active.contains_key(&b""[..]);
        let below = (Bound::Unbounded, Bound::Excluded(q));
        let nearest = self.active.range::<[u8], _>(below).next_back();
        empty_covers || nearest.is_some_and(|(p, _)| !p.is_empty() && covers(p, q))
    }

    /// The active prefixes other than `p` that `p` covers.
    fn active_covered_by(&self, p: &[u8]) -> Vec<Bytes> {
        Self::covered_keys(&self.active, p).collect()
    }

    /// The minimal cover of the subscribed prefixes `p` covers (`p` itself excluded).
    fn cover_of_covered_by(&self, p: &[u8]) -> Vec<Bytes> {
        let mut cover: Vec<Bytes> = Vec::new();
        for key in Self::covered_keys(&self.counts, p) {
            // In byte order the prefixes a key covers follow it directly.
            if !cover.last().is_some_and(|last| covers(last, &key)) {
                cover.push(key);
            }
        }
        cover
    }

    /// The keys of `map` other than `p` that `p` covers, in byte order.
    fn covered_keys<'m, V>(
        map: &'m BTreeMap<Bytes, V>,
        p: &'m [u8],
    ) -> impl Iterator<Item = Bytes> + 'm {
        let above = (Bound::Excluded(p), Bound::Unbounded);
        let range = map.range::<[u8], _>(above).map(|(key, _)| key);
        // Everything a non-empty `p` covers is one run right after it; the empty prefix
        // covers everything but the `$` run.
        let run = range.take_while(move |key| p.is_empty() || key.starts_with(p));
        run.filter(move |key| covers(p, key)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(prefixes: &Prefixes<()>) -> Vec<&[u8]> {
        prefixes.active().map(|k| &k[..]).collect()
    }

    fn sub(prefixes: &mut Prefixes<()>, p: &'static [u8]) {
        prefixes.subscribe(Bytes::from_static(p), |_| ());
    }

    fn cancel(prefixes: &mut Prefixes<()>, p: &[u8]) {
        prefixes.cancel(p, |_| ());
    }

    #[test]
    fn covered_prefixes_wait_for_their_cover() {
        let mut prefixes = Prefixes::default();
        sub(&mut prefixes, b"ab");
        sub(&mut prefixes, b"abc");
        assert_eq!(keys(&prefixes), [b"ab"]);
        sub(&mut prefixes, b"a");
        assert_eq!(keys(&prefixes), [b"a"]);
        sub(&mut prefixes, b"b");
        assert_eq!(keys(&prefixes), [&b"a"[..], b"b"]);
        cancel(&mut prefixes, b"a");
        assert_eq!(keys(&prefixes), [&b"ab"[..], b"b"]);
        cancel(&mut prefixes, b"ab");
        assert_eq!(keys(&prefixes), [&b"abc"[..], b"b"]);
    }

    #[test]
    fn references_are_counted() {
        let mut prefixes = Prefixes::default();
        sub(&mut prefixes, b"a");
        sub(&mut prefixes, b"a");
        sub(&mut prefixes, b"ab");
        cancel(&mut prefixes, b"a");
        assert_eq!(keys(&prefixes), [b"a"]);
        cancel(&mut prefixes, b"unknown");
        cancel(&mut prefixes, b"a");
        assert_eq!(keys(&prefixes), [b"ab"]);
        cancel(&mut prefixes, b"a");
        assert_eq!(keys(&prefixes), [b"ab"]);
    }

    #[test]
    fn the_empty_prefix_leaves_dollar_prefixes_alone() {
        let mut prefixes = Prefixes::default();
        sub(&mut prefixes, b"$SYS");
        sub(&mut prefixes, b"x");
        sub(&mut prefixes, b"");
        assert_eq!(keys(&prefixes), [&b""[..], b"$SYS"]);
        sub(&mut prefixes, b"$SYS.a");
        sub(&mut prefixes, b"y");
        assert_eq!(keys(&prefixes), [&b""[..], b"$SYS"]);
        cancel(&mut prefixes, b"");
        assert_eq!(keys(&prefixes), [&b"$SYS"[..], b"x", b"y"]);
    }

    /// Subject `s` is matched by prefix `p` (the core's rule for `Filter::Prefix`).
    fn matches(p: &[u8], s: &[u8]) -> bool {
        s.starts_with(p) && (p.first() == Some(&b'$') || s.first() != Some(&b'$'))
    }

    proptest! {
        #[test]
        fn active_prefixes_match_each_subject_once(
            ops in proptest::collection::vec((any::<bool>(), 0usize..7), 0..40),
        ) {
            const ALPHABET: [&[u8]; 7] = [b"", b"$", b"$a", b"a", b"ab", b"abc", b"b"];
            let mut prefixes: Prefixes<()> = Prefixes::default();
            let mut model: BTreeMap<&[u8], u32> = BTreeMap::new();
            for (add, i) in ops {
                let p = ALPHABET[i];
                if add {
                    prefixes.subscribe(Bytes::from_static(p), |_| ());
                    *model.entry(p).or_default() += 1;
                } else {
                    prefixes.cancel(p, |_| ());
                    if let Some(n) = model.get_mut(p) {
                        *n -= 1;
                        if *n == 0 {
                            model.remove(p);
                        }
                    }
                }
                for subject in [&b"abcd"[..], b"ab", b"b.x", b"$a.x", b"$", b"c"] {
                    let active = prefixes.active().filter(|k| matches(k, subject)).count();
                    let wanted = model.keys().any(|k| matches(k, subject));
                    prop_assert_eq!(active, usize::from(wanted), "{:?}", subject);
                }
                prop_assert!(prefixes.active().all(|k| model.contains_key(&k[..])));
            }
        }
    }
}
