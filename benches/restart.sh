#!/usr/bin/env bash
# A restart with a full open day: `imbtrack ingest` of a feed whose days are all still open (none
# due for sealing at NOW) leaves every scan in the head and writes a head checkpoint; then
# `imbtrack serve` is started on the store, with the checkpoint and without it (whole WAL
# replayed), and timed from launch until it listens. Prints one JSON line per case with the
# open time, the server's resident memory (VmRSS) once listening, the head's own bytes per
# scan (`imbtrack stats`), and the RSS of a server on an empty store for comparison.
#
#   bash benches/restart.sh                      # PIECES=1250000: ~5 M open scans
#   PIECES=2500000 bash benches/restart.sh       # ~10 M open scans (feed ~1 GB, store ~1.2 GB)
#   BIN=/path/to/imbtrack bash benches/restart.sh  # another build
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/http/serve.sh

PIECES=${PIECES:-1250000}
WORK=${WORK:-target/bench-restart}
PORT=${PORT:-18091}
# The feed covers two days and stops an hour before NOW: both days are open at NOW.
START=2026-11-20
NOW=2026-11-21T23:00:00Z

if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p imbtrack
  BIN=$PWD/target/release/imbtrack
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
FEED=$WORK/open-$PIECES.psv
DATA=$WORK/data-$PIECES

[ -f "$FEED" ] || "$BIN" gen --pieces "$PIECES" --start "$START" --until "$NOW" --now "$NOW" \
  --out "$FEED" > /dev/null
if [ ! -f "$DATA/head.ckpt" ]; then
  rm -rf "$DATA"
  "$BIN" --data "$DATA" --now "$NOW" ingest "$FEED" > "$WORK/ingest.json"
fi
STATS=$("$BIN" --data "$DATA" --now "$NOW" stats)
head_scans=$(sed -E 's/.*"head_scans":([0-9]+).*/\1/' <<< "$STATS")
head_bytes=$(sed -E 's/.*"head_bytes":([0-9]+).*/\1/' <<< "$STATS")

# Starts the server on $1, prints seconds from launch to listening and its VmRSS in MiB.
open_and_measure() {
  local data=$1 started listening rss
  started=$(date +%s.%N)
  serve_bench "$BIN" "$data" "$NOW" "$PORT" "$WORK"
  listening=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
  kill "$SERVER"
  wait "$SERVER" 2> /dev/null || true
  # printf: bc writes .36 for 0.36, which is not JSON.
  echo "$(printf %.3f "$(bc <<< "$listening - $started")") $((rss / 1024))"
}

EMPTY=$WORK/empty
rm -rf "$EMPTY"
read -r _ empty_rss <<< "$(open_and_measure "$EMPTY")"
read -r with_s with_rss <<< "$(open_and_measure "$DATA")"
mv "$DATA/head.ckpt" "$WORK/head.ckpt.aside"
read -r without_s without_rss <<< "$(open_and_measure "$DATA")"
mv "$WORK/head.ckpt.aside" "$DATA/head.ckpt"

per_scan=$(bc <<< "scale=1; $head_bytes / $head_scans")
echo "{\"case\":\"checkpoint\",\"open_scans\":$head_scans,\"open_s\":$with_s,\"rss_mib\":$with_rss,\"empty_store_rss_mib\":$empty_rss,\"head_bytes_per_scan\":$per_scan}"
echo "{\"case\":\"wal_replay\",\"open_scans\":$head_scans,\"open_s\":$without_s,\"rss_mib\":$without_rss,\"empty_store_rss_mib\":$empty_rss}"
