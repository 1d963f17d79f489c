#!/usr/bin/env bash
# Runs the fuzz targets (all, or those named) for FUZZ_SECONDS each (default 30), starting from
# the committed seeds in seeds/TARGET (data/feeds for the feed target); new inputs go to corpus/TARGET (not committed) and any
# crash to artifacts/TARGET. Needs `cargo install cargo-fuzz`; the stable toolchain serves
# through RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-30}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(barcode feed bucket bucket_v2 wal http kafka_frame)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  seeds="seeds/$target"
  # The feed fixtures of the tests are the feed target's seeds.
  [ "$target" = feed ] && seeds=../data/feeds
  echo "== fuzz $target for ${seconds}s"
  log=$(mktemp)
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "corpus/$target" "$seeds" -- \
      -max_total_time="$seconds" -print_final_stats=1 > "$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed (a crash is saved under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E '^Done|stat::number_of_executed_units' "$log" || true
  rm -f "$log"
done
