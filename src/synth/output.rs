//! Writing a cohort to disk and reading one back.
//!
//! Layout of `DIR`:
//! - `bundles/<patient-id>.json`: one FHIR R4 transaction Bundle per patient.
//!   Every entry has `fullUrl` `urn:uuid:<id>` and `request` `PUT <Type>/<id>`
//!   (update-as-create keeps the generated ids on a server, so `labels.csv`
//!   still matches after loading); references inside the Bundle point at the
//!   `urn:uuid:` fullUrls, which servers rewrite on commit (FHIR R4 §3.1.0.11.2
//!   transaction processing rules).
//! - `ndjson/<Type>.ndjson`: FHIR Bulk Data style, one resource per line,
//!   references as `Patient/<id>`.
//! - `labels.csv`: `patient_id,index_date,cachexia_6m,cancer_type,stage,sex,race,ethnicity,age,split`.
//! - `manifest.json`: generator version, seed, counts, prevalence per split.
//!
//! Nothing written depends on the clock or the thread count: the same seed
//! gives byte-identical files.

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{
    GENERATOR_VERSION, Split, SynthConfig, SynthError, SyntheticPatient, generate_patient,
};
use crate::fhir::PatientRecord;

/// Resource types written as NDJSON, in file order.
pub const NDJSON_TYPES: [&str; 5] = [
    "Patient",
    "Condition",
    "Observation",
    "DocumentReference",
    "ImagingStudy",
];

const LABELS_HEADER: &str =
    "patient_id,index_date,cachexia_6m,cancer_type,stage,sex,race,ethnicity,age,split";

/// One row of `labels.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelRow {
    pub patient_id: String,
    pub index_date: chrono::NaiveDate,
    pub cachexia_6m: bool,
    pub cancer_type: String,
    pub stage: String,
    pub sex: String,
    pub race: String,
    pub ethnicity: String,
    pub age: u32,
    pub split: Split,
}

impl LabelRow {
    fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.patient_id,
            self.index_date,
            u8::from(self.cachexia_6m),
            self.cancer_type,
            self.stage,
            self.sex,
            self.race,
            self.ethnicity,
            self.age,
            self.split.label()
        )
    }
}

/// Counts of one group of patients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GroupCount {
    pub patients: usize,
    pub positives: usize,
    pub prevalence: f64,
}

impl GroupCount {
    fn add(&mut self, label: bool) {
        self.patients += 1;
        self.positives += usize::from(label);
        self.prevalence = super::sample::round_to(self.positives as f64 / self.patients as f64, 4);
    }
}

/// What `write_cohort` wrote (also the body of `manifest.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WriteSummary {
    pub overall: GroupCount,
    pub by_split: BTreeMap<&'static str, GroupCount>,
    pub by_cancer_type: BTreeMap<&'static str, GroupCount>,
    pub by_stage: BTreeMap<&'static str, GroupCount>,
    pub resources: BTreeMap<String, usize>,
    /// Share of patients with each modality present.
    pub modality_share: BTreeMap<&'static str, f64>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Rewrite `Type/id` references to `urn:uuid:id` for ids in the Bundle.
fn rewrite_references(value: &mut Value, ids: &BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(s) = v
                    && let Some((_, id)) = s.split_once('/')
                    && ids.contains(id)
                {
                    *s = format!("urn:uuid:{id}");
                } else {
                    rewrite_references(v, ids);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, ids)),
        _ => {}
    }
}

/// The patient's resources as a FHIR R4 transaction Bundle.
pub fn transaction_bundle(patient: &SyntheticPatient) -> Value {
    let ids: BTreeSet<String> = patient
        .resources
        .iter()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let entries: Vec<Value> = patient
        .resources
        .iter()
        .map(|r| {
            let mut resource = r.clone();
            rewrite_references(&mut resource, &ids);
            let kind = r["resourceType"].as_str().unwrap_or_default();
            let id = r["id"].as_str().unwrap_or_default();
            json!({
                "fullUrl": format!("urn:uuid:{id}"),
                "resource": resource,
                "request": {"method": "PUT", "url": format!("{kind}/{id}")}
            })
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Serialised output of one patient, produced in parallel.
struct Rendered {
    label_row: String,
    ndjson: [Vec<u8>; 5],
    counts: BTreeMap<String, usize>,
}

fn render(patient: &SyntheticPatient, bundles: &Path) -> Result<Rendered, SynthError> {
    let path = bundles.join(format!("{}.json", patient.id));
    let bytes = serde_json::to_vec(&transaction_bundle(patient)).map_err(|e| SynthError::Io {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    fs::write(&path, bytes).map_err(io_err(&path))?;
    let mut ndjson: [Vec<u8>; 5] = Default::default();
    let mut counts = BTreeMap::new();
    for r in &patient.resources {
        let kind = r["resourceType"].as_str().unwrap_or_default();
        *counts.entry(kind.to_owned()).or_insert(0) += 1;
        if let Some(i) = NDJSON_TYPES.iter().position(|t| *t == kind) {
            // Serialising a Value cannot fail.
            if let Ok(line) = serde_json::to_vec(r) {
                ndjson[i].extend_from_slice(&line);
                ndjson[i].push(b'\n');
            }
        }
    }
    Ok(Rendered {
        label_row: patient.label_row().to_csv(),
        ndjson,
        counts,
    })
}

/// Generate the cohort into `dir` (created if needed). Patients are drawn in
/// parallel in blocks and written in order.
pub fn write_cohort(cfg: &SynthConfig, dir: &Path) -> Result<WriteSummary, SynthError> {
    cfg.validate()?;
    let bundles = dir.join("bundles");
    let ndjson_dir = dir.join("ndjson");
    for d in [&bundles, &ndjson_dir] {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let mut ndjson: Vec<(PathBuf, BufWriter<File>)> = NDJSON_TYPES
        .iter()
        .map(|t| {
            let p = ndjson_dir.join(format!("{t}.ndjson"));
            let f = File::create(&p).map_err(io_err(&p))?;
            Ok((p, BufWriter::new(f)))
        })
        .collect::<Result<_, SynthError>>()?;
    let labels_path = dir.join("labels.csv");
    let mut labels = BufWriter::new(File::create(&labels_path).map_err(io_err(&labels_path))?);
    writeln!(labels, "{LABELS_HEADER}").map_err(io_err(&labels_path))?;

    let mut summary = WriteSummary::default();
    let mut with = BTreeMap::<&'static str, usize>::new();
    const BLOCK: u64 = 1024;
    let n = cfg.patients as u64;
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let block: Vec<(SyntheticPatient, Rendered)> = (start..end)
            .into_par_iter()
            .map(|i| {
                let p = generate_patient(cfg, i);
                let r = render(&p, &bundles)?;
                Ok((p, r))
            })
            .collect::<Result<_, SynthError>>()?;
        for (p, r) in block {
            writeln!(labels, "{}", r.label_row).map_err(io_err(&labels_path))?;
            for (i, bytes) in r.ndjson.iter().enumerate() {
                let (path, w) = &mut ndjson[i];
                w.write_all(bytes).map_err(io_err(path))?;
            }
            for (k, v) in r.counts {
                *summary.resources.entry(k).or_insert(0) += v;
            }
            summary.overall.add(p.label);
            summary
                .by_split
                .entry(p.split.label())
                .or_default()
                .add(p.label);
            summary
                .by_cancer_type
                .entry(super::cancer_label(p.truth.cancer_type))
                .or_default()
                .add(p.label);
            summary
                .by_stage
                .entry(super::stage_label(p.truth.stage))
                .or_default()
                .add(p.label);
            let o = &p.observed;
            for (name, present) in [
                ("weight_any", o.weights > 0),
                ("weight_two_or_more", o.weights > 1),
                ("labs", o.lab_panels > 0),
                ("notes", o.notes > 0),
                ("ct_body_composition", o.has_ct),
                ("ecog", o.has_ecog),
                ("stage_recorded", o.stage_recorded),
            ] {
                *with.entry(name).or_insert(0) += usize::from(present);
            }
        }
        start = end;
    }
    for (path, mut w) in ndjson {
        w.flush().map_err(io_err(&path))?;
    }
    labels.flush().map_err(io_err(&labels_path))?;
    summary.modality_share = with
        .into_iter()
        .map(|(k, v)| (k, super::sample::round_to(v as f64 / n as f64, 4)))
        .collect();

    let manifest = json!({
        "generator": GENERATOR_VERSION,
        "seed": cfg.seed,
        "patients": cfg.patients,
        "diagnosis_window": {"first": cfg.first_diagnosis.to_string(), "last": cfg.last_diagnosis.to_string()},
        "label": "cachexia_6m = Fearon 2011 (weight loss > 5 % over 6 months, or > 2 % with BMI < 20 kg/m2 or L3 sarcopenia men < 55 / women < 39 cm2/m2) on the true trajectory at any monthly checkpoint 1..6 months after the index date",
        "index_date": "diagnosis date + 0..10 days; no resource is dated after it",
        "split_rule": "SHA-256(\"oncohooks-synth-split/{seed}/{patient_id}\") first 8 bytes big-endian mod 100: 0-59 train, 60-69 validation, 70-79 calibration, 80-99 test",
        "summary": summary,
    });
    let manifest_path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    fs::write(&manifest_path, text + "\n").map_err(io_err(&manifest_path))?;
    Ok(summary)
}

/// One patient's resources read from NDJSON.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientResources {
    pub patient_id: String,
    /// The Patient resource first (when present), then the rest in file order.
    pub resources: Vec<Value>,
}

impl PatientResources {
    pub fn record(&self) -> PatientRecord {
        let mut record = PatientRecord::default();
        for (i, r) in self.resources.iter().enumerate() {
            record.add_resource(&format!("ndjson[{i}]"), r.clone());
        }
        record
    }
}

/// A cohort read from disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CohortData {
    /// Patients in order of first appearance.
    pub patients: Vec<PatientResources>,
    /// `labels.csv` when the folder has one (a real Bulk export has none).
    pub labels: Option<Vec<LabelRow>>,
    /// Resources that name no patient (no `subject`/`patient` reference).
    pub unassigned: usize,
}

/// The patient id a resource belongs to: its own id for a Patient, else the
/// id in `subject.reference` (or `patient.reference`), which may be
/// `Patient/x`, an absolute URL, versioned, or `urn:uuid:x`.
fn owner(resource: &Value) -> Option<String> {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let reference = ["subject", "patient"]
        .iter()
        .find_map(|k| resource.get(k)?.get("reference")?.as_str())?;
    if let Some(id) = reference.strip_prefix("urn:uuid:") {
        return Some(id.to_owned());
    }
    let reference = reference.split("/_history/").next().unwrap_or(reference);
    let (kind, id) = reference.rsplit_once('/')?;
    (kind == "Patient" || kind.ends_with("/Patient")).then(|| id.to_owned())
}

/// Read NDJSON resources from `dir/ndjson` (or `dir` itself when it has no
/// `ndjson` folder: a Bulk Data export), grouped by patient, plus
/// `dir/labels.csv` when present. Files are read in name order.
pub fn read_cohort(dir: &Path) -> Result<CohortData, SynthError> {
    let nd = dir.join("ndjson");
    let folder = if nd.is_dir() { nd } else { dir.to_path_buf() };
    let mut files: Vec<PathBuf> = fs::read_dir(&folder)
        .map_err(io_err(&folder))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    let mut out = CohortData::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    for path in &files {
        let reader = BufReader::new(File::open(path).map_err(io_err(path))?);
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(io_err(path))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line).map_err(|source| SynthError::Json {
                path: path.display().to_string(),
                line: n + 1,
                source,
            })?;
            let Some(id) = owner(&value) else {
                out.unassigned += 1;
                continue;
            };
            let slot = *index.entry(id.clone()).or_insert_with(|| {
                out.patients.push(PatientResources {
                    patient_id: id,
                    resources: Vec::new(),
                });
                out.patients.len() - 1
            });
            let resources = &mut out.patients[slot].resources;
            if value.get("resourceType").and_then(Value::as_str) == Some("Patient") {
                resources.insert(0, value);
            } else {
                resources.push(value);
            }
        }
    }
    let labels = dir.join("labels.csv");
    if labels.is_file() {
        out.labels = Some(read_labels(&labels)?);
    }
    Ok(out)
}

/// Read `labels.csv` as written by `write_cohort`.
pub fn read_labels(path: &Path) -> Result<Vec<LabelRow>, SynthError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |line: usize, reason: String| SynthError::Labels {
        path: path.display().to_string(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == LABELS_HEADER => {}
        _ => return Err(bad(1, format!("header is not `{LABELS_HEADER}`"))),
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 10 {
            return Err(bad(i + 1, format!("expected 10 fields, found {}", f.len())));
        }
        let index_date = f[1]
            .parse()
            .map_err(|_| bad(i + 1, format!("index_date `{}` is not a date", f[1])))?;
        let cachexia_6m = match f[2] {
            "1" => true,
            "0" => false,
            other => return Err(bad(i + 1, format!("cachexia_6m `{other}` is not 0 or 1"))),
        };
        let age = f[8]
            .parse()
            .map_err(|_| bad(i + 1, format!("age `{}` is not a number", f[8])))?;
        let split =
            Split::parse(f[9]).ok_or_else(|| bad(i + 1, format!("unknown split `{}`", f[9])))?;
        rows.push(LabelRow {
            patient_id: f[0].to_owned(),
            index_date,
            cachexia_6m,
            cancer_type: f[3].to_owned(),
            stage: f[4].to_owned(),
            sex: f[5].to_owned(),
            race: f[6].to_owned(),
            ethnicity: f[7].to_owned(),
            age,
            split,
        });
    }
    Ok(rows)
}
