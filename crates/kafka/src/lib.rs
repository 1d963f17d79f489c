/*!
imbtrack past one machine, on Kafka: plants (or `imbtrack produce`) publish scans to one topic,
partitioned by piece; each node of a consumer group ingests the partitions it is assigned into
its own store, and records in that store how far it has read each partition, durably with the
scans themselves.

# Brief overview

- [`wire`]: a scan as a message (key: the piece's index key; value: JSON) and
  [`partition_for`], the piece-to-partition function producers and routers share.
- [`ScanProducer`]: an idempotent producer that sends each scan to its piece's partition.
- [`Node`]: a consumer-group member. Each batch of messages is appended to the store together
  with the next offset of each partition it read ([`Store::append_at`]), in one fsync; an
  assigned partition resumes from the store's position (or from its start when this store never
  had it), whatever Kafka's committed offsets say, so a crash or a rebalance neither loses nor
  doubles a scan.
- [`Directory`]: who holds which partition. Nodes given an HTTP address to advertise publish
  their assignment on the members topic ([`members_topic`]); a directory follows it and names
  the [`Owner`] of a piece.

# Example

```no_run
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use imbtrack_engine::{Clock, Engine, EngineOptions};
use imbtrack_kafka::{Node, NodeConfig};

let (engine, _) = Engine::open("node-a".as_ref(), EngineOptions::with_clock(Clock::System))?;
let node = Node::join(Arc::new(engine), NodeConfig::new("kafka:9092", "scans", "imbtrack"))?;
node.run(&AtomicBool::new(false));
# Ok::<(), Box<dyn std::error::Error>>(())
```

[`Store::append_at`]: imbtrack_store::Store::append_at
*/
#![deny(missing_docs)]

#[cfg(feature = "client")]
mod directory;
#[cfg(feature = "client")]
mod node;
#[cfg(feature = "client")]
mod produce;
pub mod wire;

#[cfg(feature = "client")]
pub use crate::directory::{
    ensure_members_topic, members_topic, members_topic_command, sign_member, verify_member,
    Directory, Member, MemberPublisher, Owner, MEMBER_TTL,
};
#[cfg(feature = "client")]
pub use crate::node::{source_name, Node, NodeConfig, NodeStats};
#[cfg(feature = "client")]
pub use crate::produce::ScanProducer;
pub use crate::wire::partition_for;

/// A Kafka operation that failed.
#[cfg(feature = "client")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaNodeError {
    /// librdkafka reported an error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The members topic is missing and could not be created.
    #[error(
        "kafka: the members topic {topic:?} is missing and could not be created ({why}); \
         create it: {command}"
    )]
    NoMembersTopic {
        /// Its name.
        topic: String,
        /// What the broker said.
        why: String,
        /// How to create it.
        command: String,
    },
    /// The topic does not exist (or has no partitions).
    #[error("kafka: topic {0:?} does not exist; create it with the deployment's partition count")]
    NoTopic(String),
    /// The store refused a batch.
    #[error(transparent)]
    Store(imbtrack_store::StoreError),
    /// A background thread could not start.
    #[error("starting a thread: {0}")]
    Thread(String),
}
