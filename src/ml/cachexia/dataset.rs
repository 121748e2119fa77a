//! A labelled cohort as model inputs: NDJSON resources (a synthetic cohort
//! folder or a FHIR Bulk Data export) plus `labels.csv`, each patient through
//! the same clinical timeline the service uses, the classic indices computed
//! on the same record, and notes embedded once (cached by content digest).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::inputs::{NOTES_DIM, NotesEmbedder, RawInputs};
use crate::clinical::{ClassicAssessment, Cutoffs, CxiStatus, FearonStatus, Timeline};
use crate::synth::{LabelRow, Split, read_cohort};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Cohort(#[from] crate::synth::SynthError),
    #[error("{0} has no labels.csv: training and evaluation need the outcome per patient")]
    NoLabels(PathBuf),
    #[error("note embedding cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedding notes: {0}")]
    Embed(anyhow::Error),
}

/// A classic index as a score: positive 2, unknown 1, negative 0 (the
/// ranking `oncohooks synth --stats` uses too), so AUROC is comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicScores {
    pub fearon: u8,
    pub cxi: u8,
    pub mcxi: u8,
}

/// One labelled patient.
#[derive(Debug, Clone)]
pub struct Example {
    pub label: bool,
    pub split: Split,
    pub info: LabelRow,
    pub raw: RawInputs,
    pub classic: ClassicScores,
}

pub struct Dataset {
    pub examples: Vec<Example>,
    /// Patients in the NDJSON without a label row (left out).
    pub unlabelled: usize,
    /// Label rows without resources (left out).
    pub without_resources: usize,
    pub notes_embedder: Option<String>,
}

impl Dataset {
    pub fn split(&self, s: Split) -> Vec<&Example> {
        self.examples.iter().filter(|e| e.split == s).collect()
    }
}

/// Note embeddings by the digest of a patient's note texts, in
/// `<cohort>/note-embeddings/<encoder digest>.bin` (32-byte key + 384 f32 LE
/// per record): MiniLM costs several GFLOP per note, so a cohort's notes
/// are embedded once per encoder and reused by every training run.
struct EmbeddingCache {
    path: PathBuf,
    map: HashMap<[u8; 32], Vec<f32>>,
    dirty: bool,
}

impl EmbeddingCache {
    fn open(cohort: &Path, embedder_id: &str) -> Result<Self, DatasetError> {
        let name = hex::encode(Sha256::digest(embedder_id.as_bytes()));
        let path = cohort
            .join("note-embeddings")
            .join(format!("{}.bin", &name[..16]));
        let mut map = HashMap::new();
        if path.is_file() {
            let err = |source| DatasetError::Cache {
                path: path.clone(),
                source,
            };
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(err)?;
            for rec in bytes.chunks_exact(32 + 4 * NOTES_DIM) {
                let mut k = [0u8; 32];
                k.copy_from_slice(&rec[..32]);
                let v = rec[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                map.insert(k, v);
            }
        }
        Ok(Self {
            path,
            map,
            dirty: false,
        })
    }

    fn save(&self) -> Result<(), DatasetError> {
        if !self.dirty {
            return Ok(());
        }
        let err = |source| DatasetError::Cache {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut keys: Vec<&[u8; 32]> = self.map.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len() * (32 + 4 * NOTES_DIM));
        for k in keys {
            out.extend_from_slice(k);
            for x in &self.map[k] {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        std::fs::File::create(&self.path)
            .and_then(|mut f| f.write_all(&out))
            .map_err(err)
    }
}

fn notes_digest(notes: &[String]) -> [u8; 32] {
    let mut h = Sha256::new();
    for n in notes {
        h.update(n.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// Patients per `embed_patients` call while reading a cohort.
const EMBED_CHUNK: usize = 64;

/// Read a cohort folder (see `synth::read_cohort`) with its `labels.csv`.
pub fn load(
    dir: &Path,
    embedder: Option<&dyn NotesEmbedder>,
    progress: bool,
) -> Result<Dataset, DatasetError> {
    let cohort = read_cohort(dir)?;
    let labels = cohort
        .labels
        .ok_or_else(|| DatasetError::NoLabels(dir.to_owned()))?;
    let by_id: HashMap<&str, &LabelRow> =
        labels.iter().map(|l| (l.patient_id.as_str(), l)).collect();
    let cutoffs = Cutoffs::default();
    let unlabelled = cohort
        .patients
        .iter()
        .filter(|p| !by_id.contains_key(p.patient_id.as_str()))
        .count();
    let with_resources: std::collections::HashSet<&str> = cohort
        .patients
        .iter()
        .map(|p| p.patient_id.as_str())
        .collect();
    let without_resources = labels
        .iter()
        .filter(|l| !with_resources.contains(l.patient_id.as_str()))
        .count();

    // Timelines in parallel (order kept: collect preserves it).
    let timelines: Vec<(Timeline, &LabelRow)> = cohort
        .patients
        .par_iter()
        .filter_map(|p| {
            let info = *by_id.get(p.patient_id.as_str())?;
            Some((Timeline::from_record(&p.record(), info.index_date), info))
        })
        .collect();
    if progress {
        eprintln!(
            "read {} labelled patients from {}",
            timelines.len(),
            dir.display()
        );
    }

    let mut notes: Vec<Option<Vec<f32>>> = vec![None; timelines.len()];
    if let Some(e) = embedder {
        let mut cache = EmbeddingCache::open(dir, &e.id())?;
        let total = timelines.len();
        // Patients whose vectors are not cached, embedded in chunks so the
        // encoder batches many notes per forward pass.
        let mut todo: Vec<(usize, [u8; 32])> = Vec::new();
        let mut todo_texts: Vec<Vec<String>> = Vec::new();
        for (i, (t, _)) in timelines.iter().enumerate() {
            let texts = RawInputs::note_texts(t);
            if texts.is_empty() {
                continue;
            }
            let k = notes_digest(&texts);
            match cache.map.get(&k) {
                Some(v) => notes[i] = Some(v.clone()),
                None => {
                    todo.push((i, k));
                    todo_texts.push(texts);
                }
            }
        }
        let started = std::time::Instant::now();
        let mut done = 0;
        for (chunk, texts) in todo.chunks(EMBED_CHUNK).zip(todo_texts.chunks(EMBED_CHUNK)) {
            let vectors = e.embed_patients(texts).map_err(DatasetError::Embed)?;
            for ((i, k), v) in chunk.iter().zip(vectors) {
                if let Some(v) = v {
                    cache.map.insert(*k, v.clone());
                    cache.dirty = true;
                    notes[*i] = Some(v);
                }
            }
            done += chunk.len();
            // A long first run keeps what it has embedded if stopped.
            if done % (EMBED_CHUNK * 40) == 0 {
                cache.save()?;
            }
            if progress {
                eprint!(
                    "\rembedding notes: {done}/{} patients not cached ({total} in all), {:.0} s",
                    todo.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if progress {
            eprintln!();
        }
        cache.save()?;
    }

    let examples = timelines
        .into_par_iter()
        .zip(notes)
        .map(|((t, info), notes)| {
            let a = ClassicAssessment::compute(&t, &cutoffs);
            let score = |pos: bool, unknown: bool| {
                if pos {
                    2
                } else if unknown {
                    1
                } else {
                    0
                }
            };
            Example {
                label: info.cachexia_6m,
                split: info.split,
                info: info.clone(),
                raw: RawInputs::from_timeline(&t, notes),
                classic: ClassicScores {
                    fearon: score(
                        a.fearon.status == FearonStatus::Cachexia,
                        a.fearon.status == FearonStatus::Unknown,
                    ),
                    cxi: score(
                        a.cxi.status == CxiStatus::Low,
                        a.cxi.status == CxiStatus::Unknown,
                    ),
                    mcxi: score(
                        a.mcxi.status == CxiStatus::Low,
                        a.mcxi.status == CxiStatus::Unknown,
                    ),
                },
            }
        })
        .collect();
    Ok(Dataset {
        examples,
        unlabelled,
        without_resources,
        notes_embedder: embedder.map(|e| e.id()),
    })
}
