#!/usr/bin/env bash
# What status-change subscriptions cost ingest: the same feed pushed (POST /v1/scans, one body)
# into a fresh store twice, without subscriptions and with one subscription to the N busiest
# Mailer IDs of the feed (their deliveries queue in the outbox: the receiver is a closed port),
# alternating RUNS times. Prints each push's seconds and the pieces told.
#   bash benches/webhooks.sh FEED [N] [RUNS]   (build first: cargo build --release)
set -euo pipefail
FEED=$(realpath "$1"); N=${2:-10}; RUNS=${3:-2}
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/imbtrack}
NOW=2025-01-20T00:00:00Z
W=$(mktemp -d); SERVER=
trap 'kill $SERVER 2>/dev/null || true; rm -rf $W' EXIT
MIDS=$(python3 - "$FEED" "$N" <<'PY'
import collections, json, sys
counts = collections.Counter()
with open(sys.argv[1]) as f:
    at = f.readline().rstrip("\n").split("|").index("imb")
    for line in f:
        imb = line.split("|")[at]
        if len(imb) >= 20:
            counts[imb[5:14] if imb[5] == "9" else imb[5:11]] += 1
print(json.dumps([m for m, _ in counts.most_common(int(sys.argv[2]))]))
PY
)
push() { # $1: data dir, $2: "sub" to subscribe first
  $BIN --data $1 --now $NOW serve --listen 127.0.0.1:18311 --max-body 268435456 --webhook-allow 127.0.0.1:9 2> $W/serve.log &
  SERVER=$!
  until curl -sf http://127.0.0.1:18311/healthz > /dev/null; do sleep 0.1; done
  if [ "$2" = sub ]; then
    curl -sf -X POST http://127.0.0.1:18311/v1/subscriptions \
      -d "{\"url\":\"http://127.0.0.1:9/x\",\"secret\":\"0123456789abcdef\",\"mailer_ids\":$MIDS}" > /dev/null
  fi
  S=$(date +%s.%N)
  curl -sf -X POST --data-binary @$FEED http://127.0.0.1:18311/v1/scans > $W/push.json
  E=$(date +%s.%N)
  TOLD=$(curl -sf http://127.0.0.1:18311/v1/subscriptions | python3 -c 'import json,sys; s=json.load(sys.stdin)["subscriptions"]; print(sum(x["pending"]+x["delivered"]+x["failed"]+x["dropped"] for x in s))')
  echo "$2: $(echo "$E - $S" | bc) s, $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted"])' $W/push.json) scans, $TOLD changes told"
  kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=
  rm -rf $1
}
for i in $(seq $RUNS); do
  push $W/plain none
  push $W/subscribed sub
done
