#!/usr/bin/env bash
# Measures every row of the table in docs/performance.md with `kopek bench`, RUNS times each,
# back to back, and prints each run and the median per row. Build first:
#   cargo build --release --bin kopek
#
#   scripts/perf-table.sh [RUNS] [ROW ...]     rows: stream hot transactions authorize http pg pgbench million
#   scripts/perf-table.sh 3                    every row, 3 runs each
#   scripts/perf-table.sh 1 stream hot         two rows, once
#
# KOPEK_BENCH_SERVER is the PostgreSQL server for the pg and pgbench rows (default
# postgres://postgres@127.0.0.1:5432); they use a scratch database, kopek_bench, dropped after.
# Measure on a quiet machine: the script prints the load average before every run.
set -euo pipefail
runs=${1:-3}
shift || true
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(stream hot transactions authorize http pg pgbench million)
kopek="$(git rev-parse --show-toplevel)/target/release/kopek"
server="${KOPEK_BENCH_SERVER:-postgres://postgres@127.0.0.1:5432}"
out=$(mktemp -d)
admin() { psql "$server/postgres" -qAtc "$1" >/dev/null; }
fresh() { admin "DROP DATABASE IF EXISTS kopek_bench WITH (FORCE)"; admin "CREATE DATABASE kopek_bench"; }
trap 'admin "DROP DATABASE IF EXISTS kopek_bench WITH (FORCE)" 2>/dev/null || true' EXIT

args_of() {
  case $1 in
    stream) echo "--transfers 300000" ;;
    hot) echo "--transfers 300000 --distribution hot" ;;
    transactions) echo "--transfers 300000 --surface transactions" ;;
    authorize) echo "--transfers 100000 --surface authorize --concurrency 64" ;;
    http) echo "--transfers 100000 --surface http --concurrency 64" ;;
    pg) echo "--transfers 300000 --database $server/kopek_bench --concurrency 8 --window 2" ;;
    million) echo "--accounts 1000000 --transfers 100000" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for row in "${rows[@]}"; do
  for run in $(seq 1 "$runs"); do
    echo "== $row run $run; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$row" = pgbench ]; then
      fresh
      pgbench -i -s 8 -q "$server/kopek_bench" >/dev/null 2>&1
      pgbench -c 8 -j 2 -T 20 "$server/kopek_bench" 2>/dev/null | grep -E "^(tps|latency average)" |
        tee -a "$out/pgbench.txt"
      continue
    fi
    [ "$row" = pg ] && fresh
    # shellcheck disable=SC2046
    "$kopek" bench --json $(args_of "$row") | tee -a "$out/$row.jsonl"
  done
done

echo "== medians of $runs (tx/s; batch p99 ms; query p99 ms; rss; idle rss)"
for row in "${rows[@]}"; do
  if [ "$row" = pgbench ]; then
    printf '%-13s %s tps\n' pgbench \
      "$(grep '^tps' "$out/pgbench.txt" | awk '{ print $3 }' | median)"
    continue
  fi
  field() { python3 -c "import json,sys; [print(eval('d' + sys.argv[1])) for d in map(json.loads, sys.stdin)]" "$1" <"$out/$row.jsonl"; }
  printf '%-13s %s  %s  %s  %s  %s  (runs: %s)\n' "$row" \
    "$(field "['accepted_per_second']" | median)" \
    "$(field "['batch_latency_ms']['p99']" | median)" \
    "$(field "['query_latency_ms']['p99']" | median)" \
    "$(field "['rss_bytes']" | median)" \
    "$(field "['rss_idle_bytes']" | median)" \
    "$(field "['accepted_per_second']" | paste -sd/ -)"
done
echo "runs kept in $out"
