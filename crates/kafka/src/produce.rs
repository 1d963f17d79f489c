//! Publishing parsed scans: each to the partition of its piece ([`partition_for`]), keyed by the
//! piece, through librdkafka's idempotent producer (retries never duplicate nor reorder).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use imbtrack_feed::{ScanEvent, SymbolTable};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::wire::{self, partition_for};
use crate::KafkaNodeError;

/// Counts deliveries as librdkafka reports them.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::error!("kafka: a scan was not delivered: {e}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A producer of scans to one topic.
pub struct ScanProducer {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    partitions: i32,
}

impl ScanProducer {
    /// Connects, and learns the topic's partition count (the topic must exist: its partition
    /// count is part of the deployment, not something a producer should pick).
    pub fn connect(brokers: &str, topic: &str) -> Result<ScanProducer, KafkaNodeError> {
        let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .create_with_context(Deliveries::default())?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(KafkaNodeError::NoTopic(topic.to_string()));
        }
        Ok(ScanProducer {
            producer,
            topic: topic.to_string(),
            partitions,
        })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Queues every event (waiting while librdkafka's queue is full).
    pub fn send(&self, events: &[ScanEvent], symbols: &SymbolTable) -> Result<(), KafkaNodeError> {
        for event in events {
            let key = wire::message_key(event.barcode);
            let payload = wire::encode(event, symbols);
            let mut record = BaseRecord::to(&self.topic)
                .key(&key[..])
                .payload(&payload[..])
                .partition(partition_for(event.barcode, self.partitions));
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Waits until everything queued is delivered (or failed); returns (delivered, failed).
    pub fn flush(&self, timeout: Duration) -> Result<(u64, u64), KafkaNodeError> {
        self.producer.flush(timeout)?;
        let context = self.producer.context();
        Ok((
            context.delivered.load(Ordering::Relaxed),
            context.failed.load(Ordering::Relaxed),
        ))
    }
}
