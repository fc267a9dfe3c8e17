# Shared by bench/run and bench/crash: builds, a database of its own with a seeded catalogue,
# starting and stopping the service. Source it after `cd` to the repository root.
# BENCH_PROFILE: release (default) or dev (faster to build, for CI's short runs).

profile=${BENCH_PROFILE:-release}
port=${BENCH_PORT:-18000}
database=ei_bench_$$
server=postgres://postgres@127.0.0.1:5432
export DATABASE_URL=$server/$database
prefix="bench:$$:"
work=$(mktemp -d /tmp/event-ingest-bench.XXXXXX)
service_pid=

log() { printf '\n==> %s\n' "$*" >&2; }

cleanup() {
  stop_service
  psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "${prefix}*" | xargs -r -n 1000 redis-cli del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Builds the service and the load generator; sets $bin and $loadgen.
build() {
  scripts/services-up >&2
  local flag=--release dir=release
  if [ "$profile" = dev ]; then flag=; dir=debug; fi
  log "building ($profile)"
  cargo build $flag --bins >&2
  bin=${BENCH_BIN:-target/$dir/event-ingest}
  loadgen=$(cargo build $flag --bench loadgen --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')
  log "seeding the catalogue into $database"
  "$bin" seed-catalog --items 10000 --users 1000 >&2
}

# start_service JOURNAL_DIR [ENV=VALUE ...]: starts the service and waits until it listens.
start_service() {
  local journal=$1; shift
  env "$@" JOURNAL_DIR="$journal" PORT=$port REDIS_KEY_PREFIX="$prefix" RUST_LOG=${RUST_LOG:-warn} \
    "$bin" serve >>"$work/service.log" 2>&1 &
  service_pid=$!
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/health/live" >/dev/null && return 0
    sleep 0.1
  done
  echo "the service did not start; its log:" >&2; cat "$work/service.log" >&2; exit 1
}

stop_service() {
  if [ -n "$service_pid" ] && kill -0 "$service_pid" 2>/dev/null; then
    kill -TERM "$service_pid"; wait "$service_pid" || true
  fi
  service_pid=
}

rows() { psql -qtA "$DATABASE_URL" -c "SELECT count(*) FROM interaction_logs"; }

# Waits until the service's journal holds nothing unwritten.
wait_drained() {
  for _ in $(seq 1 1500); do
    used=$(curl -s "http://127.0.0.1:$port/health/ready" | python3 -c 'import json,sys; print(json.load(sys.stdin)["handoff"]["used_bytes"])' 2>/dev/null || echo busy)
    [ "$used" = 0 ] && return 0
    sleep 0.2
  done
  echo "the journal did not drain" >&2; exit 1
}
