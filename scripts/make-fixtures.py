#!/usr/bin/env python3
"""Generate the synthetic hook-request fixtures (seeded, reproducible).

    python3 scripts/make-fixtures.py          # rewrites fixtures/hooks and fixtures/fhir

Every patient here is invented. Dates are anchored to INDEX_DATE so that tests
can pin `scoring.index_date` and stay stable over time. FHIR JSON is R4
(4.0.1) as EHRs send it.
"""
import base64
import json
import random
import uuid
from datetime import date, timedelta
from pathlib import Path

INDEX_DATE = date(2026, 11, 20)
ROOT = Path(__file__).resolve().parent.parent / "fixtures"
rng = random.Random(20261120)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BODYCOMP = "https://oncohooks.invalid/fhir/CodeSystem/body-composition"


def uid():
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def day(days_before):
    return (INDEX_DATE - timedelta(days=days_before)).isoformat()


def patient(pid, gender, birth, race, ethnicity):
    return {
        "resourceType": "Patient",
        "id": pid,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "extension": [
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
             "extension": [{"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": race[0], "display": race[1]}},
                           {"url": "text", "valueString": race[1]}]},
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
             "extension": [{"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": ethnicity[0], "display": ethnicity[1]}},
                           {"url": "text", "valueString": ethnicity[1]}]},
        ],
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "MRN-" + pid}],
        "name": [{"family": "Synthetic", "given": [pid.replace("-", " ").title()]}],
        "gender": gender,
        "birthDate": birth,
    }


def condition(pid, icd, display, onset_days, stage=None):
    c = {
        "resourceType": "Condition",
        "id": f"{pid}-cond-{icd.replace('.', '')}",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": icd, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": day(onset_days),
        "recordedDate": day(onset_days),
    }
    if stage:
        c["stage"] = [{"summary": {"coding": [{"system": "http://snomed.info/sct", "code": stage[0], "display": stage[1]}], "text": stage[1]}}]
    return c


def obs(pid, n, system, code, display, value, unit, ucum, days_before, category="laboratory"):
    return {
        "resourceType": "Observation",
        "id": f"{pid}-obs-{n}",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": day(days_before) + "T09:30:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }


def bundle(resources):
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"urn:uuid:{uid()}", "resource": r, "search": {"mode": "match"}} for r in resources]}


def note_doc(pid, n, text, days_before, html=False):
    ct = "text/html" if html else "text/plain"
    data = base64.b64encode(text.encode()).decode()
    return {
        "resourceType": "DocumentReference", "id": f"{pid}-doc-{n}", "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}]},
        "subject": {"reference": f"Patient/{pid}"}, "date": day(days_before) + "T14:00:00Z",
        "content": [{"attachment": {"contentType": ct, "data": data}}],
    }


def report(pid, n, html, days_before):
    return {
        "resourceType": "DiagnosticReport", "id": f"{pid}-rep-{n}", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "24627-2", "display": "CT Chest"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": day(days_before),
        "conclusion": "Interval progression.",
        "presentedForm": [{"contentType": "text/html", "data": base64.b64encode(html.encode()).decode()}],
    }


def imaging(pid, days_before):
    study = "1.2.826.0.1.3680043.8.498." + str(rng.getrandbits(40))
    return {
        "resourceType": "ImagingStudy", "id": f"{pid}-img-1", "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:" + study}],
        "subject": {"reference": f"Patient/{pid}"}, "started": day(days_before) + "T10:00:00Z",
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
        "numberOfSeries": 1,
        "series": [{"uid": study + ".1", "number": 1,
                    "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
                    "bodySite": {"system": "http://snomed.info/sct", "code": "818981001", "display": "Abdomen"}}],
    }


def weights(pid, start_kg, end_kg, months, unit="kg"):
    out = []
    points = months + 1
    for i in range(points):
        days_before = int((months - i) * 30.4) + rng.randint(0, 3)
        kg = start_kg + (end_kg - start_kg) * i / months + rng.uniform(-0.3, 0.3)
        if unit == "lb":
            out.append(obs(pid, f"wt{i}", LOINC, "29463-7", "Body weight", round(kg / 0.45359237, 1), "lb", "[lb_av]", days_before, "vital-signs"))
        else:
            out.append(obs(pid, f"wt{i}", LOINC, "29463-7", "Body weight", round(kg, 1), "kg", "kg", days_before, "vital-signs"))
    return out


def hook(pid, prefetch, fhir_server=None):
    h = {
        "hookInstance": uid(),
        "hook": "patient-view",
        "context": {"userId": "Practitioner/demo-oncologist", "patientId": pid},
    }
    if fhir_server:
        h["fhirServer"] = fhir_server
        h["fhirAuthorization"] = {"access_token": "demo-access-token-not-a-secret", "token_type": "Bearer",
                                  "expires_in": 300, "scope": "user/*.read", "subject": "oncohooks"}
    if prefetch is not None:
        h["prefetch"] = prefetch
    return h


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def main():
    # 1. Pancreatic cancer, stage IV, losing weight, inflamed, low muscle: everything prefetched.
    pid = "cachexia-full"
    p = patient(pid, "male", "1959-04-12", ("2106-3", "White"), ("2186-5", "Not Hispanic or Latino"))
    conds = [condition(pid, "C25.0", "Malignant neoplasm of head of pancreas", 200, ("258228008", "Stage 4"))]
    o = weights(pid, 78.0, 71.0, 6)
    o += [
        obs(pid, "ht", LOINC, "8302-2", "Body height", 175.0, "cm", "cm", 150, "vital-signs"),
        obs(pid, "alb", LOINC, "1751-7", "Albumin", 3.0, "g/dL", "g/dL", 6),
        obs(pid, "crp", LOINC, "1988-5", "C reactive protein", 24.0, "mg/L", "mg/L", 6),
        obs(pid, "neut", LOINC, "751-8", "Neutrophils", 7.2, "10*3/uL", "10*3/uL", 6),
        obs(pid, "lymph", LOINC, "731-0", "Lymphocytes", 0.9, "10*3/uL", "10*3/uL", 6),
        obs(pid, "hgb", LOINC, "718-7", "Hemoglobin", 10.8, "g/dL", "g/dL", 6),
        obs(pid, "bun", LOINC, "3094-0", "Urea nitrogen", 18.0, "mg/dL", "mg/dL", 6),
        obs(pid, "crea", LOINC, "2160-0", "Creatinine", 0.9, "mg/dL", "mg/dL", 6),
        obs(pid, "smi", BODYCOMP, "l3-smi", "L3 skeletal muscle index", 41.0, "cm2/m2", "cm2/m2", 30, "imaging"),
        obs(pid, "smhu", BODYCOMP, "l3-muscle-hu", "L3 muscle attenuation", 30.0, "HU", "[hnsf'U]", 30, "imaging"),
    ]
    docs = [note_doc(pid, 1, "Oncology follow-up. Patient reports poor appetite and early satiety for two months. "
                            "Denies nausea. Fatigue limits daily activities. Clothes are loose.", 6)]
    reps = [report(pid, 1, "<html><body><p>CT abdomen: <b>interval progression</b> of pancreatic head mass; "
                           "reduced paraspinal muscle bulk &amp; subcutaneous fat.</p></body></html>", 30)]
    imgs = [imaging(pid, 30)]
    full = {"patient": p, "conditions": bundle(conds), "observations": bundle(o), "documents": bundle(docs),
            "reports": bundle(reps), "imaging": bundle(imgs)}
    write(ROOT / "hooks" / "cachexia-full.json", hook(pid, full))

    # 2. Breast cancer, stage II, stable weight, mixed units (lb, g/L): everything prefetched.
    pid = "stable-full"
    p = patient(pid, "female", "1968-09-30", ("2054-5", "Black or African American"), ("2186-5", "Not Hispanic or Latino"))
    conds = [condition(pid, "C50.912", "Malignant neoplasm of unspecified site of left female breast", 120, ("258219007", "Stage 2"))]
    o = weights(pid, 65.2, 64.9, 6, unit="lb")
    o += [
        obs(pid, "ht", LOINC, "8302-2", "Body height", 64.0, "in", "[in_i]", 100, "vital-signs"),
        obs(pid, "alb", LOINC, "1751-7", "Albumin", 42.0, "g/L", "g/L", 10),
        obs(pid, "crp", LOINC, "1988-5", "C reactive protein", 2.1, "mg/L", "mg/L", 10),
        obs(pid, "neut", LOINC, "751-8", "Neutrophils", 3.9, "10*3/uL", "10*3/uL", 10),
        obs(pid, "lymph", LOINC, "731-0", "Lymphocytes", 1.9, "10*3/uL", "10*3/uL", 10),
        obs(pid, "bun", LOINC, "3094-0", "Urea nitrogen", 14.0, "mg/dL", "mg/dL", 10),
        obs(pid, "crea", LOINC, "2160-0", "Creatinine", 0.8, "mg/dL", "mg/dL", 10),
    ]
    docs = [note_doc(pid, 1, "<p>Tolerating adjuvant therapy well. Appetite good, no weight loss. Denies fatigue.</p>", 10, html=True)]
    full = {"patient": p, "conditions": bundle(conds), "observations": bundle(o), "documents": bundle(docs),
            "reports": None, "imaging": None}
    write(ROOT / "hooks" / "stable-full.json", hook(pid, full))

    # 3. Lung cancer stage III: the EHR prefetched Patient and Conditions only;
    #    the rest is on its FHIR server (tests point fhirServer at a wiremock).
    pid = "partial-prefetch"
    p = patient(pid, "male", "1954-01-05", ("2028-9", "Asian"), ("2135-2", "Hispanic or Latino"))
    conds = [condition(pid, "C34.11", "Malignant neoplasm of upper lobe, right bronchus or lung", 90, ("258224005", "Stage 3"))]
    o = weights(pid, 70.0, 66.2, 6)
    o += [
        obs(pid, "ht", LOINC, "8302-2", "Body height", 168.0, "cm", "cm", 60, "vital-signs"),
        obs(pid, "alb", LOINC, "1751-7", "Albumin", 3.4, "g/dL", "g/dL", 12),
        obs(pid, "neut", LOINC, "751-8", "Neutrophils", 5.1, "10*3/uL", "10*3/uL", 12),
        obs(pid, "lymph", LOINC, "731-0", "Lymphocytes", 1.2, "10*3/uL", "10*3/uL", 12),
    ]
    write(ROOT / "hooks" / "partial-prefetch.json",
          hook(pid, {"patient": p, "conditions": bundle(conds)}, fhir_server="http://127.0.0.1:9/fhir"))
    fhir = ROOT / "fhir" / pid
    write(fhir / "Patient.json", p)
    write(fhir / "Condition.json", bundle(conds))
    # Observations come back in two pages to exercise Bundle.link[next].
    page1, page2 = bundle(o[:5]), bundle(o[5:])
    page1["link"] = [{"relation": "self", "url": "Observation?page=1"},
                     {"relation": "next", "url": "NEXT_PAGE_URL"}]
    write(fhir / "Observation-page1.json", page1)
    write(fhir / "Observation-page2.json", page2)
    write(fhir / "DocumentReference.json", bundle([note_doc(pid, 1, "Cough improved. Appetite reduced; eating half of meals.", 12)]))
    write(fhir / "DiagnosticReport.json", bundle([]))
    write(fhir / "ImagingStudy.json", bundle([imaging(pid, 40)]))

    # 4. No prefetch at all: everything from the FHIR server (same patient data).
    write(ROOT / "hooks" / "no-prefetch.json", hook(pid, None, fhir_server="http://127.0.0.1:9/fhir"))

    # 5. Demographics and diagnosis only; the EHR says there is nothing else (null).
    pid = "demographics-only"
    p = patient(pid, "female", "1949-06-17", ("2106-3", "White"), ("2186-5", "Not Hispanic or Latino"))
    conds = [condition(pid, "C18.7", "Malignant neoplasm of sigmoid colon", 30, ("258215001", "Stage 1"))]
    write(ROOT / "hooks" / "demographics-only.json",
          hook(pid, {"patient": p, "conditions": bundle(conds), "observations": None, "documents": None,
                     "reports": None, "imaging": None}))


if __name__ == "__main__":
    main()
