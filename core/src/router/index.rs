//! The subscription index: which targets a subject reaches.
//!
//! Three structures, one per kind of filter:
//! - `exact`: literal filters in a hash map (the common case: NSQ topics, most NATS subjects).
//! - a token trie for `*` / `>` patterns, with per-node lists for "ends here" and "`>` here".
//! - `prefixes`: ZMQ byte prefixes in a hash map, probed only at the prefix lengths in use.
//!
//! # Invariants
//! - The index agrees with [`Filter::matches`] on every subject (checked by a proptest against
//!   a naive matcher in `router/tests.rs`).
//! - `$` rule: wildcards at the first level (`*`, `>`) and prefixes not starting with `$` never
//!   reach a subject whose first token starts with `$`.
//! - An entry appears in exactly one place per filter (two for an MQTT `a/#` filter, whose
//!   parent match is stored at the parent node).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use foldhash::fast::RandomState;

use crate::subject::{Filter, Subject};

use super::{SubscriptionId, Target};

/// One subscription's place in the index.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: SubscriptionId,
    pub(crate) target: Target,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node, RandomState>,
    star: Option<Box<Node>>,
    /// Filters ending exactly at this node.
    here: Vec<Entry>,
    /// Filters whose last token `>` sits below this node.
    tail: Vec<Entry>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }
}

/// The subscription index. Guarded by the router's `RwLock`; not thread-safe by itself.
#[derive(Debug, Default)]
pub(crate) struct Index {
    exact: HashMap<Box<str>, Vec<Entry>, RandomState>,
    root: Node,
    prefixes: HashMap<Bytes, Vec<Entry>, RandomState>,
    /// Prefix length → number of prefixes of that length.
    prefix_lens: BTreeMap<usize, usize>,
}

fn remove_entry(list: &mut Vec<Entry>, id: SubscriptionId) -> bool {
    let before = list.len();
    list.retain(|e| e.id != id);
    list.len() != before
}

impl Index {
    /// Adds `entry` under `filter`.
    pub(crate) fn insert(&mut self, filter: &Filter, entry: Entry) {
        match filter {
            Filter::Prefix(prefix) => {
                self.prefixes.entry(prefix.clone()).or_default().push(entry);
                *self.prefix_lens.entry(prefix.len()).or_default() += 1;
            }
            Filter::Tokens {
                pattern,
                matches_parent,
            } => {
                if filter.is_literal() {
                    self.exact
                        .entry(Box::from(&**pattern))
                        .or_default()
                        .push(entry);
                    return;
                }
                if *matches_parent {
                    if let Some(parent) = pattern.strip_suffix(".>") {
                        // `a.>` with parent: `a` itself also matches.
                        self.insert_pattern(parent, entry.clone());
                    }
                }
                self.insert_pattern(pattern, entry);
            }
        }
    }

    fn insert_pattern(&mut self, pattern: &str, entry: Entry) {
        if !pattern.split('.').any(|t| t == "*" || t == ">") {
            self.exact
                .entry(Box::from(pattern))
                .or_default()
                .push(entry);
            return;
        }
        let mut node = &mut self.root;
        for token in pattern.split('.') {
            match token {
                ">" => {
                    node.tail.push(entry);
                    return;
                }
                "*" => node = node.star.get_or_insert_with(Box::default),
                literal => node = node.children.entry(Box::from(literal)).or_default(),
            }
        }
        node.here.push(entry);
    }

    /// Removes the entry `id` stored under `filter`; returns true if it was there.
    pub(crate) fn remove(&mut self, filter: &Filter, id: SubscriptionId) -> bool {
        match filter {
            Filter::Prefix(prefix) => {
                let Some(list) = self.prefixes.get_mut(prefix) else {
                    return false;
                };
                let removed = remove_entry(list, id);
                if list.is_empty() {
                    self.prefixes.remove(prefix);
                    if let Some(count) = self.prefix_lens.get_mut(&prefix.len()) {
                        *count -= 1;
                        if *count == 0 {
                            self.prefix_lens.remove(&prefix.len());
                        }
                    }
                }
                removed
            }
            Filter::Tokens {
                pattern,
                matches_parent,
            } => {
                let mut removed = false;
                if *matches_parent {
                    if let Some(parent) = pattern.strip_suffix(".>") {
                        removed |= self.remove_pattern(parent, id);
                    }
                }
                removed | self.remove_pattern(pattern, id)
            }
        }
    }

    fn remove_pattern(&mut self, pattern: &str, id: SubscriptionId) -> bool {
        if !pattern.split('.').any(|t| t == "*" || t == ">") {
            let Some(list) = self.exact.get_mut(pattern) else {
                return false;
            };
            let removed = remove_entry(list, id);
            if list.is_empty() {
                self.exact.remove(pattern);
            }
            return removed;
        }
        let tokens: Vec<&str> = pattern.split('.').collect();
        remove_in(&mut self.root, &tokens, id)
    }

    /// Every entry whose filter matches `subject`, in index order (may contain one target more
    /// than once when several of its filters match; the caller dedupes).
    pub(crate) fn collect(&self, subject: &Subject, out: &mut Vec<Entry>) {
        if let Some(list) = self.exact.get(subject.as_str()) {
            out.extend(list.iter().cloned());
        }
        let tokens: Vec<&str> = subject.tokens().collect();
        collect_in(&self.root, &tokens, subject.is_system(), true, out);
        self.collect_prefixes(subject, out);
    }

    fn collect_prefixes(&self, subject: &Subject, out: &mut Vec<Entry>) {
        let text = subject.as_str().as_bytes();
        for &len in self.prefix_lens.keys() {
            let Some(prefix) = text.get(..len) else { break };
            if subject.is_system() && prefix.first() != Some(&b'$') {
                continue;
            }
            if let Some(list) = self.prefixes.get(prefix) {
                out.extend(list.iter().cloned());
            }
        }
    }

    /// Number of entries (a filter with a parent match counts twice).
    pub(crate) fn len(&self) -> usize {
        fn count(node: &Node) -> usize {
            node.here.len()
                + node.tail.len()
                + node.children.values().map(count).sum::<usize>()
                + node.star.as_deref().map_or(0, count)
        }
        self.exact.values().map(Vec::len).sum::<usize>()
            + self.prefixes.values().map(Vec::len).sum::<usize>()
            + count(&self.root)
    }
}

fn remove_in(node: &mut Node, tokens: &[&str], id: SubscriptionId) -> bool {
    let Some((&token, rest)) = tokens.split_first() else {
        return remove_entry(&mut node.here, id);
    };
    match token {
        ">" => remove_entry(&mut node.tail, id),
        "*" => {
            let Some(child) = node.star.as_deref_mut() else {
                return false;
            };
            let removed = remove_in(child, rest, id);
            if child.is_empty() {
                node.star = None;
            }
            removed
        }
        literal => {
            let Some(child) = node.children.get_mut(literal) else {
                return false;
            };
            let removed = remove_in(child, rest, id);
            if child.is_empty() {
                node.children.remove(literal);
            }
            removed
        }
    }
}

fn collect_in(node: &Node, tokens: &[&str], system: bool, first: bool, out: &mut Vec<Entry>) {
    let Some((&token, rest)) = tokens.split_first() else {
        out.extend(node.here.iter().cloned());
        return;
    };
    let wildcards_allowed = !(first && system);
    if wildcards_allowed {
        out.extend(node.tail.iter().cloned());
        if let Some(star) = node.star.as_deref() {
            collect_in(star, rest, system, false, out);
        }
    }
    if let Some(child) = node.children.get(token) {
        collect_in(child, rest, system, false, out);
    }
}
