#!/usr/bin/env bash
# Robustness run on third-party synthetic FHIR R4 (clinosim, PyPI, MIT):
# every cancer patient of a simulated hospital population goes through
# `oncohooks score --explain`; any failure exits non-zero, and a summary of
# card tiers and skipped-entry reasons is printed.
#
#   scripts/robustness/run.sh [POPULATION] [SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
POP="${1:-3000}"
SEED="${2:-7}"
WORK="${ROBUSTNESS_DIR:-$HOME/.cache/oncohooks/robustness}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/oncohooks/target}"
mkdir -p "$WORK"
if [ ! -x "$WORK/venv/bin/clinosim" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q "clinosim==0.6.5"
fi
OUT="$WORK/export-$POP-$SEED"
if [ ! -d "$OUT/fhir_r4" ]; then
  "$WORK/venv/bin/clinosim" simulate -o "$OUT" -p "$POP" -s "$SEED" \
    --start 2026-01-01 --end 2026-11-01 --format fhir-r4 >"$WORK/simulate.log" 2>&1
fi
HOOKS="$WORK/hooks-$POP-$SEED"
rm -rf "$HOOKS"
python3 scripts/robustness/clinosim_hooks.py "$OUT/fhir_r4" "$HOOKS"
cargo build -q
BIN="$CARGO_TARGET_DIR/debug/oncohooks"
export ONCOHOOKS__SCORING__INDEX_DATE=2026-11-01
RESULTS="$WORK/results-$POP-$SEED.jsonl"
: >"$RESULTS"
fail=0
for f in "$HOOKS"/*.json; do
  if ! "$BIN" score --service cachexia-risk --request "$f" --explain 2>>"$WORK/score.log" \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"cards": len(d["response"]["cards"]), "tier": d["prediction"]["risk_tier"], "skipped": [[s.get("resource_type"), s["reason"][:80]] for s in d["skipped"]]}))' >>"$RESULTS"; then
    echo "FAILED: $f" >&2
    fail=$((fail + 1))
  fi
done
python3 - "$RESULTS" <<'PY'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"patients scored: {len(rows)}")
print("risk tiers:", dict(collections.Counter(r["tier"] for r in rows)))
print("cards:", dict(collections.Counter(r["cards"] for r in rows)))
skips = collections.Counter((s[0], s[1]) for r in rows for s in r["skipped"])
print(f"skipped entries: {sum(skips.values())}")
for (rt, reason), n in skips.most_common(10):
    print(f"  {n:6d}  {rt}: {reason}")
PY
[ "$fail" = 0 ] || { echo "$fail patients failed" >&2; exit 1; }
