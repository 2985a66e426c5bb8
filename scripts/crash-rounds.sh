#!/usr/bin/env bash
# Runs the journal-first kill -9 test with ROUNDS crash rounds (default 200; the suite runs
# 20). Each round kills `kopek serve --journal` at a random moment while four streams post
# transfers, restarts it and checks every acknowledged transfer; the seed of the kill moments
# is printed (KOPEK_CRASH_SEED=...) and can be given again to replay a failing run.
#   scripts/crash-rounds.sh            # 200 rounds
#   scripts/crash-rounds.sh 50
#   KOPEK_CRASH_SEED=12345 scripts/crash-rounds.sh 200
set -euo pipefail
cd "$(dirname "$0")/.."
export KOPEK_CRASH_ROUNDS="${1:-200}"
exec cargo test -p kopek-server --test it -- \
    crash::kill_9_at_random_moments_journal_first_loses_nothing_acknowledged --exact --nocapture
