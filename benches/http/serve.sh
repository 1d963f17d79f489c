# Sourced by the HTTP bench scripts: starts `imbtrack serve` with an admin token (every request
# authenticated and audited, as in production) and waits until it listens.
#   serve_bench BIN DATA NOW PORT WORK [extra serve flags...]
# Sets TOKEN and SERVER (the pid; killed on exit).
serve_bench() {
  local bin=$1 data=$2 now=$3 port=$4 work=$5
  shift 5
  rm -f "$work/tokens.toml"
  TOKEN=$("$bin" token new --id bench --scope admin --append "$work/tokens.toml" \
    | sed -E 's/.*"token":"([^"]+)".*/\1/')
  "$bin" --data "$data" --now "$now" serve --listen "127.0.0.1:$port" \
    --tokens "$work/tokens.toml" --audit "$work/audit.jsonl" "$@" 2> "$work/serve.log" &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 1 3000); do
    grep -q "serving" "$work/serve.log" && return 0
    kill -0 $SERVER 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.02
  done
  echo "the server did not start; see $work/serve.log" >&2
  exit 1
}
