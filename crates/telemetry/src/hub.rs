//! The hub: spans and log records published per trace, fanned out to bounded subscriptions.
//!
//! A trace's topic exists while something holds it ([`TraceHold`], one per session using the
//! trace) or subscribes to it. It keeps a bounded backlog, so a subscriber that arrives after the
//! first spans of its trace still sees them. Each subscription has a bounded queue: when a
//! subscriber does not keep up, new records are counted as dropped instead of queued, and the
//! count travels with the next batch it reads ([`TracesBatch::dropped`]). Publishing never waits.
//!
//! A subscription ends only when it is closed ([`SubscriptionCloser::close`], done by the engine
//! when the subscriber's session ends) and everything queued before the close has been read: the
//! close is the end-of-stream, ordered after every record published before it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span as SpanRecord;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::ids::TraceId;

/// How much the hub keeps, per subscription and per trace.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Records queued per subscription before new ones are dropped (and counted).
    pub subscriber_capacity: usize,
    /// Bytes (of record text, roughly) queued per subscription before new records are dropped.
    pub subscriber_bytes: usize,
    /// Records kept per trace for subscribers that arrive later.
    pub backlog: usize,
    /// Bytes (of record text, roughly) kept per trace: the oldest go first.
    pub backlog_bytes: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            subscriber_capacity: 1 << 16,
            subscriber_bytes: 64 << 20,
            backlog: 1 << 14,
            backlog_bytes: 8 << 20,
        }
    }
}

/// Which records a subscription receives (OTLP's signals; the engine publishes no metrics,
/// so a metrics subscription only ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

/// One published record. Spans are published when they start and again when they end (the
/// later record replaces the earlier one, by span id).
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Span(Arc<SpanRecord>),
    Log(Arc<LogRecord>),
}

impl Item {
    /// Roughly what the record weighs: its texts plus a fixed overhead.
    fn weight(&self) -> usize {
        const OVERHEAD: usize = 128;
        let texts = |attrs: &[crate::proto::common::v1::KeyValue]| {
            attrs.iter().map(|kv| kv.key.len() + 16).sum::<usize>()
        };
        OVERHEAD
            + match self {
                Item::Span(s) => s.name.len() + texts(&s.attributes),
                Item::Log(l) => {
                    let body = match l.body.as_ref().and_then(|b| b.value.as_ref()) {
                        Some(crate::proto::common::v1::any_value::Value::StringValue(s)) => s.len(),
                        Some(crate::proto::common::v1::any_value::Value::BytesValue(b)) => b.len(),
                        _ => 0,
                    };
                    body + texts(&l.attributes)
                }
            }
    }

    fn signal(&self) -> Signal {
        match self {
            Item::Span(_) => Signal::Traces,
            Item::Log(_) => Signal::Logs,
        }
    }
}

/// The telemetry hub; cheap to clone. Published records reach the subscribers of their trace.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Hub>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("topics", &self.inner.topics.read().len())
            .finish()
    }
}

struct Hub {
    config: TelemetryConfig,
    topics: RwLock<HashMap<TraceId, Topic>>,
    /// Subscriptions to every trace (an exporter to an external collector).
    everything: RwLock<Vec<Arc<Queue>>>,
}

#[derive(Default)]
struct Topic {
    holders: usize,
    /// Behind its own lock, so publishing needs only the read lock of the topic map.
    backlog: Mutex<Backlog>,
    subscribers: Vec<Arc<Queue>>,
}

impl Topic {
    fn unused(&self) -> bool {
        self.holders == 0 && self.subscribers.is_empty()
    }
}

#[derive(Default)]
struct Backlog {
    items: VecDeque<(Item, usize)>,
    bytes: usize,
}

struct Queue {
    signal: Signal,
    capacity: usize,
    capacity_bytes: usize,
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    /// Records with their weights (what `bytes` counts).
    items: VecDeque<(Item, usize)>,
    bytes: usize,
    dropped: u64,
    closed: bool,
}

impl Queue {
    /// Queues `item`, which weighs `weight` (its [`Item::weight`], computed once per publish).
    fn push(&self, item: &Item, weight: usize) {
        {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            if state.items.len() >= self.capacity || state.bytes + weight > self.capacity_bytes {
                state.dropped += 1;
                return;
            }
            state.bytes += weight;
            state.items.push_back((item.clone(), weight));
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
    }
}

impl Telemetry {
    pub fn new(config: TelemetryConfig) -> Telemetry {
        Telemetry {
            inner: Arc::new(Hub {
                config,
                topics: RwLock::new(HashMap::new()),
                everything: RwLock::new(Vec::new()),
            }),
        }
    }

    /// Keeps the topic of `trace_id` (and its backlog) until the hold is dropped.
    pub fn hold(&self, trace_id: TraceId) -> TraceHold {
        self.inner
            .topics
            .write()
            .entry(trace_id)
            .or_default()
            .holders += 1;
        TraceHold {
            hub: self.clone(),
            trace_id,
        }
    }

    /// Subscribes to the `signal` records of `trace_id`, starting with the trace's backlog.
    pub fn subscribe(&self, trace_id: TraceId, signal: Signal) -> Subscription {
        let queue = self.new_queue(signal);
        {
            let mut topics = self.inner.topics.write();
            let topic = topics.entry(trace_id).or_default();
            for (item, weight) in topic
                .backlog
                .lock()
                .items
                .iter()
                .filter(|(i, _)| i.signal() == signal)
            {
                queue.push(item, *weight);
            }
            topic.subscribers.push(queue.clone());
        }
        Subscription {
            hub: self.clone(),
            trace_id: Some(trace_id),
            queue,
        }
    }

    /// Subscribes to the `signal` records of every trace, watched or not, from now on (for an
    /// exporter to an external collector).
    pub fn subscribe_all(&self, signal: Signal) -> Subscription {
        let queue = self.new_queue(signal);
        self.inner.everything.write().push(queue.clone());
        Subscription {
            hub: self.clone(),
            trace_id: None,
            queue,
        }
    }

    fn new_queue(&self, signal: Signal) -> Arc<Queue> {
        Arc::new(Queue {
            signal,
            capacity: self.inner.config.subscriber_capacity,
            capacity_bytes: self.inner.config.subscriber_bytes,
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
        })
    }

    /// Whether anything holds or subscribes to `trace_id` (records of other traces are not kept).
    pub fn is_watched(&self, trace_id: TraceId) -> bool {
        self.inner.topics.read().contains_key(&trace_id)
    }

    /// Publishes a record to its trace's subscribers and backlog; records of a trace nobody
    /// holds or subscribes to are not kept.
    pub(crate) fn publish(&self, trace_id: TraceId, item: Item) {
        let (signal, weight) = (item.signal(), item.weight());
        {
            let everything = self.inner.everything.read();
            for queue in everything.iter().filter(|q| q.signal == signal) {
                queue.push(&item, weight);
            }
        }
        let topics = self.inner.topics.read();
        let Some(topic) = topics.get(&trace_id) else {
            return;
        };
        for queue in topic.subscribers.iter().filter(|q| q.signal == signal) {
            queue.push(&item, weight);
        }
        let (limit, limit_bytes) = (self.inner.config.backlog, self.inner.config.backlog_bytes);
        if limit > 0 {
            let mut backlog = topic.backlog.lock();
            while !backlog.items.is_empty()
                && (backlog.items.len() >= limit || backlog.bytes + weight > limit_bytes)
            {
                if let Some((_, w)) = backlog.items.pop_front() {
                    backlog.bytes -= w;
                }
            }
            if weight <= limit_bytes {
                backlog.bytes += weight;
                backlog.items.push_back((item, weight));
            }
        }
    }

    fn unsubscribe_all(&self, queue: &Arc<Queue>) {
        self.inner
            .everything
            .write()
            .retain(|q| !Arc::ptr_eq(q, queue));
    }

    fn release(&self, trace_id: TraceId, queue: Option<&Arc<Queue>>) {
        let mut topics = self.inner.topics.write();
        let Some(topic) = topics.get_mut(&trace_id) else {
            return;
        };
        match queue {
            Some(queue) => topic.subscribers.retain(|q| !Arc::ptr_eq(q, queue)),
            None => topic.holders = topic.holders.saturating_sub(1),
        }
        if topic.unused() {
            topics.remove(&trace_id);
        }
    }
}

/// Keeps a trace's topic alive (see [`Telemetry::hold`]).
pub struct TraceHold {
    hub: Telemetry,
    trace_id: TraceId,
}

impl TraceHold {
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }
}

impl Drop for TraceHold {
    fn drop(&mut self) {
        self.hub.release(self.trace_id, None);
    }
}

impl std::fmt::Debug for TraceHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceHold")
            .field("trace_id", &self.trace_id)
            .finish()
    }
}

/// One subscriber's stream of records; unsubscribes when dropped.
pub struct Subscription {
    hub: Telemetry,
    /// `None`: every trace ([`Telemetry::subscribe_all`]).
    trace_id: Option<TraceId>,
    queue: Arc<Queue>,
}

/// Ends a [`Subscription`] once what was queued before the close has been read.
#[derive(Clone)]
pub struct SubscriptionCloser {
    queue: Arc<Queue>,
}

impl SubscriptionCloser {
    pub fn close(&self) {
        self.queue.close();
    }
}

/// Records read from a subscription, with how many were dropped before them.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) items: Vec<Item>,
    pub(crate) dropped: u64,
}

impl Subscription {
    /// The trace followed; `None` for a subscription to every trace.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }

    pub fn signal(&self) -> Signal {
        self.queue.signal
    }

    pub fn closer(&self) -> SubscriptionCloser {
        SubscriptionCloser {
            queue: self.queue.clone(),
        }
    }

    /// Waits until the subscription is closed, discarding what it receives.
    pub async fn closed(&mut self) {
        while self.next_batch(usize::MAX).await.is_some() {}
    }

    /// Up to `max` records (at least one), waiting for them; `None` once closed and drained.
    /// Records that arrive together are delivered together: once the first is there, the
    /// batch waits [`COALESCE`] for more (not once the subscription is closed).
    pub(crate) async fn next_batch(&mut self, max: usize) -> Option<Batch> {
        let mut waited = false;
        loop {
            let ready = self.queue.ready.notified();
            {
                let mut state = self.queue.state.lock();
                let any = !state.items.is_empty() || state.dropped > 0;
                if any && (waited || state.closed || state.items.len() >= max) {
                    let n = state.items.len().min(max.max(1));
                    let mut taken = 0;
                    let items: Vec<Item> = state
                        .items
                        .drain(..n)
                        .map(|(item, weight)| {
                            taken += weight;
                            item
                        })
                        .collect();
                    state.bytes = state.bytes.saturating_sub(taken);
                    let dropped = std::mem::take(&mut state.dropped);
                    return Some(Batch { items, dropped });
                }
                if !any && state.closed {
                    return None;
                }
            }
            if waited || !self.any_queued() {
                ready.await;
            } else {
                tokio::time::sleep(COALESCE).await;
                waited = true;
            }
        }
    }

    fn any_queued(&self) -> bool {
        let state = self.queue.state.lock();
        !state.items.is_empty() || state.dropped > 0
    }
}

/// How long a subscription waits, once a record is there, for the records that follow it (so
/// a burst travels as one batch instead of one message per record).
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(1);

impl Drop for Subscription {
    fn drop(&mut self) {
        match self.trace_id {
            Some(trace_id) => self.hub.release(trace_id, Some(&self.queue)),
            None => self.hub.unsubscribe_all(&self.queue),
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("trace_id", &self.trace_id)
            .field("signal", &self.queue.signal)
            .finish()
    }
}
