//! `oncohooks train cachexia` and `oncohooks evaluate cachexia`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use clap::Args;

use crate::features::cachexia::Modality;
use crate::ml::{TextEncoder, TextEncoderOptions};

use super::ensemble::CachexiaEnsemble;
use super::inputs::NotesEmbedder;
use super::train::{TrainOptions, train, write_meta};
use super::{dataset, evaluate};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Cohort folder: `ndjson/` (or NDJSON files) and `labels.csv`.
    #[arg(long)]
    pub cohort: PathBuf,
    /// Where to write `model.json` and the member weights.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Ensemble members (different seeds).
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    #[arg(long, default_value_t = 12)]
    pub max_epochs: usize,
    #[arg(long, default_value_t = 4)]
    pub patience: usize,
    /// Conformal target error rate for the expert-review gate.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// CPU threads for reading the cohort. Training itself runs on one
    /// thread: for a model this small, splitting each matrix product across
    /// threads costs more than it gains (1 member, 4 epochs, 3,000 patients:
    /// 6.1 s on one thread, 10.0 s on two), and the weights are
    /// bit-identical either way.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Train with the notes modality, embedded by the all-MiniLM-L6-v2
    /// folder given here (`models/all-MiniLM-L6-v2` after
    /// scripts/setup-models.sh). Without it the model never sees notes.
    /// Vectors are cached in `<cohort>/note-embeddings/`.
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[arg(long)]
    pub cohort: PathBuf,
    /// Model folder written by `oncohooks train cachexia`.
    #[arg(long)]
    pub model: PathBuf,
    /// Report folder (default: `<model>/evaluation`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also record the test metrics in `<model>/model.json`.
    #[arg(long)]
    pub record: bool,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The text encoder for a model trained with notes (default
    /// `models/all-MiniLM-L6-v2`); it must be the encoder the model was
    /// trained with.
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
}

fn pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("starting the thread pool")
}

/// The MiniLM encoder in `dir`, on its own pool of `threads`.
fn text_encoder(dir: &Path, threads: usize) -> anyhow::Result<Box<dyn NotesEmbedder>> {
    let opts = TextEncoderOptions {
        threads: threads.max(1),
        ..TextEncoderOptions::default()
    };
    let enc = TextEncoder::load_with(dir, &Device::Cpu, &opts).with_context(|| {
        format!(
            "loading the text encoder in {} (scripts/setup-models.sh installs it)",
            dir.display()
        )
    })?;
    eprintln!("notes embedded by {}", enc.identity());
    Ok(Box::new(enc))
}

pub fn train_command(args: TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // candle's CPU backend splits large element-wise ops over a spinning
        // thread pool; on a shared 2-core machine that made training ~3×
        // slower (same weights either way). The variable is read once, at
        // candle's first parallel op, so it has to come from the caller.
        eprintln!(
            "hint: run with CANDLE_NUM_THREADS=1 for faster training on a busy machine (results are identical)"
        );
    }
    let embedder = match &args.text_encoder {
        Some(dir) => Some(text_encoder(dir, args.threads)?),
        None => None,
    };
    let ds = pool(args.threads)?.install(|| {
        dataset::load(&args.cohort, embedder.as_deref(), true)
            .with_context(|| format!("reading the cohort in {}", args.cohort.display()))
    })?;
    pool(1)?.install(|| {
        let opts = TrainOptions {
            seed: args.seed,
            members: args.members,
            max_epochs: args.max_epochs,
            patience: args.patience,
            alpha: args.alpha,
            progress: true,
            ..TrainOptions::default()
        };
        let model = train(&ds, &opts, Some(&args.out))?;
        eprintln!(
            "wrote {} ({} members, modalities trained: {}) in {:.1} s",
            args.out.display(),
            model.meta.members.len(),
            model.meta.trained_modalities.join(", "),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

pub fn evaluate_command(args: EvaluateArgs) -> anyhow::Result<()> {
    let model = CachexiaEnsemble::load(&args.model)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    // A model trained with notes is evaluated with the same encoder's
    // vectors; feeding it no notes would understate it, another encoder's
    // would be meaningless.
    let embedder = match &model.meta.notes_embedder {
        Some(trained_with) if model.meta.uses(Modality::Notes) => {
            let dir = args
                .text_encoder
                .clone()
                .unwrap_or_else(crate::ml::text_encoder::default_dir);
            let e = text_encoder(&dir, args.threads)?;
            if &e.id() != trained_with {
                anyhow::bail!(
                    "the model was trained with notes from {trained_with}, but {} holds {}",
                    dir.display(),
                    e.id()
                );
            }
            Some(e)
        }
        _ => None,
    };
    let out = args.out.unwrap_or_else(|| args.model.join("evaluation"));
    pool(args.threads)?.install(|| {
        let ds = dataset::load(&args.cohort, embedder.as_deref(), true)
            .with_context(|| format!("reading the cohort in {}", args.cohort.display()))?;
        let eval = evaluate::evaluate(&model, &ds)?;
        let cohort = std::fs::read_to_string(args.cohort.join("manifest.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|m| {
                format!(
                    "`{}` seed {}, {} patients",
                    m["generator"].as_str().unwrap_or("?"),
                    m["seed"],
                    m["patients"]
                )
            })
            .unwrap_or_else(|| args.cohort.display().to_string());
        eval.write(&out, &cohort)
            .with_context(|| format!("writing the report to {}", out.display()))?;
        for (what, ok) in eval.targets() {
            eprintln!("[{}] {what}", if ok { "met" } else { "MISSED" });
        }
        if args.record {
            let mut meta = model.meta.clone();
            meta.metrics = Some(serde_json::json!({
                "test": eval.test,
                "ablation": eval.ablation,
                "classic": eval.classic,
                "review": eval.review,
            }));
            write_meta(&args.model, &meta)
                .with_context(|| format!("updating {}", args.model.display()))?;
        }
        println!("{}", out.join("report.md").display());
        Ok(())
    })
}
