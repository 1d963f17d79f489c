//! A Kafka broker for trying imbtrack's scale-out on one machine without a Kafka install:
//! librdkafka's mock cluster, listening on 127.0.0.1, with a scans topic and its members topic
//! (the mock cluster lets no client create topics).
//!
//!     cargo run -p imbtrack-kafka --example mock_broker -- [TOPIC] [PARTITIONS]
//!
//! It prints the bootstrap address, then serves until killed. The mock cluster keeps everything
//! in memory and is for trials and benchmarks, never for data that matters.

use std::time::Duration;

use rdkafka::mocking::MockCluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "scans".into());
    let partitions: i32 = args.next().map_or(Ok(4), |p| p.parse())?;
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(&topic, partitions, 1)?;
    cluster.create_topic(&imbtrack_kafka::members_topic(&topic), 1, 1)?;
    println!("{}", cluster.bootstrap_servers());
    eprintln!(
        "mock broker: topic {topic} with {partitions} partitions, and {topic}-members; \
         Ctrl-C stops it"
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
