//! A node: one member of the consumer group, ingesting the partitions it is assigned into its
//! own store. Where a partition starts is the store's business, not Kafka's: each batch goes in
//! with the position it reached ([`Store::append_at`](imbtrack_store::Store::append_at)), in one
//! fsync, and an assigned partition resumes from that position, or from the partition's start
//! when this store never had it. Offsets are committed to Kafka after each durable batch only so
//! that lag shows in Kafka's tools.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imbtrack_engine::Engine;
use imbtrack_feed::SymbolTable;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::directory::MemberPublisher;
use crate::wire;
use crate::KafkaNodeError;

/// How a node consumes.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Bootstrap brokers, `host:port,…`.
    pub brokers: String,
    /// The scans topic.
    pub topic: String,
    /// The consumer group every node of the deployment shares.
    pub group: String,
    /// Most messages appended (and fsynced) together.
    pub batch_max: usize,
    /// Longest a message waits for its batch to fill.
    pub batch_wait: Duration,
    /// This node's HTTP base address, published with its assignment on the members topic so
    /// other nodes can route lookups here; `None` publishes nothing.
    pub advertise: Option<String>,
}

impl NodeConfig {
    /// Defaults: batches of up to 50,000 messages or 100 ms.
    pub fn new(brokers: &str, topic: &str, group: &str) -> NodeConfig {
        NodeConfig {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            batch_max: 50_000,
            batch_wait: Duration::from_millis(100),
            advertise: None,
        }
    }
}

/// What a node did, so far.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStats {
    /// Messages read.
    pub messages: u64,
    /// New scans stored.
    pub accepted: u64,
    /// Scans the store already had (re-read after a restart or a rebalance).
    pub duplicates: u64,
    /// Messages that were no scan (logged and skipped; their position still moves on).
    pub undecodable: u64,
    /// Durable batches.
    pub batches: u64,
    /// Messages Kafka had deleted (retention) before this node could read them.
    pub lost: u64,
}

/// The source name under which a partition's position is kept in the store.
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}/{partition}")
}

/// The consumer's callbacks: assignment positions from the store, and the current assignment.
struct NodeContext {
    engine: Arc<Engine>,
    topic: String,
    assigned: Mutex<Vec<i32>>,
    /// Per assigned partition, the offset the next message should have (from the store's
    /// position, then each message read), to notice messages Kafka deleted before we read them.
    expected: Mutex<BTreeMap<i32, i64>>,
    /// Rebalance callbacks so far: a batch that saw one is dropped (see [`Node::step`]).
    rebalances: AtomicU64,
    /// See [`Node::ready`]; a revoke empties it at once, an assignment keeps only what it
    /// keeps assigned.
    ready: Arc<Mutex<Vec<i32>>>,
}

impl ClientContext for NodeContext {}

impl ConsumerContext for NodeContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            let positions = self.engine.positions();
            let mut partitions = Vec::new();
            for element in tpl.elements() {
                partitions.push((element.topic().to_string(), element.partition()));
            }
            assigned.clear();
            let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
            expected.clear();
            for (topic, partition) in partitions {
                let known = positions.get(&source_name(&topic, partition)).copied();
                let start = known.map_or(Offset::Beginning, Offset::Offset);
                if topic == self.topic {
                    expected.insert(partition, known.unwrap_or(0));
                }
                if let Err(e) = tpl.set_partition_offset(&topic, partition, start) {
                    tracing::error!("kafka: start of {topic}/{partition}: {e}");
                }
                if topic == self.topic {
                    assigned.push(partition);
                }
            }
            assigned.sort_unstable();
            if let Ok(mut ready) = self.ready.lock() {
                ready.retain(|p| assigned.contains(p));
            }
            tracing::info!(
                "kafka: assigned partitions {:?} of {}",
                *assigned,
                self.topic
            );
            if let Err(e) = consumer.assign(tpl) {
                tracing::error!("kafka: assign: {e}");
            }
        } else {
            // Revoked (or a rebalance error): every earlier batch is durable, and the batch in
            // progress, if any, is dropped by `step` when it sees the rebalance.
            tracing::info!("kafka: partitions {:?} revoked", *assigned);
            assigned.clear();
            if let Ok(mut ready) = self.ready.lock() {
                ready.clear();
            }
            if let Err(e) = consumer.unassign() {
                tracing::error!("kafka: unassign: {e}");
            }
        }
    }
}

/// A consumer-group member ingesting into one engine's store.
pub struct Node {
    consumer: BaseConsumer<NodeContext>,
    engine: Arc<Engine>,
    config: NodeConfig,
    stats: Mutex<NodeStats>,
    /// The members-topic publisher, if this node advertises an address.
    publisher: Option<MemberPublisher>,
    /// What it last said, and how far each assigned partition must be read.
    announced: Mutex<Announced>,
    partition_count: i32,
}

/// What a node last published, and per assigned partition the offset it must reach before it
/// claims the partition (the partition's end when it was assigned).
struct Announced {
    partitions: Vec<i32>,
    at: Instant,
    catch_up_to: BTreeMap<i32, i64>,
}

/// How often a node republishes its membership even when nothing changed.
const REPUBLISH_EVERY: Duration = Duration::from_secs(3);

impl Node {
    /// Joins the group (subscribing to the topic); partitions come with the first polls.
    pub fn join(engine: Arc<Engine>, config: NodeConfig) -> Result<Node, KafkaNodeError> {
        let context = NodeContext {
            engine: engine.clone(),
            topic: config.topic.clone(),
            assigned: Mutex::new(Vec::new()),
            expected: Mutex::new(BTreeMap::new()),
            rebalances: AtomicU64::new(0),
            ready: Arc::new(Mutex::new(Vec::new())),
        };
        let consumer: BaseConsumer<NodeContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A position Kafka no longer has (retention deleted it) resumes at the oldest
            // message left, never at the newest: the gap is logged and counted below.
            .set("auto.offset.reset", "earliest")
            // Eager rebalancing: a revoke ends every partition at once, between two polls.
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create_with_context(context)?;
        consumer.subscribe(&[&config.topic])?;
        let metadata = consumer.fetch_metadata(Some(&config.topic), Duration::from_secs(10))?;
        let partition_count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .map_or(0, |t| t.partitions().len() as i32);
        let publisher = match &config.advertise {
            Some(_) => Some(MemberPublisher::connect(&config.brokers, &config.topic)?),
            None => None,
        };
        Ok(Node {
            consumer,
            engine,
            config,
            stats: Mutex::new(NodeStats::default()),
            publisher,
            announced: Mutex::new(Announced {
                partitions: Vec::new(),
                at: Instant::now(),
                catch_up_to: BTreeMap::new(),
            }),
            partition_count,
        })
    }

    /// The partitions this node holds now.
    pub fn assigned(&self) -> Vec<i32> {
        self.consumer
            .context()
            .assigned
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// The partitions this node holds and has caught up on (kept current while it runs), for
    /// routing lookups: it answers for these whatever the members topic says.
    pub fn ready(&self) -> Arc<Mutex<Vec<i32>>> {
        self.consumer.context().ready.clone()
    }

    /// The topic's partition count.
    pub fn partition_count(&self) -> i32 {
        self.partition_count
    }

    /// What it has done so far.
    pub fn stats(&self) -> NodeStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Notes (in [`Node::ready`]) and publishes the partitions this node can answer for:
    /// assigned, and read at least up to where the partition ended when it was assigned. A
    /// partition still replaying is claimed by nobody, so a lookup routed for it fails clearly
    /// instead of answering short.
    fn publish_membership(&self) {
        let assigned = self.assigned();
        let Ok(mut announced) = self.announced.lock() else {
            return;
        };
        announced.catch_up_to.retain(|p, _| assigned.contains(p));
        let positions = self.engine.positions();
        let mut ready = Vec::new();
        for &partition in &assigned {
            let target = match announced.catch_up_to.get(&partition) {
                Some(&target) => target,
                None => match self.consumer.fetch_watermarks(
                    &self.config.topic,
                    partition,
                    Duration::from_secs(2),
                ) {
                    Ok((_, high)) => *announced.catch_up_to.entry(partition).or_insert(high),
                    Err(_) => continue,
                },
            };
            let position = positions
                .get(&source_name(&self.config.topic, partition))
                .copied()
                .unwrap_or(0);
            if position >= target {
                ready.push(partition);
            }
        }
        if let Ok(mut shared) = self.consumer.context().ready.lock() {
            shared.clone_from(&ready);
        }
        let (Some(publisher), Some(http)) = (&self.publisher, &self.config.advertise) else {
            return;
        };
        if announced.partitions != ready || announced.at.elapsed() >= REPUBLISH_EVERY {
            publisher.publish(http, &ready, self.partition_count);
            announced.partitions = ready;
            announced.at = Instant::now();
        }
    }

    /// Reads one batch (up to `batch_max` messages or `batch_wait`) and makes it durable with
    /// its positions; returns the messages taken.
    ///
    /// Rebalance callbacks run inside `poll`, so one can come in the middle of a batch. The new
    /// assignment starts each partition at the store's position, which does not include the
    /// batch in progress; those messages come again (and some partitions may have gone to
    /// another node), so the batch in progress is dropped and the batch starts over.
    pub fn step(&self) -> Result<usize, KafkaNodeError> {
        self.publish_membership();
        let started = Instant::now();
        let rebalances = &self.consumer.context().rebalances;
        let mut generation = rebalances.load(Ordering::SeqCst);
        let mut symbols = SymbolTable::new();
        let mut events = Vec::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut taken = 0usize;
        let mut undecodable = 0u64;
        // A batch ends at `batch_max` messages or scans (a frame holds thousands).
        while taken < self.config.batch_max && events.len() < self.config.batch_max {
            let left = self.config.batch_wait.saturating_sub(started.elapsed());
            let polled = self.consumer.poll(left);
            let now = rebalances.load(Ordering::SeqCst);
            if now != generation {
                generation = now;
                symbols = SymbolTable::new();
                events.clear();
                next.clear();
                taken = 0;
                undecodable = 0;
            }
            let Some(message) = polled else {
                break;
            };
            let message = message?;
            taken += 1;
            let decoded = message
                .payload()
                .map(|v| wire::decode_message(v, &mut symbols, &mut events));
            if !matches!(decoded, Some(Ok(_))) {
                // Never stops the partition: its offset passes like any other.
                undecodable += 1;
                metrics::counter!("imbtrack_kafka_rejected_messages_total").increment(1);
                tracing::warn!(
                    "kafka: {}/{} offset {}: rejected: {}",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    match decoded {
                        Some(Err(e)) => e.to_string(),
                        _ => "no value".to_string(),
                    }
                );
            }
            self.note_gap(message.partition(), message.offset());
            next.insert(message.partition(), message.offset() + 1);
            if left.is_zero() {
                break;
            }
        }
        if taken == 0 {
            return Ok(0);
        }
        let positions: Vec<(String, i64)> = next
            .iter()
            .map(|(&partition, &offset)| (source_name(&self.config.topic, partition), offset))
            .collect();
        let report = self
            .engine
            .append_at(&events, &symbols, &positions)
            .map_err(KafkaNodeError::Store)?;
        metrics::counter!("imbtrack_kafka_messages_total").increment(taken as u64);
        metrics::counter!("imbtrack_ingested_scans_total").increment(report.accepted);
        // For Kafka's lag tools only: where to resume is the store's position, not this.
        let mut committed = TopicPartitionList::new();
        for (&partition, &offset) in &next {
            committed.add_partition_offset(
                &self.config.topic,
                partition,
                Offset::Offset(offset),
            )?;
        }
        if let Err(e) = self.consumer.commit(&committed, CommitMode::Async) {
            tracing::debug!("kafka: commit: {e}");
        }
        if let Ok(mut stats) = self.stats.lock() {
            stats.messages += taken as u64;
            stats.accepted += report.accepted;
            stats.duplicates += report.duplicates;
            stats.undecodable += undecodable;
            stats.batches += 1;
        }
        Ok(taken)
    }

    /// Logs and counts messages that were deleted from Kafka before this node read them.
    fn note_gap(&self, partition: i32, offset: i64) {
        let Ok(mut expected) = self.consumer.context().expected.lock() else {
            return;
        };
        if let Some(next) = expected.get(&partition).copied() {
            if offset > next {
                tracing::error!(
                    "kafka: {}/{partition}: offsets {next} to {} were deleted by Kafka's \
                     retention before this node read them; those scans are not in its store",
                    self.config.topic,
                    offset - 1
                );
                metrics::counter!("imbtrack_kafka_lost_messages_total")
                    .increment((offset - next) as u64);
                if let Ok(mut stats) = self.stats.lock() {
                    stats.lost += (offset - next) as u64;
                }
            }
        }
        expected.insert(partition, offset + 1);
    }

    /// Runs [`Node::step`] until `stop` is set. A Kafka error is retried after a pause. A store
    /// that failed (disk full, I/O error) takes nothing more until the process restarts, so the
    /// node then leaves the group: its partitions go to nodes that can store them.
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match self.step() {
                Ok(_) => {}
                Err(KafkaNodeError::Store(e)) => {
                    tracing::error!("kafka: the store failed, leaving the group: {e}");
                    self.consumer.unsubscribe();
                    // No poll follows to run the revoke callback: the node holds nothing now.
                    if let Ok(mut assigned) = self.consumer.context().assigned.lock() {
                        assigned.clear();
                    }
                    if let Ok(mut ready) = self.consumer.context().ready.lock() {
                        ready.clear();
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!("kafka: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}
