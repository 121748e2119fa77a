//! The cachexia ensemble's model call, one hook at a time against several
//! hooks in one pass (`CachexiaEnsemble::predict_many`, issue 4 §6
//! "batched when concurrent").
//!
//! `cargo bench --bench cachexia [-- MODEL_DIR]` (default: the shipped
//! model, cds-hooks/cachexia-risk/model). Patients come from a seeded
//! synthetic cohort (`synth`); a patient with notes gets a fixed unit
//! vector in place of its MiniLM embedding (the model's cost does not
//! depend on the values). Everything runs on a one-thread rayon pool, as
//! the server's model call does with its default of half of two CPUs.
//! Prints, per batch size, the median over 15 rounds of the time per hook
//! (each round runs every size in turn); lines starting
//! with `RESULT` are machine-readable.
//!
//! Like the server (`src/main.rs`), it allocates with mimalloc and puts
//! candle's thread count in `RAYON_NUM_THREADS` before anything runs:
//! with the system allocator, larger batches spent a sixth of their time in
//! page faults, and without the variable candle parses `/proc/cpuinfo` on
//! every matrix product; neither is what the server does.

mod common;

use common::median;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oncohooks::ml::cachexia::inputs::NOTES_DIM;
use oncohooks::ml::cachexia::{CachexiaEnsemble, NotesEmbedder, RawInputs, dataset};
use oncohooks::synth::{SynthConfig, write_cohort};

/// Unit vector per patient with notes (values do not change the cost).
struct FixedEmbedder;

impl NotesEmbedder for FixedEmbedder {
    fn id(&self) -> String {
        "bench-fixed".into()
    }

    fn embed_patient_notes(&self, notes: &[String]) -> anyhow::Result<Option<Vec<f32>>> {
        Ok((!notes.is_empty()).then(|| vec![1.0 / (NOTES_DIM as f32).sqrt(); NOTES_DIM]))
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: first statement of `main`: no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cds-hooks/cachexia-risk/model"));
    let model = CachexiaEnsemble::load(&dir).expect("load the model");
    let tmp = tempfile::tempdir().unwrap();
    let cohort = tmp.path().join("cohort");
    write_cohort(&SynthConfig::new(256, 11).unwrap(), &cohort).unwrap();
    let ds = dataset::load(&cohort, Some(&FixedEmbedder), false).unwrap();
    let patients: Vec<RawInputs> = ds.examples.iter().map(|e| e.raw.clone()).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!(
        "model {} ({} members), {} synthetic patients",
        model.version(),
        model.meta.members.len(),
        patients.len()
    );
    pool.install(|| {
        // Warm-up: allocator, caches.
        for raw in patients.iter().take(32) {
            std::hint::black_box(model.predict(raw).unwrap());
        }
        // Rounds of every batch size in turn, so that the machine's drift
        // (large on a shared VM) falls on all sizes alike; each round
        // scores every patient once per size.
        let sizes = [1usize, 2, 4, 8, 16, 32];
        let mut runs: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len()];
        for _ in 0..15 {
            for (i, &batch) in sizes.iter().enumerate() {
                let t = Instant::now();
                for chunk in patients.chunks(batch) {
                    std::hint::black_box(model.predict_many(chunk).unwrap());
                }
                runs[i].push(t.elapsed() / patients.len() as u32);
            }
        }
        for (batch, runs) in sizes.iter().zip(runs) {
            let per_hook = median(runs);
            println!(
                "batch {batch:>2}: {:>7.1} µs per hook",
                per_hook.as_secs_f64() * 1e6
            );
            println!(
                "RESULT batch={batch} us_per_hook={:.1}",
                per_hook.as_secs_f64() * 1e6
            );
        }
    });
}
