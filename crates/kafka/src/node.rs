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

use crate::directory::{standby_partitions, Directory, MemberPublisher};
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
    /// The cluster secret members entries are signed with (see [`crate::sign_member`]).
    pub secret: Vec<u8>,
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
            secret: Vec::new(),
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
    /// Messages read for standbys (partitions other nodes own).
    pub standby_messages: u64,
    /// New scans stored for standbys.
    pub standby_accepted: u64,
}

/// Why a node holds a partition's scans.
#[derive(Clone, Copy)]
enum Role {
    /// The group assigned it the partition: it answers for it.
    Owned,
    /// It keeps a standby copy ([`Node::keep_standbys`]).
    Standby,
}

impl Role {
    /// The metrics' label.
    fn as_str(self) -> &'static str {
        match self {
            Role::Owned => "owned",
            Role::Standby => "standby",
        }
    }
}

/// Messages read and decoded, to be appended together with the positions they reach.
#[derive(Default)]
struct Batch {
    symbols: SymbolTable,
    events: Vec<imbtrack_feed::ScanEvent>,
    /// Per partition, the offset after the last message taken.
    next: BTreeMap<i32, i64>,
    taken: usize,
    undecodable: u64,
    /// The messages that were no scan: partition, offset, why.
    rejected: Vec<(i32, i64, String)>,
}

impl Batch {
    /// A batch ends at `most` messages or scans (a frame holds thousands).
    fn is_full(&self, most: usize) -> bool {
        self.taken >= most || self.events.len() >= most
    }

    /// Decodes a message into the batch. One that is no scan (damaged, another version, no
    /// value) is logged and counted, and its offset passes like any other: it never stops the
    /// partition.
    fn add<M: Message>(&mut self, message: &M) {
        self.taken += 1;
        let decoded = message
            .payload()
            .map(|v| wire::decode_message(v, &mut self.symbols, &mut self.events));
        if !matches!(decoded, Some(Ok(_))) {
            self.undecodable += 1;
            let why = match decoded {
                Some(Err(e)) => e.to_string(),
                _ => "no value".to_string(),
            };
            metrics::counter!("imbtrack_kafka_rejected_messages_total").increment(1);
            tracing::warn!(
                "kafka: {}/{} offset {}: rejected: {why}",
                message.topic(),
                message.partition(),
                message.offset(),
            );
            self.rejected
                .push((message.partition(), message.offset(), why));
        }
        self.next.insert(message.partition(), message.offset() + 1);
    }
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
    standbys: Option<Standbys>,
}

/// What a node keeping standbys follows them with: a consumer outside the group, assigned the
/// partitions by hand.
struct Standbys {
    consumer: BaseConsumer,
    directory: Arc<Directory>,
    replicas: usize,
    /// The partitions it follows now.
    following: Mutex<Vec<i32>>,
    /// As [`NodeContext::expected`], for the standby partitions.
    expected: Mutex<BTreeMap<i32, i64>>,
}

/// What a node last published, and per assigned partition the offset it must reach before it
/// claims the partition (the partition's end when it was assigned).
struct Announced {
    assigned: Vec<i32>,
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
            Some(_) => Some(MemberPublisher::connect(
                &config.brokers,
                &config.topic,
                &config.secret,
            )?),
            None => None,
        };
        Ok(Node {
            consumer,
            engine,
            config,
            stats: Mutex::new(NodeStats::default()),
            publisher,
            announced: Mutex::new(Announced {
                assigned: Vec::new(),
                partitions: Vec::new(),
                at: Instant::now(),
                catch_up_to: BTreeMap::new(),
            }),
            partition_count,
            standbys: None,
        })
    }

    /// Makes this node also follow, as standbys, the partitions of the `replicas` members
    /// before it on the ring of live members in `directory` ([`standby_partitions`]). Their
    /// scans go into this node's store with their positions, as its own partitions' do, but it
    /// answers for none of them until the group gives it the partition: then it resumes at the
    /// standby's position instead of the partition's start, and claims the partition as soon
    /// as it has read the little that was left. Needs an advertised address (its place on the
    /// ring).
    pub fn keep_standbys(
        mut self,
        directory: Arc<Directory>,
        replicas: usize,
    ) -> Result<Node, KafkaNodeError> {
        if replicas == 0 || self.config.advertise.is_none() {
            return Ok(self);
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            // Assigned by hand, never joining: the group id only names its fetches.
            .set("group.id", format!("{}-standby", self.config.group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        self.standbys = Some(Standbys {
            consumer,
            directory,
            replicas,
            following: Mutex::new(Vec::new()),
            expected: Mutex::new(BTreeMap::new()),
        });
        Ok(self)
    }

    /// The partitions this node follows as standbys now.
    pub fn standbys(&self) -> Vec<i32> {
        self.standbys
            .as_ref()
            .and_then(|s| s.following.lock().ok().map(|f| f.clone()))
            .unwrap_or_default()
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
        if announced.partitions != ready
            || announced.assigned != assigned
            || announced.at.elapsed() >= REPUBLISH_EVERY
        {
            publisher.publish(http, &assigned, &ready, self.partition_count);
            announced.partitions = ready;
            announced.assigned = assigned;
            announced.at = Instant::now();
        }
    }

    /// Reads one batch (up to `batch_max` messages or `batch_wait`) and makes it durable with
    /// its positions; returns the messages taken. Then, on a node keeping standbys, does the
    /// same for the partitions it follows ([`Node::keep_standbys`]).
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
        let mut batch = Batch::default();
        while !batch.is_full(self.config.batch_max) {
            let left = self.config.batch_wait.saturating_sub(started.elapsed());
            let polled = self.consumer.poll(left);
            let now = rebalances.load(Ordering::SeqCst);
            if now != generation {
                generation = now;
                batch = Batch::default();
            }
            let Some(message) = polled else {
                break;
            };
            let message = message?;
            self.note_gap(
                &self.consumer.context().expected,
                message.partition(),
                message.offset(),
            );
            batch.add(&message);
            if left.is_zero() {
                break;
            }
        }
        let taken = batch.taken;
        if taken > 0 {
            let report = self.store(&batch, Role::Owned)?;
            // For Kafka's lag tools only: where to resume is the store's position, not this.
            let mut committed = TopicPartitionList::new();
            for (&partition, &offset) in &batch.next {
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
                stats.undecodable += batch.undecodable;
                stats.batches += 1;
            }
        }
        if let Some(standbys) = &self.standbys {
            self.step_standbys(standbys)?;
        }
        Ok(taken)
    }

    /// Appends a batch with its partitions' positions.
    fn store(
        &self,
        batch: &Batch,
        role: Role,
    ) -> Result<imbtrack_store::AppendReport, KafkaNodeError> {
        let positions: Vec<(String, i64)> = batch
            .next
            .iter()
            .map(|(&partition, &offset)| (source_name(&self.config.topic, partition), offset))
            .collect();
        // A standby's copy is told of where the partition is owned, not here too.
        let appended = match role {
            Role::Standby => {
                self.engine
                    .append_unwatched(&batch.events, &batch.symbols, &positions)
            }
            Role::Owned => self
                .engine
                .append_at(&batch.events, &batch.symbols, &positions),
        };
        let report = appended.map_err(KafkaNodeError::Store)?;
        metrics::counter!("imbtrack_kafka_messages_total", "role" => role.as_str())
            .increment(batch.taken as u64);
        metrics::counter!("imbtrack_kafka_scans_total", "role" => role.as_str())
            .increment(batch.events.len() as u64);
        metrics::counter!("imbtrack_ingested_scans_total").increment(report.accepted);
        if !batch.rejected.is_empty() {
            if let Err(e) = self.record_rejects(&batch.rejected) {
                tracing::error!("kafka: recording rejected messages: {e}");
            }
        }
        Ok(report)
    }

    /// Appends one JSON line per rejected message to `rejects/kafka-<topic>.jsonl` in the
    /// store's directory: its partition, offset and why. The message itself stays in Kafka at
    /// that offset (for as long as the topic keeps it), so the line holds no scan data; the
    /// file is dated now, and expires as the other rejects files do.
    fn record_rejects(&self, rejected: &[(i32, i64, String)]) -> std::io::Result<()> {
        use std::io::Write;
        let dir = self.engine.rejects_dir();
        std::fs::create_dir_all(&dir)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("kafka-{}.jsonl", self.config.topic)))?;
        let mut lines = Vec::new();
        for (partition, offset, why) in rejected {
            let line = serde_json::json!({
                "source": source_name(&self.config.topic, *partition),
                "partition": partition,
                "offset": offset,
                "reason": why,
            });
            lines.extend_from_slice(line.to_string().as_bytes());
            lines.push(b'\n');
        }
        file.write_all(&lines)?;
        imbtrack_engine::date_copy(&file, self.engine.now_ms())
    }

    /// Follows the partitions this node keeps standbys of: those of the members before it on
    /// the ring ([`standby_partitions`]) that the group has not given this node. Runs on the
    /// node's one thread, between two group batches, so a partition the group has just given
    /// this node is dropped here before its owned reading starts at the store's position, and
    /// never read by both.
    fn step_standbys(&self, standbys: &Standbys) -> Result<(), KafkaNodeError> {
        let assigned = self.assigned();
        let Some(http) = &self.config.advertise else {
            return Ok(());
        };
        let mut wanted = standby_partitions(http, standbys.replicas, &standbys.directory.members());
        wanted.retain(|p| !assigned.contains(p));
        let mut following = standbys.following.lock().unwrap_or_else(|e| e.into_inner());
        if *following != wanted {
            let positions = self.engine.positions();
            let mut list = TopicPartitionList::new();
            let mut expected = standbys.expected.lock().unwrap_or_else(|e| e.into_inner());
            expected.clear();
            for &partition in &wanted {
                let known = positions
                    .get(&source_name(&self.config.topic, partition))
                    .copied();
                expected.insert(partition, known.unwrap_or(0));
                list.add_partition_offset(
                    &self.config.topic,
                    partition,
                    known.map_or(Offset::Beginning, Offset::Offset),
                )?;
            }
            standbys.consumer.assign(&list)?;
            tracing::info!("kafka: keeping standbys of partitions {wanted:?}");
            following.clone_from(&wanted);
        }
        if following.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        while !batch.is_full(self.config.batch_max) {
            let Some(message) = standbys.consumer.poll(Duration::ZERO) else {
                break;
            };
            let message = message?;
            // A message fetched before the assignment changed.
            if !following.contains(&message.partition()) {
                continue;
            }
            self.note_gap(&standbys.expected, message.partition(), message.offset());
            batch.add(&message);
        }
        if batch.taken > 0 {
            let report = self.store(&batch, Role::Standby)?;
            if let Ok(mut stats) = self.stats.lock() {
                stats.standby_messages += batch.taken as u64;
                stats.standby_accepted += report.accepted;
                stats.undecodable += batch.undecodable;
            }
        }
        Ok(())
    }

    /// Logs and counts messages that were deleted from Kafka before this node read them.
    fn note_gap(&self, expected: &Mutex<BTreeMap<i32, i64>>, partition: i32, offset: i64) {
        let Ok(mut expected) = expected.lock() else {
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
