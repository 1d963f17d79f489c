//! Who holds which partition: every node publishes its HTTP address and assignment on a
//! members topic (one partition, compacted in production: the latest message per node is what
//! counts), and a [`Directory`] reads that topic to route a piece's lookup to its owner.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imbtrack_barcode::BarcodeKey;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::wire::partition_for;
use crate::KafkaNodeError;

/// A member's entry older than this is taken as gone (members republish every few seconds).
pub const MEMBER_TTL: Duration = Duration::from_secs(15);

/// The members topic of a scans topic.
pub fn members_topic(topic: &str) -> String {
    format!("{topic}-members")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its HTTP base address, e.g. `http://10.1.2.3:8080`; also its key on the members topic.
    pub http: String,
    /// The scans topic's partitions it holds.
    pub partitions: Vec<i32>,
    /// The scans topic's partition count.
    pub partition_count: i32,
    /// When it said so, ms since the epoch.
    pub updated_ms: i64,
}

/// Publishes a node's [`Member`] entry.
pub struct MemberPublisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl MemberPublisher {
    /// A publisher to the members topic of `scans_topic`.
    pub fn connect(brokers: &str, scans_topic: &str) -> Result<MemberPublisher, KafkaNodeError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0")
            .create()?;
        Ok(MemberPublisher {
            producer,
            topic: members_topic(scans_topic),
        })
    }

    /// Says that `http` holds `partitions` (of `partition_count`) now.
    pub fn publish(&self, http: &str, partitions: &[i32], partition_count: i32) {
        let member = Member {
            http: http.to_string(),
            partitions: partitions.to_vec(),
            partition_count,
            updated_ms: now_ms(),
        };
        let payload = serde_json::to_vec(&member).unwrap_or_default();
        let record = BaseRecord::to(&self.topic).key(http).payload(&payload);
        if let Err((e, _)) = self.producer.send(record) {
            tracing::warn!("kafka: publishing membership: {e}");
        }
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// Where a piece's lookup must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node: it holds the partition and has caught up on it.
    Here,
    /// A node's HTTP base address.
    Node(String),
    /// No live node says it holds the partition (a rebalance in progress, a node down).
    Unknown {
        /// The partition.
        partition: i32,
    },
}

/// The members topic, followed from its start by a background thread.
pub struct Directory {
    members: Arc<Mutex<BTreeMap<String, Member>>>,
    stop: Arc<AtomicBool>,
}

impl Directory {
    /// Starts following the members topic of `scans_topic`.
    pub fn follow(brokers: &str, scans_topic: &str) -> Result<Directory, KafkaNodeError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "imbtrack-directory")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&members_topic(scans_topic), 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let members = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (members.clone(), stop.clone());
        std::thread::Builder::new()
            .name("imbtrack-directory".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    let Ok(message) = message else { continue };
                    let Some(member) = message
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Member>(p).ok())
                    else {
                        continue;
                    };
                    if let Ok(mut members) = shared.lock() {
                        members.insert(member.http.clone(), member);
                    }
                }
            })
            .map_err(|e| KafkaNodeError::Thread(e.to_string()))?;
        Ok(Directory { members, stop })
    }

    /// The live members.
    pub fn members(&self) -> Vec<Member> {
        let oldest = now_ms() - MEMBER_TTL.as_millis() as i64;
        self.members
            .lock()
            .map(|m| {
                m.values()
                    .filter(|m| m.updated_ms >= oldest)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Where `key`'s lookup goes, its partition one of `count`: see [`route`]. Asked for every
    /// piece of a ZIP page, so it reads the entries in place rather than copying them.
    pub fn owner(&self, key: BarcodeKey, count: i32, here: &[i32]) -> Owner {
        let oldest = now_ms() - MEMBER_TTL.as_millis() as i64;
        let Ok(members) = self.members.lock() else {
            return route(key, count, here, std::iter::empty());
        };
        route(
            key,
            count,
            here,
            members.values().filter(|m| m.updated_ms >= oldest),
        )
    }
}

/// Where `key`'s lookup goes, its partition one of `count`. This node answers for the
/// partitions it holds and has caught up on (`here`), whatever the members topic says: a dead
/// member's last entry, a slow or missing members topic, or this node's own entry not read
/// back yet must never stop a node answering for what it holds. Any other partition goes to
/// the freshest `live` entry claiming it, not this node's own: when a dead member's entry and
/// its successor's both claim a partition, the successor's is the newer.
pub fn route<'m>(
    key: BarcodeKey,
    count: i32,
    here: &[i32],
    live: impl Iterator<Item = &'m Member>,
) -> Owner {
    let partition = partition_for(key, count);
    if here.contains(&partition) {
        return Owner::Here;
    }
    live.filter(|m| m.partitions.contains(&partition))
        .max_by_key(|m| m.updated_ms)
        .map_or(Owner::Unknown { partition }, |m| {
            Owner::Node(m.http.clone())
        })
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbtrack_barcode::{Barcode, Imb};

    fn member(http: &str, partitions: &[i32], updated_ms: i64) -> Member {
        Member {
            http: http.into(),
            partitions: partitions.to_vec(),
            partition_count: 6,
            updated_ms,
        }
    }

    #[test]
    fn a_node_answers_for_what_it_holds_whatever_the_members_topic_says() {
        let key = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap()).key();
        let partition = partition_for(key, 6);
        let other = (partition + 1) % 6;
        // No entries at all (no members topic), or only a dead member's still claiming it.
        assert_eq!(route(key, 6, &[partition], std::iter::empty()), Owner::Here);
        let dead = member("http://a", &[partition, other], 1_000);
        assert_eq!(
            route(key, 6, &[partition], [&dead].into_iter()),
            Owner::Here
        );
        // Not held here: the freshest claim wins (the dead member's successor's).
        let successor = member("http://c", &[partition], 2_000);
        assert_eq!(
            route(key, 6, &[other], [&dead, &successor].into_iter()),
            Owner::Node("http://c".into())
        );
        assert_eq!(
            route(key, 6, &[other], std::iter::empty()),
            Owner::Unknown { partition }
        );
    }
}
