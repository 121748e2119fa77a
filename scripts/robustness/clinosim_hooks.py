#!/usr/bin/env python3
"""Turn a clinosim FHIR R4 Bulk export into patient-view hook requests for
its cancer patients (full prefetch: every Patient, Condition, Observation,
DocumentReference, DiagnosticReport and ImagingStudy of the patient, as an
EHR with a broad prefetch would send them).

    clinosim_hooks.py EXPORT_DIR OUT_DIR [--max-observations N]

clinosim (PyPI, MIT) is a third-party synthetic EHR generator; its data is
independent of ours, which is the point: it exercises parsing paths our own
fixtures do not.
"""
import argparse
import collections
import json
import uuid
from pathlib import Path

TYPES = ["Patient", "Condition", "Observation", "DocumentReference", "DiagnosticReport", "ImagingStudy"]
KEYS = {"Condition": "conditions", "Observation": "observations", "DocumentReference": "documents",
        "DiagnosticReport": "reports", "ImagingStudy": "imaging"}


def subject_id(r):
    ref = (r.get("subject") or r.get("patient") or {}).get("reference", "")
    return ref.rsplit("/", 1)[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--max-observations", type=int, default=0,
                    help="keep only the N most recent Observations per patient (0 = all)")
    args = ap.parse_args()

    cancer = set()
    with open(args.export_dir / "Condition.ndjson") as f:
        for line in f:
            r = json.loads(line)
            for c in r.get("code", {}).get("coding", []):
                if "icd-10" in c.get("system", "") and c.get("code", "")[:1] == "C":
                    cancer.add(subject_id(r))
    by = collections.defaultdict(lambda: collections.defaultdict(list))
    for rt in TYPES:
        path = args.export_dir / f"{rt}.ndjson"
        if not path.exists():
            continue
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                pid = r["id"] if rt == "Patient" else subject_id(r)
                if pid in cancer:
                    by[pid][rt].append(r)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for pid in sorted(by):
        d = by[pid]
        if not d["Patient"]:
            continue
        obs = d["Observation"]
        if args.max_observations:
            obs = sorted(obs, key=lambda o: o.get("effectiveDateTime", ""))[-args.max_observations:]
            d["Observation"] = obs
        prefetch = {"patient": d["Patient"][0]}
        for rt, key in KEYS.items():
            prefetch[key] = {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"resource": r} for r in d[rt]]}
        hook = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, "clinosim:" + pid)),
            "context": {"userId": "Practitioner/robustness", "patientId": pid},
            "prefetch": prefetch,
        }
        (args.out_dir / f"{pid}.json").write_text(json.dumps(hook))
    print(f"{len(by)} cancer patients written to {args.out_dir}")


if __name__ == "__main__":
    main()
