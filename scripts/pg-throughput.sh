#!/usr/bin/env bash
# Throughput of kopek on PostgreSQL with 1 and then 3 processes, on a scratch database that it
# creates and drops. Build first: cargo build --release -p kopek-server --bin kopek --example load
#
#   scripts/pg-throughput.sh SURFACE COUNT CONCURRENCY_ONE CONCURRENCY_EACH_OF_THREE
#   scripts/pg-throughput.sh authorize 60000 32 11
#   scripts/pg-throughput.sh stream 120000 4 2
#
# KOPEK_BENCH_SERVER is the PostgreSQL server (default postgres://postgres@127.0.0.1:5432).
# Compare with pgbench on the same server: pgbench -i -s 10 DB; pgbench -c 32 -j 2 -T 20 DB.
set -euo pipefail
surface=$1 count=$2 one=$3 each=$4
bin="$(git rev-parse --show-toplevel)/target/release"
server="${KOPEK_BENCH_SERVER:-postgres://postgres@127.0.0.1:5432}"
url="$server/kopek_throughput"
logs=$(mktemp -d)
admin() { psql "$server/postgres" -qAtc "$1" >/dev/null; }
fresh() { admin "DROP DATABASE IF EXISTS kopek_throughput WITH (FORCE)"; admin "CREATE DATABASE kopek_throughput"; }
serve() { "$bin/kopek" serve --database "$url" --grpc-listen "127.0.0.1:$1" --http-listen 127.0.0.1:0 >"$logs/serve-$1.log" 2>&1 & }
stop() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap 'stop; admin "DROP DATABASE IF EXISTS kopek_throughput WITH (FORCE)"' EXIT

fresh
serve 50161
sleep 2
echo "== 1 process, $surface, concurrency $one"
"$bin/examples/load" "$surface" http://127.0.0.1:50161 "$count" "$one" | tail -n 3
stop

fresh
for port in 50162 50163 50164; do serve $port; done
sleep 3
echo "== 3 processes, $surface, concurrency $each each"
pids=()
for port in 50162 50163 50164; do
  "$bin/examples/load" "$surface" "http://127.0.0.1:$port" $((count / 3)) "$each" >"$logs/load-$port.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
for port in 50162 50163 50164; do tail -n 3 "$logs/load-$port.log"; done
"$bin/kopek" verify --database "$url" | tail -n 2
