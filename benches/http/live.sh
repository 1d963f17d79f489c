#!/usr/bin/env bash
# Lookups on a live node: `imbtrack serve` over a sealed store, driven by wrk looking up random
# stored pieces, first idle, then while a large feed lands in the spool and maintenance seals
# its days. Prints one JSON line per phase (p50, p99, max, lookups/s, non-2xx) and the ratio of
# live to idle p99.
#
#   bash benches/http/live.sh              # PIECES=250000 (~1.1 M scans sealed),
#                                          # FEED_PIECES=350000 (~1.6 M scans landing live)
#   BIN=/path/to/imbtrack bash benches/http/live.sh   # another build, e.g. an older release
#
# Needs: wrk. wrk and the server share the machine's cores; read ratios, not absolute figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/http/serve.sh

PIECES=${PIECES:-250000}
FEED_PIECES=${FEED_PIECES:-350000}
IDLE_S=${IDLE_S:-20}
LIVE_S=${LIVE_S:-30}
CONNECTIONS=${CONNECTIONS:-16}
KEYS=${KEYS:-100000}
WORK=${WORK:-target/bench-live}
PORT=${PORT:-18089}
NOW=2025-01-20T00:00:00Z

if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p imbtrack
  BIN=$PWD/target/release/imbtrack
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
SEALED=$WORK/sealed-$PIECES
DATA=$WORK/data
SPOOL=$WORK/spool
LIVE_FEED=$WORK/live-$FEED_PIECES.psv

# The sealed store (three days, all due at NOW) and the live feed (three later days, also due,
# so maintenance seals them as soon as they land), made once and reused.
if [ ! -f "$SEALED/MANIFEST.json" ]; then
  echo "generating and ingesting $PIECES pieces..." >&2
  rm -rf "$SEALED"
  "$BIN" gen --pieces "$PIECES" --days 3 --start 2025-01-10 --seed 7 --out "$WORK/sealed.psv" >&2
  "$BIN" --data "$SEALED" --now "$NOW" ingest "$WORK/sealed.psv" >&2
fi
if [ ! -f "$LIVE_FEED" ]; then
  "$BIN" gen --pieces "$FEED_PIECES" --days 3 --start 2025-01-14 --seed 11 --out "$LIVE_FEED" >&2
fi
awk -F'|' 'NR > 1 && ($1 ~ /^[0-9]+$/ || $2 ~ /^[0-9]+$/) { print ($1 != "" ? $1 : $2) }' \
  "$WORK/sealed.psv" | sort -u | shuf -n "$KEYS" --random-source=<(yes) > "$WORK/keys.txt"

# Each run starts from a copy of the sealed store, so the live feed is new to it.
rm -rf "$DATA" "$SPOOL"
cp -r "$SEALED" "$DATA"
mkdir -p "$SPOOL"
sync

serve_bench "$BIN" "$DATA" "$NOW" "$PORT" "$WORK" --spool "$SPOOL" --maintenance-every 2

lookups() { # phase seconds
  IMBTRACK_TOKEN=$TOKEN wrk -t1 -c"$CONNECTIONS" -d"$2s" --latency -s benches/http/lookup.lua \
    "http://127.0.0.1:$PORT" -- "$WORK/keys.txt" | tee "$WORK/wrk-$1.txt" | grep '^{' \
    | sed -E "s/^\{/{\"phase\":\"$1\",/"
}

# Warm up (page cache, connections), then idle.
IMBTRACK_TOKEN=$TOKEN wrk -t1 -c"$CONNECTIONS" -d3s -s benches/http/lookup.lua \
  "http://127.0.0.1:$PORT" -- "$WORK/keys.txt" > /dev/null
IDLE=$(lookups idle "$IDLE_S")
echo "$IDLE"

# Live: the feed is dropped into the spool (temp name, then renamed, as a plant would) two
# seconds into the run; the spool ingests it and maintenance seals its days meanwhile.
SEALS_BEFORE=$(grep -c "maintenance: sealed [1-9]" "$WORK/serve.log" || true)
(
  sleep 2
  cp "$LIVE_FEED" "$SPOOL/.live.psv.tmp"
  mv "$SPOOL/.live.psv.tmp" "$SPOOL/live.psv"
  started=$(date +%s.%N)
  while [ ! -e "$SPOOL/done/live.psv" ] && [ ! -e "$SPOOL/failed/live.psv" ]; do sleep 0.05; done
  ingested=$(date +%s.%N)
  while [ "$(grep -c "maintenance: sealed [1-9]" "$WORK/serve.log" || true)" -le "$SEALS_BEFORE" ]; do
    sleep 0.05
  done
  sealed=$(date +%s.%N)
  echo "{\"phase\":\"feed\",\"ingest_s\":$(echo "$ingested - $started" | bc),\"ingest_and_seal_s\":$(echo "$sealed - $started" | bc)}" > "$WORK/feed.json"
) &
FEEDER=$!
LIVE=$(lookups live "$LIVE_S")
echo "$LIVE"
wait $FEEDER
cat "$WORK/feed.json"
[ -e "$SPOOL/done/live.psv" ] || { echo "the live feed was not ingested" >&2; exit 1; }

# Lookups that found their head shard busy and went to the blocking pool.
curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/metrics" \
  | grep -E '^imbtrack_lookups_deferred_total' >&2 || echo "no lookup was deferred" >&2
p99() { sed -E 's/.*"p99_ms":([0-9.]+).*/\1/' <<< "$1"; }
echo "{\"live_p99_over_idle_p99\":$(echo "scale=2; $(p99 "$LIVE") / $(p99 "$IDLE")" | bc)}"
kill $SERVER; wait $SERVER 2>/dev/null || true
trap - EXIT
