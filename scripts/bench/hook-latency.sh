#!/usr/bin/env bash
# Load test of POST /cds-services/cachexia-risk: release build, wrk, every
# request a distinct hook call (own hookInstance, own JWT) with full prefetch.
# Recorded in docs/benchmarks.md ("CDS hook latency").
#
#   scripts/bench/hook-latency.sh [--backend postgres|sqlite] [--connections 32]
#                                 [--threads 2] [--duration 30s] [--body FILE]
#                                 [--new-notes N] [--perf FILE]
#   ONCOHOOKS_BIN=path/to/oncohooks scripts/bench/hook-latency.sh ...   # skip the release build
#   BENCH_SERVER_TIMES=1 scripts/bench/hook-latency.sh ...  # also the server's own times
#
# BENCH_SERVER_TIMES=1: hook.lua also collects each answer's x-total-time,
# x-inference-time and x-model-batch (hooks in its model pass) headers and
# prints their percentiles (wrk then reads every response's headers, which
# costs it a little CPU).
#
# After the measured run it prints the CPU time per hook of the server, of
# PostgreSQL's processes and of everything else (from /proc), so a change can
# be judged by where the CPU goes and not only by latency. --perf FILE also
# samples the server with `perf record -g` during the measured run
# (PERF_CALLGRAPH="--call-graph dwarf,16384" for call chains through code
# built without frame pointers).
#
# --new-notes N: instead of wrk, N sequential hooks whose 3 notes are all new
# (embedded inline), then the same N again with the notes cached
# (scripts/bench/new_notes.py).
#
# PostgreSQL: a fresh database on $ONCOHOOKS_TEST_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres), dropped afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."

BACKEND=postgres CONNS=32 THREADS=2 DURATION=30s WARMUP=5s
BODY=fixtures/hooks/cachexia-full.json
NEW_NOTES=0
PERF=""
TOKENS="${TOKENS:-60000}"
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND="$2"; shift 2 ;;
    --connections) CONNS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --body) BODY="$2"; shift 2 ;;
    --new-notes) NEW_NOTES="$2"; shift 2 ;;
    --perf) PERF="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/oncohooks/target}"
# ONCOHOOKS_BIN: measure that binary instead of building the release one
# (e.g. a profile before a long LTO build; not for recorded figures).
if [ -n "${ONCOHOOKS_BIN:-}" ]; then
  BIN="$ONCOHOOKS_BIN"
else
  cargo build --release --locked --bin oncohooks
  BIN="$CARGO_TARGET_DIR/release/oncohooks"
fi

work=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PG_URL="${ONCOHOOKS_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db=""
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  [ -n "$db" ] && psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

case "$BACKEND" in
  postgres)
    db="oncohooks_bench_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
    psql "$PG_URL" -qc "CREATE DATABASE $db" >/dev/null
    DB_URL="${PG_URL%/*}/$db" ;;
  sqlite) DB_URL="sqlite://$work/bench.db" ;;
  *) echo "--backend postgres|sqlite" >&2; exit 2 ;;
esac

export ONCOHOOKS__DATABASE__SPOOL_DIR="$work/spool"
export ONCOHOOKS__LOGGING__LEVEL=warn
export ONCOHOOKS__IMAGING__WORKERS_IN_SERVE=0
"$BIN" serve --bind "127.0.0.1:$PORT" --database-url "$DB_URL" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$work/server.log" >&2; exit 1; }

URL="http://127.0.0.1:$PORT/cds-services/cachexia-risk"
# The JWT `aud` is this URL (derived from the Host header in the demo profile).
"$BIN" dev-token --aud "$URL" --count 8000 >"$work/warmup-tokens"
"$BIN" dev-token --aud "$URL" --count "$TOKENS" >"$work/tokens"

# Sanity: one request answers 200 with a card.
curl -fsS -H "Authorization: Bearer $(head -1 "$work/warmup-tokens")" \
  -H 'Content-Type: application/json' --data-binary @<(sed 's/"hookInstance": *"[^"]*"/"hookInstance": "11111111-2222-4333-8444-555555555555"/' "$BODY") \
  "$URL" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["cards"], d; print("sanity: %d card(s)" % len(d["cards"]))'
sed -i 1d "$work/warmup-tokens"

if [ "$NEW_NOTES" -gt 0 ]; then
  echo "== $NEW_NOTES sequential hooks with 3 new notes each, backend $BACKEND"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 scripts/bench/new_notes.py "$URL" "$BODY" "$work/tokens" "$NEW_NOTES" 3
  echo "server log WARN/ERROR lines: $(grep -cE 'WARN|ERROR|panic' "$work/server.log" || true)"
  exit 0
fi

export BENCH_BODY="$BODY" BENCH_THREADS="$THREADS"
echo "== warm-up ($WARMUP)"
BENCH_TOKENS="$work/warmup-tokens" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s scripts/bench/hook.lua "$URL" | tail -2
echo "== measured: $CONNS connections, $THREADS wrk threads, $DURATION, backend $BACKEND"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# CPU ticks (utime + stime) of one process / of all postgres processes / of
# the whole machine (all CPUs, idle excluded).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() { local t=0 p; for p in $(pgrep -x postgres || true); do t=$((t + $(ticks "$p"))); done; echo "$t"; }
all_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# CPU seconds (user + system) of this shell's reaped children: the
# difference around the wrk pipeline is wrk's own CPU.
# (`times` must run in this shell, not in a $(...) subshell.)
child_cpu() { awk 'NR == 2 { gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4 }' "$1"; }
times >"$work/times0"
s0=$(ticks "$server") p0=$(pg_ticks) a0=$(all_ticks) w0=$(child_cpu "$work/times0")
if [ -n "$PERF" ]; then
  perf record -F 499 ${PERF_CALLGRAPH:--g} -p "$server" -o "$PERF" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
  perf_pid=$!
fi
BENCH_TOKENS="$work/tokens" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s scripts/bench/hook.lua "$URL" | tee "$work/wrk.txt"
times >"$work/times1"
w1=$(child_cpu "$work/times1")
[ -n "$PERF" ] && wait "$perf_pid"
s1=$(ticks "$server") p1=$(pg_ticks) a1=$(all_ticks)
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
n=$(awk '/requests in/{print $1}' "$work/wrk.txt")
hz=$(getconf CLK_TCK)
awk -v n="$n" -v hz="$hz" -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v a=$((a1 - a0)) -v w0="$w0" -v w1="$w1" 'BEGIN {
  ms = 1000 / hz / n
  w = (w1 - w0) * 1000 / n
  # Per-process ticks and /proc/stat come from different kernel accounting:
  # on a VM the three per-process figures can add up to more than the total.
  printf "CPU per hook: server %.2f ms, postgres %.2f ms, wrk %.2f ms, machine total (idle excluded) %.2f ms\n",
    s * ms, p * ms, w, a * ms }'
echo "server RSS: $(ps -o rss= -p "$server" | awk '{printf "%.1f MiB", $1/1024}')"
if [ "$BACKEND" = postgres ]; then
  echo "stored invocations: $(psql "${PG_URL%/*}/$db" -Atc 'select count(*) from invocations' 2>/dev/null || echo '?')"
fi
echo "server log WARN/ERROR lines: $(grep -cE 'WARN|ERROR|panic' "$work/server.log" || true)"
grep -E 'WARN|ERROR|panic' "$work/server.log" | cut -c1-300 | sort | uniq -c | sort -rn | head -5 || true
