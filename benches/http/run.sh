#!/usr/bin/env bash
# HTTP lookups under load: `imbtrack serve` driven by wrk, and the same lookups (same store data,
# same keys, same concurrency) against PostgreSQL driven by pgbench, in one run on this machine.
#
#   bash benches/http/run.sh                       # PIECES=1000000 DURATION=20 CONNECTIONS=32
#   PG= bash benches/http/run.sh                   # without PostgreSQL
#
# Needs: wrk; for the peer, psql and pgbench with a server at $PG (Debian: postgresql).
# Client and server share the machine's cores, as they would on one box; read ratios, not
# absolute figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/http/serve.sh

PIECES=${PIECES:-1000000}
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-32}
KEYS=${KEYS:-100000}
PG=${PG-"host=127.0.0.1 user=postgres"}
WORK=${WORK:-target/bench-http}
PORT=${PORT:-18088}
NOW=2025-01-20T00:00:00Z

cargo build --release -q -p imbtrack
BIN=$PWD/target/release/imbtrack
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
DATA=$WORK/data-$PIECES

if [ ! -f "$DATA/MANIFEST.json" ]; then
  echo "generating and ingesting $PIECES pieces..." >&2
  rm -rf "$DATA"
  "$BIN" gen --pieces "$PIECES" --days 3 --start 2025-01-10 --seed 7 --out "$WORK/feed-$PIECES.psv" >&2
  "$BIN" --data "$DATA" --now "$NOW" ingest "$WORK/feed-$PIECES.psv" >&2
fi
"$BIN" --data "$DATA" --now "$NOW" stats >&2
# Keys: distinct stored barcodes (IMb digits or IMpb), a random sample.
awk -F'|' 'NR > 1 && ($1 ~ /^[0-9]+$/ || $2 ~ /^[0-9]+$/) { print ($1 != "" ? $1 : $2) }' \
  "$WORK/feed-$PIECES.psv" | sort -u | shuf -n "$KEYS" --random-source=<(yes) > "$WORK/keys.txt"

# Nothing of an earlier run may be writing back while this one measures: PostgreSQL's
# checkpoint of the last load, the feed's pages.
if [ -n "$PG" ]; then
  psql "$PG" -q -c "DROP TABLE IF EXISTS imbtrack_http_scans, imbtrack_http_keys" -c "CHECKPOINT" >&2
fi
sync

# The server, with a token (every request authenticated and audited, as in production).
serve_bench "$BIN" "$DATA" "$NOW" "$PORT" "$WORK"
# Warm up (page cache, connections), then measure.
IMBTRACK_TOKEN=$TOKEN wrk -t1 -c"$CONNECTIONS" -d3s -s benches/http/lookup.lua \
  "http://127.0.0.1:$PORT" -- "$WORK/keys.txt" > /dev/null
IMBTRACK_TOKEN=$TOKEN wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s benches/http/lookup.lua \
  "http://127.0.0.1:$PORT" -- "$WORK/keys.txt" | tee "$WORK/wrk.txt" | grep '^{'
kill $SERVER; wait $SERVER 2>/dev/null || true
trap - EXIT

if [ -z "$PG" ]; then
  exit 0
fi
# PostgreSQL: the same feed COPYed (text columns, as the feed has them) with an index on the
# barcode, the same keys; pgbench with the same number of connections.
psql "$PG" -q -v ON_ERROR_STOP=1 <<SQL >&2
DROP TABLE IF EXISTS imbtrack_http_scans, imbtrack_http_keys;
CREATE TABLE imbtrack_http_scans (imb text, impb text, scan_datetime text, event_code text,
  facility_zip text, handling text, facility_name text, facility_city text, facility_state text,
  machine text);
\copy imbtrack_http_scans FROM '$WORK/feed-$PIECES.psv' WITH (FORMAT csv, DELIMITER '|', HEADER true)
ALTER TABLE imbtrack_http_scans ADD COLUMN barcode text GENERATED ALWAYS AS (coalesce(imb, impb)) STORED;
CREATE INDEX ON imbtrack_http_scans (barcode);
CREATE TABLE imbtrack_http_keys (n serial PRIMARY KEY, barcode text NOT NULL);
\copy imbtrack_http_keys (barcode) FROM '$WORK/keys.txt'
VACUUM ANALYZE imbtrack_http_scans;
VACUUM ANALYZE imbtrack_http_keys;
CHECKPOINT;
SQL
sync
rm -f "$WORK"/pgbench_log.*
PGOPTIONS= pgbench "$PG" -n -c "$CONNECTIONS" -j 1 -T 3 -f benches/http/lookup.sql -D nkeys="$KEYS" > /dev/null 2>&1
( cd "$WORK" && pgbench "$PG" -n -c "$CONNECTIONS" -j 1 -T "$DURATION" -f "$OLDPWD/benches/http/lookup.sql" \
    -D nkeys="$KEYS" -l --log-prefix=pgbench_log > pgbench.txt 2>&1 )
TPS=$(sed -nE 's/^tps = ([0-9.]+) .*/\1/p' "$WORK/pgbench.txt" | head -1)
# Per-transaction log: field 3 is the latency in microseconds.
cat "$WORK"/pgbench_log.* | awk '{ print $3 }' | sort -n > "$WORK/pg_latency.txt"
COUNT=$(wc -l < "$WORK/pg_latency.txt")
P50=$(awk -v n="$COUNT" 'NR == int(n * 0.50) + 1 { printf "%.3f", $1 / 1000; exit }' "$WORK/pg_latency.txt")
P99=$(awk -v n="$COUNT" 'NR == int(n * 0.99) + 1 { printf "%.3f", $1 / 1000; exit }' "$WORK/pg_latency.txt")
echo "{\"system\":\"postgresql\",\"transactions\":$COUNT,\"requests_per_s\":${TPS%.*},\"p50_ms\":$P50,\"p99_ms\":$P99}"
