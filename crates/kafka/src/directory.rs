//! Who holds which partition: every node publishes its HTTP address and assignment on a
//! members topic (one partition, compacted in production: the latest message per node is what
//! counts), and a [`Directory`] reads that topic to route a piece's lookup to its owner.
//!
//! Entries are signed with the cluster secret (HMAC-SHA-256 over the entry's JSON; the value is
//! `v1 <hex MAC> <JSON>`), and a directory believes only entries that secret signed: whoever
//! can write to the topic without it cannot draw lookups, and the callers' identities that go
//! with them, to an address of theirs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use imbtrack_barcode::BarcodeKey;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::wire::partition_for;
use crate::KafkaNodeError;

/// A member's entry older than this is taken as gone (members republish every few seconds).
pub const MEMBER_TTL: Duration = Duration::from_secs(15);

/// The members topic of a scans topic.
pub fn members_topic(topic: &str) -> String {
    format!("{topic}-members")
}

/// How to make the members topic by hand, for an operator whose broker will not let nodes.
pub fn members_topic_command(topic: &str) -> String {
    format!(
        "kafka-topics.sh --create --topic {} --partitions 1 --replication-factor 3 \
         --config cleanup.policy=compact",
        members_topic(topic)
    )
}

/// Makes sure the members topic of `scans_topic` exists: a node creates it (one partition,
/// compacted) when it is missing and the broker allows, and otherwise stops at start with
/// [`KafkaNodeError::NoMembersTopic`]: nodes without it could route nothing between them.
/// Topics are listed whole, since asking for one by name makes brokers that auto-create
/// topics create it with their defaults (many partitions, not compacted).
pub fn ensure_members_topic(brokers: &str, scans_topic: &str) -> Result<(), KafkaNodeError> {
    let name = members_topic(scans_topic);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    if metadata
        .topics()
        .iter()
        .any(|t| t.name() == name && !t.partitions().is_empty())
    {
        return Ok(());
    }
    let replication = metadata.brokers().len().clamp(1, 3) as i32;
    let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let refused = |why: String| KafkaNodeError::NoMembersTopic {
        topic: name.clone(),
        why,
        command: members_topic_command(scans_topic),
    };
    let results = futures_executor::block_on(admin.create_topics([&topic], &options))
        .map_err(|e| refused(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(refused(code.to_string())),
        }
    }
    tracing::info!("kafka: created the members topic {name} (1 partition, compacted)");
    Ok(())
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
    /// The scans topic's partitions it is assigned (caught up on or not): the freshest entry
    /// naming a partition here is the word on who has it, so a dead member's last entry stops
    /// counting for a partition as soon as its successor says it was given it.
    #[serde(default)]
    pub assigned: Vec<i32>,
    /// The partitions it answers for: assigned and caught up on.
    pub partitions: Vec<i32>,
    /// The scans topic's partition count.
    pub partition_count: i32,
    /// When it said so, ms since the epoch.
    pub updated_ms: i64,
}

/// HMAC-SHA-256 of an entry's JSON with the cluster secret, in hex.
fn entry_mac(secret: &[u8], json: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(json);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A members-topic value: `member` signed with `secret`.
pub fn sign_member(member: &Member, secret: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(member).unwrap_or_default();
    let mut value = format!("v1 {} ", entry_mac(secret, &json)).into_bytes();
    value.extend_from_slice(&json);
    value
}

/// The member a members-topic value describes, if `secret` signed it.
pub fn verify_member(value: &[u8], secret: &[u8]) -> Option<Member> {
    let rest = value.strip_prefix(b"v1 ")?;
    let (mac, json) = (rest.get(..64)?, rest.get(65..)?);
    if rest.get(64) != Some(&b' ') {
        return None;
    }
    if !bool::from(entry_mac(secret, json).as_bytes().ct_eq(mac)) {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Publishes a node's [`Member`] entry, signed with the cluster secret.
pub struct MemberPublisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    secret: Vec<u8>,
}

impl MemberPublisher {
    /// A publisher to the members topic of `scans_topic`, signing with `secret`.
    pub fn connect(
        brokers: &str,
        scans_topic: &str,
        secret: &[u8],
    ) -> Result<MemberPublisher, KafkaNodeError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0")
            .create()?;
        Ok(MemberPublisher {
            producer,
            topic: members_topic(scans_topic),
            secret: secret.to_vec(),
        })
    }

    /// Says that `http` is assigned `assigned` and answers for `partitions` (of
    /// `partition_count`) now.
    pub fn publish(&self, http: &str, assigned: &[i32], partitions: &[i32], partition_count: i32) {
        let member = Member {
            http: http.to_string(),
            assigned: assigned.to_vec(),
            partitions: partitions.to_vec(),
            partition_count,
            updated_ms: now_ms(),
        };
        let payload = sign_member(&member, &self.secret);
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
    /// Starts following the members topic of `scans_topic`, believing entries `secret` signed.
    pub fn follow(
        brokers: &str,
        scans_topic: &str,
        secret: &[u8],
    ) -> Result<Directory, KafkaNodeError> {
        let secret = secret.to_vec();
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
                    let Some(member) = message.payload().and_then(|p| verify_member(p, &secret))
                    else {
                        metrics::counter!("imbtrack_kafka_unsigned_members_total").increment(1);
                        tracing::warn!(
                            "kafka: members entry at offset {} ignored: not signed with this \
                             cluster's secret",
                            message.offset()
                        );
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

    /// The members answering for the partitions (of `count`) not in `here`, each once, for a
    /// query over all pieces; `Err(partition)` names a partition nobody answers for.
    pub fn owners_besides(&self, count: i32, here: &[i32]) -> Result<Vec<String>, i32> {
        let members = self.members();
        let mut owners: Vec<String> = Vec::new();
        for partition in (0..count).filter(|p| !here.contains(p)) {
            let owner = claimant(partition, members.iter()).ok_or(partition)?;
            if !owners.contains(&owner.http) {
                owners.push(owner.http.clone());
            }
        }
        Ok(owners)
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
/// back yet must never stop a node answering for what it holds. Any other partition goes by
/// [`claimant`].
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
    claimant(partition, live).map_or(Owner::Unknown { partition }, |m| {
        Owner::Node(m.http.clone())
    })
}

/// The member that answers for `partition`: the freshest entry saying it was assigned the
/// partition, if that entry also says it has caught up on it. When a member dies, its last
/// entry stops counting for its partitions as soon as their new owners say they have them,
/// even while they are still replaying (then nobody answers, rather than a dead address).
pub fn claimant<'m>(partition: i32, live: impl Iterator<Item = &'m Member>) -> Option<&'m Member> {
    live.filter(|m| m.assigned.contains(&partition) || m.partitions.contains(&partition))
        .max_by_key(|m| m.updated_ms)
        .filter(|m| m.partitions.contains(&partition))
}

/// The partitions `me` keeps standbys of, `replicas` standbys a partition: the live members,
/// `me` among them, in address order form a ring, and each member's assigned partitions are
/// followed by the `replicas` members after it (all the others when there are no more). A
/// member's standbys change only when members come or go, not on every rebalance.
pub fn standby_partitions(me: &str, replicas: usize, members: &[Member]) -> Vec<i32> {
    let mut ring: Vec<&str> = members.iter().map(|m| m.http.as_str()).collect();
    ring.push(me);
    ring.sort_unstable();
    ring.dedup();
    let Some(mine) = ring.iter().position(|m| *m == me) else {
        return Vec::new();
    };
    let mut partitions: Vec<i32> = Vec::new();
    for member in members.iter().filter(|m| m.http != me) {
        let Some(at) = ring.iter().position(|m| *m == member.http) else {
            continue;
        };
        // How far after `member` this node is on the ring.
        let distance = (mine + ring.len() - at) % ring.len();
        if distance >= 1 && distance <= replicas {
            partitions.extend(&member.assigned);
        }
    }
    partitions.sort_unstable();
    partitions.dedup();
    partitions
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
            assigned: partitions.to_vec(),
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
        // A successor given the partition but still replaying it: the dead member's entry no
        // longer counts for it, though nobody answers yet.
        let replaying = Member {
            partitions: Vec::new(),
            ..member("http://c", &[partition], 2_000)
        };
        assert_eq!(
            route(key, 6, &[other], [&dead, &replaying].into_iter()),
            Owner::Unknown { partition }
        );
        // ...while for its other partition the dead member's entry is still the only word.
        assert_eq!(
            claimant(other, [&dead, &replaying].into_iter()),
            Some(&dead)
        );
    }

    #[test]
    fn each_partition_is_followed_by_the_next_members_on_the_ring() {
        let members = [
            member("http://a", &[0, 1], 1),
            member("http://b", &[2, 3], 1),
            member("http://c", &[4, 5], 1),
        ];
        let follows = |me: &str, replicas| standby_partitions(me, replicas, &members);
        assert_eq!(follows("http://a", 1), vec![4, 5]);
        assert_eq!(follows("http://b", 1), vec![0, 1]);
        assert_eq!(follows("http://c", 1), vec![2, 3]);
        assert_eq!(follows("http://a", 2), vec![2, 3, 4, 5]);
        // More replicas than other members: all of theirs; none: nothing.
        assert_eq!(follows("http://a", 5), vec![2, 3, 4, 5]);
        assert_eq!(follows("http://a", 0), Vec::<i32>::new());
        // Its own entry not read back yet: it still has its place on the ring.
        assert_eq!(standby_partitions("http://b", 1, &members[..1]), vec![0, 1]);
        // Every partition has exactly `replicas` standbys.
        for replicas in 1..=2 {
            let mut all: Vec<i32> = ["http://a", "http://b", "http://c"]
                .iter()
                .flat_map(|me| follows(me, replicas))
                .collect();
            all.sort_unstable();
            let expected: Vec<i32> = (0..6).flat_map(|p| vec![p; replicas]).collect();
            assert_eq!(all, expected);
        }
    }

    #[test]
    fn only_entries_the_cluster_secret_signed_are_believed() {
        let secret = [3u8; 32];
        let entry = member("http://a:8080", &[0, 1], 1_000);
        let value = sign_member(&entry, &secret);
        assert_eq!(verify_member(&value, &secret), Some(entry.clone()));
        // Another secret, no signature, a changed claim, a truncated value: ignored.
        assert_eq!(verify_member(&value, &[4u8; 32]), None);
        let json = serde_json::to_vec(&entry).unwrap();
        assert_eq!(verify_member(&json, &secret), None);
        let widened = String::from_utf8(value.clone())
            .unwrap()
            .replace("[0,1]", "[0,1,2]");
        assert_eq!(verify_member(widened.as_bytes(), &secret), None);
        for cut in [0, 3, 60, 67, value.len() - 1] {
            assert_eq!(verify_member(&value[..cut], &secret), None, "{cut}");
        }
    }
}
