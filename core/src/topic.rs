//! nsqd-style topics: a named subject whose messages are copied to every channel.
//!
//! A [`Topic`] is a router target on its exact subject, so a message published on any protocol
//! to `orders` reaches NSQ topic `orders`. Each channel is a [`DurableQueue`] (one group of
//! competing consumers). While a topic has no channel, or is paused, it holds its messages in
//! its own buffer queue and hands them to the first channel (or on unpause), as nsqd does.
//!
//! Store names: the buffer is `nsq/<topic>`, a channel `nsq/<topic>/<channel>`; existence and
//! pause flags are metadata keys `nsq.topic/<topic>` and `nsq.channel/<topic>/<channel>`.
//!
//! # Invariants
//! - Every channel gets its own copy (same `Arc<Envelope>`, same id) of every message put
//!   while it exists.
//! - Messages put while there is no channel or while paused stay in the buffer; none is lost
//!   when the first channel appears.
//! - `#ephemeral` channels are deleted when their last member detaches; an `#ephemeral` topic
//!   is deleted when its last channel is deleted. Ephemeral state is never persisted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::envelope::Envelope;
use crate::error::RouteError;
use crate::outbox::{outbox, Overflow};
use crate::queue::{Backing, DurableQueue, Member, QueueConfig, QueueStats};
use crate::router::{RouterInner, SubscriptionId};
use crate::store::QueueName;
use crate::subject::{nsq, Subject, SubjectError};

/// Most buffered messages the pump moves at once.
const PUMP_CREDIT: u32 = 256;
/// Delay before the pump retries a message a channel refused.
const PUMP_RETRY: Duration = Duration::from_millis(500);

/// Metadata key prefix of persisted topics.
pub(crate) const TOPIC_META: &str = "nsq.topic/";
/// Metadata key prefix of persisted channels.
pub(crate) const CHANNEL_META: &str = "nsq.channel/";

/// Counters of one topic and its channels.
#[derive(Debug, Clone, Default)]
pub struct TopicStats {
    /// The topic's NSQ name.
    pub name: String,
    /// Messages held in the topic buffer (no channel yet, or paused).
    pub depth: usize,
    /// Of those, messages held only in the store (nsqd `backend_depth`).
    pub backend_depth: usize,
    /// Messages ever put.
    pub message_count: u64,
    /// Payload bytes ever put.
    pub message_bytes: u64,
    /// Topic paused.
    pub paused: bool,
    /// Per channel: name and counters, sorted by name.
    pub channels: Vec<(String, QueueStats)>,
}

/// An nsqd topic.
pub struct Topic {
    name: String,
    subject: Subject,
    ephemeral: bool,
    channels: RwLock<BTreeMap<String, Arc<DurableQueue>>>,
    buffer: Arc<DurableQueue>,
    paused: AtomicBool,
    message_count: AtomicU64,
    message_bytes: AtomicU64,
    backing: Backing,
    config: QueueConfig,
    router: Weak<RouterInner>,
    index_id: SubscriptionId,
    /// The buffer's one member: the pump that hands buffered messages to the channels.
    pump: Mutex<Option<Arc<Member>>>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Topic {
    pub(crate) fn new(
        name: &str,
        backing: &Backing,
        config: QueueConfig,
        router: Weak<RouterInner>,
        index_id: SubscriptionId,
    ) -> Result<Self, SubjectError> {
        let subject = nsq::topic_to_subject(name)?;
        let ephemeral = nsq::is_ephemeral(name);
        let buffer = DurableQueue::new(
            QueueName::new(&format!("nsq/{name}")),
            backing,
            config.clone(),
            ephemeral,
        );
        Ok(Self {
            name: name.to_owned(),
            subject,
            ephemeral,
            channels: RwLock::new(BTreeMap::new()),
            buffer,
            paused: AtomicBool::new(false),
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            backing: backing.clone(),
            config,
            router,
            index_id,
            pump: Mutex::new(None),
        })
    }

    /// The NSQ topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The canonical subject the topic listens on.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// True for `#ephemeral` topics.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    pub(crate) fn index_id(&self) -> SubscriptionId {
        self.index_id
    }

    pub(crate) fn buffer(&self) -> &Arc<DurableQueue> {
        &self.buffer
    }

    fn targets(&self) -> Option<Vec<Arc<DurableQueue>>> {
        if self.paused.load(Ordering::Acquire) {
            return None;
        }
        let channels = self.channels.read();
        (!channels.is_empty()).then(|| channels.values().cloned().collect())
    }

    fn count(&self, msg: &Envelope) {
        self.message_count.fetch_add(1, Ordering::Relaxed);
        self.message_bytes
            .fetch_add(msg.payload.len() as u64, Ordering::Relaxed);
    }

    /// Puts a message into every channel (or the buffer); returns once all accepted it.
    pub async fn put(&self, msg: Arc<Envelope>) -> Result<(), RouteError> {
        self.count(&msg);
        match self.targets() {
            None => self.buffer.put(msg).await,
            Some(channels) => {
                for channel in channels {
                    channel.put(msg.clone()).await?;
                }
                Ok(())
            }
        }
    }

    /// Puts a message without waiting for durability (at-most-once ingress).
    pub fn put_nowait(&self, msg: &Arc<Envelope>) {
        self.count(msg);
        match self.targets() {
            None => self.buffer.put_nowait(msg.clone()),
            Some(channels) => channels.iter().for_each(|c| c.put_nowait(msg.clone())),
        }
    }

    /// Deferred publish: each channel defers its copy (nsqd DPUB).
    pub async fn put_deferred(
        &self,
        msg: Arc<Envelope>,
        delay: Duration,
    ) -> Result<(), RouteError> {
        self.count(&msg);
        match self.targets() {
            None => self.buffer.put_deferred(msg, delay).await,
            Some(channels) => {
                for channel in channels {
                    channel.put_deferred(msg.clone(), delay).await?;
                }
                Ok(())
            }
        }
    }

    /// The channel `name`, created if missing (its messages start with the next put, plus the
    /// buffer's if it is the first channel).
    pub fn channel(self: &Arc<Self>, name: &str) -> Arc<DurableQueue> {
        if let Some(existing) = self.channels.read().get(name) {
            return existing.clone();
        }
        let (channel, first) = {
            let mut channels = self.channels.write();
            if let Some(existing) = channels.get(name) {
                return existing.clone();
            }
            let channel = self.new_channel(name);
            channels.insert(name.to_owned(), channel.clone());
            (channel, channels.len() == 1)
        };
        if !self.ephemeral && !nsq::is_ephemeral(name) {
            self.persist_meta(
                format!("{CHANNEL_META}{}/{name}", self.name),
                Some(Bytes::new()),
            );
        }
        if first {
            self.flush_buffer();
        }
        channel
    }

    fn new_channel(self: &Arc<Self>, name: &str) -> Arc<DurableQueue> {
        let ephemeral = self.ephemeral || nsq::is_ephemeral(name);
        let queue_name = QueueName::new(&format!("nsq/{}/{name}", self.name));
        let channel = DurableQueue::new(queue_name, &self.backing, self.config.clone(), ephemeral);
        if !ephemeral {
            channel.set_meta_key(format!("{CHANNEL_META}{}/{name}", self.name));
        }
        if nsq::is_ephemeral(name) {
            let topic = Arc::downgrade(self);
            let channel_name = name.to_owned();
            channel.set_on_abandoned(Box::new(move || {
                if let Some(topic) = topic.upgrade() {
                    topic.delete_channel(&channel_name);
                }
            }));
        }
        channel
    }

    /// Moves buffered messages to the channels, unless paused or channel-less.
    /// Lets the pump move buffered messages while the topic has channels and is not paused.
    pub(crate) fn flush_buffer(&self) {
        let credit = if self.targets().is_some() {
            PUMP_CREDIT
        } else {
            0
        };
        if let Some(pump) = self.pump.lock().as_ref() {
            pump.set_credit(credit);
        }
    }

    /// Attaches the pump to the buffer: buffered messages are put into every channel (awaiting
    /// their durability) and only then finished in the buffer, so a crash never loses one.
    pub(crate) fn start_pump(self: &Arc<Self>) {
        let (sink, mut outbox) = outbox(PUMP_CREDIT as usize, Overflow::Drop);
        let pump = Arc::new(self.buffer.attach(sink, self.index_id));
        let member = Arc::downgrade(&pump);
        *self.pump.lock() = Some(pump);
        let topic = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(delivery) = outbox.recv().await {
                let (Some(topic), Some(member)) = (topic.upgrade(), member.upgrade()) else {
                    return;
                };
                let channels: Vec<Arc<DurableQueue>> =
                    topic.channels.read().values().cloned().collect();
                let mut handed = Ok(());
                for channel in channels {
                    handed = handed.and(channel.put(delivery.msg.clone()).await);
                }
                let id = &delivery.msg.id;
                let acked = match handed {
                    Ok(()) => member.fin(id),
                    Err(_) => member.requeue(id, PUMP_RETRY),
                };
                if let Err(err) = acked {
                    tracing::debug!(topic = %topic.name, %err, "buffered message changed meanwhile");
                }
            }
        });
        self.flush_buffer();
    }

    /// The channel `name`, if it exists.
    pub fn get_channel(&self, name: &str) -> Option<Arc<DurableQueue>> {
        self.channels.read().get(name).cloned()
    }

    /// Every channel, sorted by name.
    pub fn channels(&self) -> Vec<(String, Arc<DurableQueue>)> {
        self.channels
            .read()
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect()
    }

    /// Deletes a channel and its messages; an ephemeral topic goes with its last channel.
    pub fn delete_channel(&self, name: &str) -> bool {
        let (removed, now_empty) = {
            let mut channels = self.channels.write();
            let removed = channels.remove(name);
            (removed, channels.is_empty())
        };
        let Some(channel) = removed else { return false };
        channel.empty();
        channel.close();
        if channel.is_durable() {
            self.remove_stored(channel.name().clone());
        }
        if !self.ephemeral && !nsq::is_ephemeral(name) {
            self.persist_meta(format!("{CHANNEL_META}{}/{name}", self.name), None);
        }
        if now_empty {
            self.flush_buffer();
        }
        if now_empty && self.ephemeral {
            if let Some(router) = self.router.upgrade() {
                router.delete_topic(&self.name);
            }
        }
        true
    }

    /// Stops copying messages to channels; they wait in the buffer.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
        self.persist_topic_meta();
        self.flush_buffer();
    }

    /// Resumes copying, starting with what the buffer held.
    pub fn unpause(&self) {
        self.paused.store(false, Ordering::Release);
        self.persist_topic_meta();
        self.flush_buffer();
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Drops the messages waiting in the topic buffer (nsqd `/topic/empty`).
    pub fn empty(&self) {
        self.buffer.empty();
    }

    /// A snapshot of the topic's counters.
    pub fn stats(&self) -> TopicStats {
        let buffer = self.buffer.stats();
        TopicStats {
            name: self.name.clone(),
            depth: buffer.depth,
            backend_depth: buffer.backend_depth,
            message_count: self.message_count.load(Ordering::Relaxed),
            message_bytes: self.message_bytes.load(Ordering::Relaxed),
            paused: self.is_paused(),
            channels: self
                .channels()
                .into_iter()
                .map(|(n, c)| (n, c.stats()))
                .collect(),
        }
    }

    pub(crate) fn persist_topic_meta(&self) {
        if self.ephemeral {
            return;
        }
        let value = if self.is_paused() {
            Bytes::from_static(b"paused")
        } else {
            Bytes::new()
        };
        self.persist_meta(format!("{TOPIC_META}{}", self.name), Some(value));
    }

    /// Restores the pause flag read back from metadata.
    pub(crate) fn restore_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    fn persist_meta(&self, key: String, value: Option<Bytes>) {
        self.backing.put_meta(key, value);
    }

    fn remove_stored(&self, queue: QueueName) {
        let store = self.backing.store.clone();
        self.backing.spawn(async move {
            if let Err(err) = store.remove_queue(&queue).await {
                tracing::error!(%queue, %err, "removing a stored queue failed");
            }
        });
    }

    /// Deletes every channel and the buffer's messages (topic deletion).
    pub(crate) fn destroy(&self) {
        self.pump.lock().take();
        let names: Vec<String> = self.channels.read().keys().cloned().collect();
        for name in names {
            self.delete_channel(&name);
        }
        self.buffer.empty();
        self.buffer.close();
        if self.buffer.is_durable() {
            self.remove_stored(self.buffer.name().clone());
        }
        if !self.ephemeral {
            self.persist_meta(format!("{TOPIC_META}{}", self.name), None);
        }
    }
}
