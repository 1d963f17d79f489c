#!/usr/bin/env bash
# One node through Kafka (librdkafka's mock broker, crates/kafka/examples/mock_broker.rs, or the
# broker at $BROKERS) against `imbtrack ingest` of the same feed: prints the file ingest time,
# and the time from the node's first queryable scans (its first batch, the group join excluded)
# to all of them.
#   bash benches/kafka.sh FEED    (build first: cargo build --release -p imbtrack --features kafka
#                                   and cargo build --release -p imbtrack-kafka --example mock_broker)
#   BROKERS=127.0.0.1:19092 bash benches/kafka.sh FEED    a real broker, with an empty topic
#                                   "scans" of 4 partitions (docs/scale-out.md: tansu)
# The mock broker keeps about 13 MB a partition: keep feeds under ~300 k scans a partition.
set -euo pipefail
FEED=$(realpath "$1")
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/imbtrack}
BROKER_BIN=${BROKER_BIN:-$PWD/target/release/examples/mock_broker}
NOW=2025-01-20T00:00:00Z
W=$(mktemp -d)
BROKER=
NODE=
trap 'kill $BROKER $NODE 2>/dev/null || true; rm -rf $W' EXIT
if [ -z "${BROKERS:-}" ]; then
  "$BROKER_BIN" scans 4 > $W/broker.out 2>/dev/null &
  BROKER=$!
  while [ ! -s $W/broker.out ]; do sleep 0.1; done
  BROKERS=$(head -1 $W/broker.out)
fi
openssl rand -hex 32 > $W/cluster.secret
S=$(date +%s.%N)
$BIN --data $W/file --now $NOW ingest $FEED > $W/ingest.json
E=$(date +%s.%N)
ACC=$(sed -E 's/.*"accepted":([0-9]+).*/\1/' $W/ingest.json)
echo "file ingest: $ACC scans in $(echo "$E - $S" | bc) s"
$BIN --data $W/prod --now $NOW produce --brokers $BROKERS --topic scans $FEED > $W/produce.json
$BIN --data $W/node --now $NOW serve --listen 127.0.0.1:18097 --kafka-brokers $BROKERS --kafka-topic scans --kafka-group g \
  --cluster-secret $W/cluster.secret 2> $W/node.log &
NODE=$!
S=
while true; do
  N=$(curl -s http://127.0.0.1:18097/metrics | awk '/^imbtrack_scans /{printf "%d", $2}' || true)
  [ -n "$N" ] && [ -z "$S" ] && [ "$N" -gt 0 ] && S=$(date +%s.%N)
  [ -n "$N" ] && [ "$N" -ge "$ACC" ] && break
  sleep 0.02
done
E=$(date +%s.%N)
echo "kafka node: $N scans queryable $(echo "$E - $S" | bc) s after the first were (group join excluded)"
