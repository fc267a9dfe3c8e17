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
  stop_nodes
  [ -d "$work/cluster" ] && scripts/cluster-down "$work/cluster"
  for db in "$database" "${database}_before"; do
    psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  redis-cli --scan --pattern "${prefix}*" | xargs -r -n 1000 redis-cli del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# bench_executable NAME: builds the bench target NAME (benches/) and prints its path.
bench_executable() {
  cargo build $flag "${features[@]}" --bench "$1" --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}

# Builds the service, the load generator and the floor server; sets $bin, $loadgen and $floor.
build() {
  scripts/services-up >&2
  local flag=--release dir=release features=()
  if [ "$profile" = dev ]; then flag=; dir=debug; fi
  [ -n "${BENCH_FEATURES:-}" ] && features=(--features "$BENCH_FEATURES")
  log "building ($profile${BENCH_FEATURES:+, features $BENCH_FEATURES})"
  cargo build $flag "${features[@]}" --bins >&2
  bin=target/$dir/event-ingest
  if [ -n "${BENCH_BIN:-}" ]; then
    # Under its own name: bench/cpu.py finds the service's processes by it.
    mkdir -p "$work/measured"
    cp "$BENCH_BIN" "$work/measured/event-ingest"
    bin=$work/measured/event-ingest
  fi
  loadgen=$(bench_executable loadgen)
  floor=$(bench_executable floor)
  log "seeding the catalogue into $database"
  "$bin" seed-catalog --items 10000 --users 1000 >&2
}

# start_service JOURNAL_DIR [ENV=VALUE ...]: starts the service and waits until it listens.
start_service() {
  local journal=$1; shift
  env "$@" JOURNAL_DIR="$journal" PORT=$port REDIS_KEY_PREFIX="$prefix" RUST_LOG=${RUST_LOG:-warn} \
    "$bin" serve >>"$work/service.log" 2>&1 &
  service_pid=$!
  await_live service "$work/service.log"
}

# start_floor: the floor server (benches/floor.rs) in the service's place, on its port.
start_floor() {
  "$floor" --port "$port" --key-prefix "$prefix" >>"$work/floor.log" 2>&1 &
  service_pid=$!
  await_live floor "$work/floor.log"
}

# await_live NAME LOG: waits until the server on $port answers /health/live; else shows LOG.
await_live() {
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/health/live" >/dev/null && return 0
    sleep 0.1
  done
  echo "the $1 did not start; its log:" >&2; cat "$2" >&2; exit 1
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

# The several-machine deployment (bench/crash cluster, bench/run jetstream): NATS and a Redis
# Cluster of their own (scripts/cluster-up), API nodes and writers as processes.
declare -A node_pids=()

# Starts NATS and the Redis Cluster; sets $nats_url and $cluster_redis_url.
cluster_up() {
  log "starting NATS and a three-master Redis Cluster (scripts/cluster-up)"
  scripts/cluster-up "$work/cluster" >/dev/null
  nats_url=$(sed -n 's/^NATS_URL=//p' "$work/cluster/env")
  cluster_redis_url=$(sed -n 's/^REDIS_URL=//p' "$work/cluster/env")
}

# start_node NAME COMMAND PORT [ENV=VALUE ...]: `event-ingest COMMAND` (serve or writer) on PORT;
# waits until it is ready.
start_node() {
  local name=$1 command=$2 node_port=$3; shift 3
  env "$@" PORT="$node_port" REDIS_KEY_PREFIX="$prefix" RUST_LOG=${RUST_LOG:-warn} \
    "$bin" "$command" >>"$work/$name.log" 2>&1 &
  node_pids[$name]=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$node_port/health/ready" >/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not become ready; its log:" >&2; cat "$work/$name.log" >&2; exit 1
}

# kill_node NAME: SIGKILL.
kill_node() {
  kill -KILL "${node_pids[$1]}" 2>/dev/null; wait "${node_pids[$1]}" 2>/dev/null || true
  unset "node_pids[$1]"
}

stop_nodes() {
  local name
  for name in "${!node_pids[@]}"; do
    kill -TERM "${node_pids[$name]}" 2>/dev/null; wait "${node_pids[$name]}" 2>/dev/null || true
  done
  node_pids=()
}

# metric PORT NAME: the sum of a metric's series on the node at PORT (0 if it does not answer).
metric() {
  curl -s "http://127.0.0.1:$1/metrics" |
    awk -v name="$2" '$1 == name || index($1, name "{") == 1 {sum += $2} END {printf "%d\n", sum}'
}
