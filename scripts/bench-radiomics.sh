#!/usr/bin/env bash
# Radiomics speed: oncohooks vs pyradiomics 3.1.0, side by side on this machine,
# on the whole-CT cases lung1 and lung2 (all 107 default features, binWidth 25,
# label 1, no resampling, additionalInfo=False).
#
#   scripts/bench-radiomics.sh [DATA_DIR]
#   scripts/bench-radiomics.sh --setup     # only install pyradiomics into the venv
#   scripts/bench-radiomics.sh --cli [DATA_DIR]
#       end to end: the whole `oncohooks radiomics` process (release binary:
#       start, NRRD read + inflate, features, JSON out) timed by hyperfine,
#       against pyradiomics' execute() on the same file paths
#   ONCOHOOKS_BIN=path/to/oncohooks scripts/bench-radiomics.sh --cli ...   # skip the release build
#
# DATA_DIR (or $RADIOMICS_FULL_DIR; default ../shared/data/radiomics/full) holds
# <case>_image.nrrd, <case>_mask.nrrd and <case>_features.json.
# $RADIOMICS_BENCH_REPS (default 15) and $PYRADIOMICS_REPS (default 7) set the
# repetitions; every figure is a median.
#
# pyradiomics 3.1.0 is installed into .venv-radiomics (git-ignored). Its PyPI
# sdist does not build as published: radiomics/src/cmatrices.h and cshape.h are
# missing from it. Those two headers are declarations only, and the C sources
# they declare are byte-identical in the 3.0.1 sdist, which does ship them; so
# we take the headers from the 3.0.1 sdist (checked below) and build 3.1.0.
set -euo pipefail
cd "$(dirname "$0")/.."
# The same cached target dir as scripts/test.sh: without it a release build
# here would start a second dependency tree in ./target (~20 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/oncohooks/target}"

SETUP_ONLY=0
CLI=0
if [[ "${1:-}" == "--setup" ]]; then SETUP_ONLY=1; shift; fi
if [[ "${1:-}" == "--cli" ]]; then CLI=1; shift; fi
DATA="${1:-${RADIOMICS_FULL_DIR:-../shared/data/radiomics/full}}"
REPS="${RADIOMICS_BENCH_REPS:-15}"
PY_REPS="${PYRADIOMICS_REPS:-7}"
VENV=.venv-radiomics
OUT=target/bench-radiomics
mkdir -p "$OUT"

if [[ $SETUP_ONLY == 0 && ! -f "$DATA/lung1_image.nrrd" ]]; then
  echo "no volumes in $DATA (pass DATA_DIR or set RADIOMICS_FULL_DIR)" >&2
  exit 1
fi
[[ $SETUP_ONLY == 1 ]] || DATA="$(cd "$DATA" && pwd)"

# --- pyradiomics 3.1.0 in a venv -------------------------------------------
if [[ ! -f "$VENV/.pyradiomics-3.1.0" ]]; then
  PY="${PYTHON:-}"
  if [[ -z "$PY" ]]; then
    # setup.py imports distutils: Python 3.11 is the newest with it built in.
    for cand in python3.11 python3.10 python3; do
      if command -v "$cand" >/dev/null; then PY="$cand"; break; fi
    done
  fi
  echo "== creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pip==26.3
  # Versions this was measured with (pyradiomics 3.1.0 reproduces the
  # reference JSON with them to 1e-14).
  "$VENV/bin/pip" install --quiet "setuptools>=61,<70" wheel versioneer==0.29 \
    numpy==2.4.6 SimpleITK==2.5.7 PyWavelets==1.9.0 pykwalify==1.8.0 six==1.17.0
  SRC="$VENV/src"
  mkdir -p "$SRC"
  # The 3.1.0 sdist's own metadata says "3.0.1a1", which pip's default
  # resolver rejects for pyradiomics==3.1.0; the legacy resolver only warns.
  # The archives are checked against their published sha256 instead.
  declare -A SHA=(
    [3.1.0]=24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4
    [3.0.1]=47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5
  )
  for v in 3.1.0 3.0.1; do
    "$VENV/bin/pip" download --quiet --no-deps --no-build-isolation \
      --use-deprecated=legacy-resolver --no-binary pyradiomics "pyradiomics==$v" -d "$SRC"
    echo "${SHA[$v]}  $SRC/pyradiomics-$v.tar.gz" | sha256sum --check --quiet
    tar -xzf "$SRC/pyradiomics-$v.tar.gz" -C "$SRC"
  done
  for f in cmatrices.c cshape.c _cmatrices.c _cshape.c; do
    cmp "$SRC/pyradiomics-3.0.1/radiomics/src/$f" "$SRC/pyradiomics-3.1.0/radiomics/src/$f" \
      || { echo "C sources differ between 3.0.1 and 3.1.0 ($f): headers may not fit" >&2; exit 1; }
  done
  cp "$SRC/pyradiomics-3.0.1/radiomics/src/cmatrices.h" \
     "$SRC/pyradiomics-3.0.1/radiomics/src/cshape.h" \
     "$SRC/pyradiomics-3.1.0/radiomics/src/"
  "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation "$SRC/pyradiomics-3.1.0"
  touch "$VENV/.pyradiomics-3.1.0"
fi
"$VENV/bin/python" -c \
  'import radiomics; assert radiomics.__version__ == "v3.1.0", radiomics.__version__'

[[ $SETUP_ONLY == 0 ]] || { echo "pyradiomics 3.1.0 ready in $VENV"; exit 0; }

# --- pyradiomics timings ---------------------------------------------------
echo "== pyradiomics 3.1.0 ($PY_REPS runs per figure, median)"
"$VENV/bin/python" - "$DATA" "$PY_REPS" > "$OUT/pyradiomics.txt" <<'EOF'
import json, logging, statistics, sys, time
import SimpleITK as sitk
import radiomics
from radiomics import featureextractor

radiomics.setVerbosity(logging.ERROR)
data, reps = sys.argv[1], int(sys.argv[2])
ext = featureextractor.RadiomicsFeatureExtractor(binWidth=25, label=1, additionalInfo=False)
for case in ["lung1", "lung2"]:
    img, msk = f"{data}/{case}_image.nrrd", f"{data}/{case}_mask.nrrd"
    ref = json.load(open(f"{data}/{case}_features.json"))["features"]
    out = ext.execute(img, msk)  # warm-up, and the parity check
    worst = max(abs(float(out[k]) - v) / max(abs(v), 1e-300) for k, v in ref.items() if v != 0)
    files = []
    for _ in range(reps):
        t = time.perf_counter(); ext.execute(img, msk); files.append(time.perf_counter() - t)
    image, mask = sitk.ReadImage(img), sitk.ReadImage(msk)
    memory = []
    for _ in range(reps):
        t = time.perf_counter(); ext.execute(image, mask); memory.append(time.perf_counter() - t)
    print(f"PY case={case} features={len(ref)} worst_rel={worst:.1e} "
          f"files_ms={statistics.median(files) * 1e3:.1f} memory_ms={statistics.median(memory) * 1e3:.1f}")
EOF
cat "$OUT/pyradiomics.txt"

# --- oncohooks: the CLI process end to end ---------------------------------
if [[ $CLI == 1 ]]; then
  command -v hyperfine >/dev/null || { echo "hyperfine is needed (apt-get install hyperfine)" >&2; exit 1; }
  # ONCOHOOKS_BIN: time that release binary instead of building one (as in
  # scripts/bench/hook-latency.sh).
  if [[ -n "${ONCOHOOKS_BIN:-}" ]]; then
    BIN="$ONCOHOOKS_BIN"
  else
    BIN="$CARGO_TARGET_DIR/release/oncohooks"
    cargo build --quiet --release --bin oncohooks
  fi
  echo "== oncohooks radiomics CLI (hyperfine, $REPS runs after 3 warm-ups, median)"
  for case in lung1 lung2; do
    img="$DATA/${case}_image.nrrd"; msk="$DATA/${case}_mask.nrrd"
    # Parity first: the timed command must give the reference features.
    "$BIN" radiomics --image "$img" --mask "$msk" > "$OUT/$case.json"
    "$VENV/bin/python" -c '
import json, sys
got = json.load(open(sys.argv[1])); ref = json.load(open(sys.argv[2]))["features"]
bad = [k for k, v in ref.items() if not (abs(got[k] - v) <= 1e-9 or abs(got[k] - v) <= 1e-6 * abs(v))]
assert len(got) == len(ref) == 107 and not bad, bad' "$OUT/$case.json" "$DATA/${case}_features.json"
    hyperfine -N -w 3 -r "$REPS" --export-json "$OUT/cli-$case.json" \
      "$BIN radiomics --image $img --mask $msk" >&2
    rs=$("$VENV/bin/python" -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(r["median"]*1e3)' "$OUT/cli-$case.json")
    py=$(grep "PY case=$case " "$OUT/pyradiomics.txt" | sed 's/.*files_ms=\([0-9.]*\).*/\1/')
    awk -v c="$case" -v p="$py" -v r="$rs" 'BEGIN {
      printf "%s  end to end (files): pyradiomics %8.1f ms  oncohooks CLI %7.1f ms  x%.1f\n", c, p, r, p / r }'
  done | tee "$OUT/summary-cli.txt"
  exit 0
fi

# --- oncohooks timings -----------------------------------------------------
echo "== oncohooks (cargo bench --bench radiomics, $REPS runs per figure, median)"
RADIOMICS_BENCH_REPS="$REPS" cargo bench --quiet --bench radiomics -- "$DATA" | tee "$OUT/oncohooks.txt"

# --- ratios ------------------------------------------------------------------
echo "== speed-up (pyradiomics median / oncohooks median)"
for case in lung1 lung2; do
  py_files=$(grep "PY case=$case " "$OUT/pyradiomics.txt" | sed 's/.*files_ms=\([0-9.]*\).*/\1/')
  py_mem=$(grep "PY case=$case " "$OUT/pyradiomics.txt" | sed 's/.*memory_ms=\([0-9.]*\).*/\1/')
  rs_files=$(grep "RESULT case=$case mode=files " "$OUT/oncohooks.txt" | sed 's/.*median_ms=//')
  rs_mem=$(grep "RESULT case=$case mode=memory " "$OUT/oncohooks.txt" | sed 's/.*median_ms=//')
  awk -v c="$case" -v pf="$py_files" -v pm="$py_mem" -v rf="$rs_files" -v rm="$rs_mem" 'BEGIN {
    printf "%s  files->features: pyradiomics %8.1f ms  oncohooks %7.1f ms  x%.1f\n", c, pf, rf, pf / rf
    printf "%s  in memory:       pyradiomics %8.1f ms  oncohooks %7.1f ms  x%.1f\n", c, pm, rm, pm / rm
  }'
done | tee "$OUT/summary.txt"
