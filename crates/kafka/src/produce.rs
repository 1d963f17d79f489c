//! Publishing parsed scans: each to the partition of its piece ([`partition_for`]), in frames of
//! up to [`wire::FRAME_SCANS`] scans of one partition (keyed by the frame's first piece),
//! through librdkafka's idempotent producer (retries never duplicate nor reorder).

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
    /// The scans in the message.
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, scans: Box<u64>) {
        match result {
            Ok(_) => self.delivered.fetch_add(*scans, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::error!("kafka: a frame of {scans} scans was not delivered: {e}");
                self.failed.fetch_add(*scans, Ordering::Relaxed)
            }
        };
    }
}

/// A producer of scans to one topic.
pub struct ScanProducer {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    partitions: i32,
    frame_scans: usize,
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
            frame_scans: wire::FRAME_SCANS,
        })
    }

    /// Frames of at most `scans` scans instead of [`wire::FRAME_SCANS`] (at least one): smaller
    /// frames reach consumers sooner, larger ones cost less per scan.
    pub fn with_frame_scans(mut self, scans: usize) -> ScanProducer {
        self.frame_scans = scans.clamp(1, wire::FRAME_SCANS);
        self
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Queues every event, in frames by partition (waiting while librdkafka's queue is full).
    pub fn send(&self, events: &[ScanEvent], symbols: &SymbolTable) -> Result<(), KafkaNodeError> {
        let mut by_partition: Vec<Vec<ScanEvent>> =
            (0..self.partitions).map(|_| Vec::new()).collect();
        for event in events {
            by_partition[partition_for(event.barcode, self.partitions) as usize].push(*event);
        }
        for (partition, events) in by_partition.iter().enumerate() {
            for frame in events.chunks(self.frame_scans) {
                self.send_frame(partition as i32, frame, symbols)?;
            }
        }
        Ok(())
    }

    fn send_frame(
        &self,
        partition: i32,
        events: &[ScanEvent],
        symbols: &SymbolTable,
    ) -> Result<(), KafkaNodeError> {
        let key = wire::message_key(events[0].barcode);
        let payload = wire::encode_frame(events, symbols);
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(events.len() as u64))
            .key(&key[..])
            .payload(&payload[..])
            .partition(partition);
        {
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
