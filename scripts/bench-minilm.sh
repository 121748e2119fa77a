#!/usr/bin/env bash
# all-MiniLM-L6-v2 speed: candle (benches/minilm.rs) vs the PyTorch reference
# (scripts/reference/minilm_bench.py), back to back, same sentences
# (fixtures/minilm/bench-sentences.txt), 2 threads each, batch 1 and 16.
#
#   scripts/bench-minilm.sh [PYTHON]
#
# PYTHON: an interpreter with sentence-transformers + torch (default
# /tmp/minilm-ref/bin/python, made as in docs/models.md "Parity"). Without it
# only the candle side runs. Output: target/bench-minilm/{candle,torch}.txt
# with the load average before each run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The same cached target dir as scripts/test.sh (no second dependency tree).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/oncohooks/target}"
PY="${1:-/tmp/minilm-ref/bin/python}"
OUT=target/bench-minilm
mkdir -p "$OUT"
scripts/setup-models.sh >/dev/null
export RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=2
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

cargo bench --bench minilm --no-run
{ echo "load: $(cat /proc/loadavg)"; cargo bench --bench minilm; } | tee "$OUT/candle.txt"
if [ -x "$PY" ]; then
  { echo "load: $(cat /proc/loadavg)"; "$PY" scripts/reference/minilm_bench.py models/all-MiniLM-L6-v2 2>/dev/null; } \
    | tee "$OUT/torch.txt"
fi
