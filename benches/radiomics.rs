//! Radiomics extraction benchmark on whole CT volumes (512×512×N).
//!
//! `cargo bench --bench radiomics [-- DIR]` with DIR (or $RADIOMICS_FULL_DIR,
//! default ../shared/data/radiomics/full) holding `<case>_image.nrrd`,
//! `<case>_mask.nrrd` and `<case>_features.json` for lung1 and lung2.
//! Runs on a 2-thread rayon pool (the machine this is compared on has 2
//! cores) and prints the median of repeated runs for three paths:
//!
//! - `files`:   NRRD paths → features, as `oncohooks radiomics` does (only the
//!   mask's bounding box of the CT is decompressed and converted);
//! - `full`:    whole image and mask read, then `extract`;
//! - `memory`:  `extract` on volumes already in memory (whole 512×512×N).
//!
//! It also checks the features against the pyradiomics reference JSON.
//! Output lines starting with `RESULT` are parsed by scripts/bench-radiomics.sh.

mod common;

use common::median;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oncohooks::imaging::nrrd::{read_nrrd_f32, read_nrrd_mask};
use oncohooks::radiomics::{Settings, cli_extract, extract};

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    // One warm-up run (page cache, allocator), then the timed repetitions.
    std::hint::black_box(f());
    let runs = (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    median(runs)
}

fn check_reference(dir: &Path, case: &str, features: &serde_json::Value) -> (usize, f64) {
    let text = match std::fs::read_to_string(dir.join(format!("{case}_features.json"))) {
        Ok(t) => t,
        Err(_) => return (0, f64::NAN),
    };
    let reference: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
    let want = reference["features"].as_object().expect("features object");
    let mut matched = 0;
    let mut worst = 0.0f64;
    for (k, w) in want {
        let w = w.as_f64().unwrap_or(f64::NAN);
        let g = features[k].as_f64().unwrap_or(f64::NAN);
        let diff = (g - w).abs();
        if diff <= 1e-9 || diff <= 1e-6 * w.abs() {
            matched += 1;
        }
        if w != 0.0 {
            worst = worst.max(diff / w.abs());
        }
    }
    (matched, worst)
}

fn main() {
    let dir: PathBuf = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("RADIOMICS_FULL_DIR").ok())
        .unwrap_or_else(|| "../shared/data/radiomics/full".into())
        .into();
    let reps: usize = std::env::var("RADIOMICS_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    if !dir.join("lung1_image.nrrd").exists() {
        println!(
            "radiomics bench: no volumes at {} (set RADIOMICS_FULL_DIR); skipping",
            dir.display()
        );
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    println!(
        "radiomics bench: {} repetitions per figure (median), 2 rayon threads, data {}",
        reps,
        dir.display()
    );
    for case in ["lung1", "lung2"] {
        let image_path = dir.join(format!("{case}_image.nrrd"));
        let mask_path = dir.join(format!("{case}_mask.nrrd"));
        pool.install(|| {
            let out = cli_extract(&image_path, &mask_path, None).expect("extraction");
            let (matched, worst) = check_reference(&dir, case, &out["features"]);
            let files = time(reps, || cli_extract(&image_path, &mask_path, None).unwrap());

            let full = time(reps, || {
                let image = read_nrrd_f32(&image_path).unwrap();
                let mask = read_nrrd_mask(&mask_path, 1).unwrap();
                extract(&image, &mask, &Settings::default()).unwrap()
            });

            let image = read_nrrd_f32(&image_path).unwrap();
            let mask = read_nrrd_mask(&mask_path, 1).unwrap();
            let memory = time(reps, || extract(&image, &mask, &Settings::default()).unwrap());

            println!(
                "{case}: {:?} voxels, ROI {} voxels, {matched}/107 features within 1e-6 of pyradiomics (worst rel. {worst:.1e})",
                image.dims, out["mask_voxels"]
            );
            for (mode, d) in [("files", files), ("full", full), ("memory", memory)] {
                println!(
                    "RESULT case={case} mode={mode} median_ms={:.3}",
                    d.as_secs_f64() * 1e3
                );
            }
        });
    }
}
